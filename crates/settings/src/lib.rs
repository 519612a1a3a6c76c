//! The addon's configuration vocabulary: where values come from ([`Source`]), how one
//! variable is declared ([`Setting`]), the parsers every crate shares and the one error they
//! return ([`SettingError`]).
//!
//! A crate that reads a variable declares it once as a `Setting` constant: name, default,
//! parser and the one-line doc the README's configuration table shows. Cross-setting rules
//! (a default that depends on another variable, two variables that only make sense together)
//! stay in the reading crate's `from_source`; the declaration's default text says what they do.
//!
//! Values follow Woodpecker's own notation (Go's `time.ParseDuration`, `strconv.ParseBool`) so
//! admins write them as they write the server's. Every error names the variable and its value.

#![forbid(unsafe_code)]

mod declaration;
mod error;
mod parse;
mod source;

pub use declaration::{DefaultValue, Setting, SettingDoc};
pub use error::SettingError;
pub use parse::{parse_absolute_path, parse_bool, parse_duration, parse_number, parse_size};
pub use source::{ProcessEnv, Source};
