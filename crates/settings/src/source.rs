//! Where setting values come from.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Where settings come from: the process environment in production, a map in tests.
pub trait Source {
    /// The value of `name`, or `None` when unset or empty (an empty variable means "default",
    /// as in Woodpecker).
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<S: BuildHasher> Source for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_count_as_unset() {
        let map: HashMap<String, String> = [("A", " "), ("B", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(Source::get(&map, "A"), None);
        assert_eq!(Source::get(&map, "B").as_deref(), Some("x"));
        assert_eq!(Source::get(&map, "C"), None);
    }
}
