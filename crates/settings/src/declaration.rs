//! One declaration per variable: name, default, parser and doc in one place.

use crate::{SettingError, Source};

/// What a variable means when it is unset, as the README's configuration table shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// A value in the variable's own notation (`5s`, `8MiB`). The code gets its default by
    /// parsing this text with the setting's own parser, so the documented default is the one
    /// in effect.
    Literal(&'static str),
    /// A default worked out at start or left to someone else (the AWS chain, the bucket's
    /// default), described in words; the reading crate's code implements it.
    Described(&'static str),
}

impl DefaultValue {
    /// The table cell: a literal in code font, a description as written.
    pub fn text(&self) -> String {
        match self {
            DefaultValue::Literal(value) => format!("`{value}`"),
            DefaultValue::Described(text) => (*text).to_owned(),
        }
    }
}

/// One environment variable, declared once by the crate that reads it.
///
/// `parse` gets the variable's name along with the value so the same function can check a
/// fallback variable (e.g. `AWS_ENDPOINT_URL` for the endpoint) and still name the right one.
#[derive(Debug)]
pub struct Setting<T> {
    /// The environment variable.
    pub name: &'static str,
    /// What applies when it is unset.
    pub default: DefaultValue,
    /// One line for the README's configuration table.
    pub doc: &'static str,
    /// Turns a set value into the typed setting, or an error naming the variable.
    pub parse: fn(&str, &str) -> Result<T, SettingError>,
}

impl<T> Setting<T> {
    /// Parses `value` as this variable's.
    pub fn parse_value(&self, value: &str) -> Result<T, SettingError> {
        (self.parse)(self.name, value)
    }

    /// The parsed value from `source`, or `None` when the variable is unset or empty.
    pub fn read(&self, source: &impl Source) -> Result<Option<T>, SettingError> {
        source
            .get(self.name)
            .map(|value| self.parse_value(&value))
            .transpose()
    }

    /// The default in effect: the declared literal, parsed.
    ///
    /// # Panics
    /// When the default is [`DefaultValue::Described`] or its literal does not parse: both are
    /// mistakes in the declaration, which the reading crate's default-settings test catches.
    pub fn default_value(&self) -> T {
        match self.default {
            DefaultValue::Literal(text) => self.parse_value(text).unwrap_or_else(|e| {
                panic!("the declared default of {} does not parse: {e}", self.name)
            }),
            DefaultValue::Described(_) => panic!(
                "{} has no literal default; its reading code works it out",
                self.name
            ),
        }
    }

    /// The declaration without its parser, for listing it with settings of other types.
    pub const fn documented(&self) -> SettingDoc {
        SettingDoc {
            name: self.name,
            default: self.default,
            doc: self.doc,
        }
    }
}

/// What the README's configuration table says about one variable: a [`Setting`] without its
/// parser, so declarations of different types can be listed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingDoc {
    /// The environment variable.
    pub name: &'static str,
    /// What applies when it is unset.
    pub default: DefaultValue,
    /// One line saying what it is for.
    pub doc: &'static str,
}

impl SettingDoc {
    /// The variable's row in the README's `| variable | default | meaning |` table.
    pub fn markdown_row(&self) -> String {
        format!(
            "| `{}` | {} | {} |",
            self.name,
            self.default.text(),
            self.doc
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::parse_duration;

    const DELAY: Setting<Duration> = Setting {
        name: "X_DELAY",
        default: DefaultValue::Literal("5s"),
        doc: "how long to wait",
        parse: parse_duration,
    };

    const LISTED: &[SettingDoc] = &[DELAY.documented()];

    #[test]
    fn literal_default_is_parsed_by_the_setting_parser() {
        assert_eq!(DELAY.default_value(), Duration::from_secs(5));
    }

    #[test]
    fn read_names_the_variable() {
        let source: HashMap<String, String> = [("X_DELAY".to_owned(), "soon".to_owned())].into();
        let err = DELAY.read(&source).unwrap_err();
        assert_eq!(err.variable, "X_DELAY");
        assert_eq!(DELAY.read(&HashMap::<String, String>::new()), Ok(None));
    }

    #[test]
    fn rows_for_the_readme() {
        assert_eq!(
            LISTED[0].markdown_row(),
            "| `X_DELAY` | `5s` | how long to wait |"
        );
        let described = SettingDoc {
            default: DefaultValue::Described("AWS chain"),
            ..LISTED[0]
        };
        assert_eq!(
            described.markdown_row(),
            "| `X_DELAY` | AWS chain | how long to wait |"
        );
    }
}
