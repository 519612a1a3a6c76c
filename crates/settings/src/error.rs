//! The one error every setting parser returns.

/// A setting that cannot be used. Its text is the one line the admin sees in the Woodpecker
/// log before the addon refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct SettingError {
    /// The environment variable at fault.
    pub variable: String,
    /// Its value, as read.
    pub value: String,
    /// What is wrong with it and what is expected instead.
    pub reason: String,
}

impl SettingError {
    /// An error for `variable` holding `value`.
    pub fn new(variable: &str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}
