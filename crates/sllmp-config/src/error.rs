//! [`ConfigError`], the one error a configuration load returns, and the key paths its
//! problems point at.
//!
//! Every problem is written as `<key path>: <what is wrong>; <how to fix it>` and the
//! error prints one problem per line, each prefixed with the file name. No problem text
//! ever contains a configuration value that could be a secret: type errors say what kind
//! of value was found ("found a number"), never the value itself.

use std::fmt;

/// Everything wrong with one configuration file.
///
/// A load reports every problem it can find at once rather than stopping at the first, so
/// an operator can fix a file in one go. `Display` prints one line per problem:
///
/// ```text
/// config.yaml: features.chat.model: "gpt-4" is not written as provider:model; write it as e.g. "openai:gpt-4"
/// config.yaml: features.chat.modle: unknown key; expected one of: description, owner, model, ...
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_lines(.origin, .problems))]
pub struct ConfigError {
    origin: String,
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Builds an error from at least one problem.
    pub(crate) fn new(origin: &str, problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty(), "a ConfigError needs a problem");
        ConfigError {
            origin: origin.to_owned(),
            problems,
        }
    }

    /// The name of the configuration source (usually the file path) the problems are in.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The problems, in key-path order. Never empty.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

fn render_lines(origin: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(origin);
        out.push_str(": ");
        out.push_str(&problem.to_string());
    }
    out
}

/// One thing wrong with a configuration file.
///
/// `Display` prints `<key path>: <message>`, or only the message for problems about the
/// whole file (an unreadable or empty file, a YAML syntax error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    path: Option<String>,
    message: String,
    /// The path as segments, so that `[10]` sorts after `[2]`.
    key: KeyPath,
}

impl Problem {
    /// A problem about the whole file rather than one key.
    pub(crate) fn document(message: impl Into<String>) -> Self {
        Problem {
            path: None,
            message: message.into(),
            key: KeyPath::root(),
        }
    }

    /// A problem at a key path.
    pub(crate) fn at(path: &KeyPath, message: impl Into<String>) -> Self {
        Problem {
            path: Some(path.to_string()),
            message: message.into(),
            key: path.clone(),
        }
    }

    /// The order problems are listed in: whole-file problems first, then by key path.
    pub(crate) fn sort_key(&self) -> (bool, &KeyPath) {
        (self.path.is_some(), &self.key)
    }

    /// The dotted key path the problem is at, such as
    /// `features.chat.budget_constraints.daily.budget_limit.window`; `None` for problems
    /// about the whole file.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// What is wrong and how to fix it: `<what is wrong>; <how to fix it>`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// One step of a [`KeyPath`]: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A list index, from 0.
    Index(usize),
}

/// Where a value sits in the document: `features.chat.budget_constraints.daily.dimensions[1]`.
///
/// Keys that are not plain names (letters, digits, `_`, `-`) print quoted, so
/// `features."chat bot".model` is unambiguous.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The document root (an empty path).
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// Builds a path from segments.
    pub(crate) fn from_segs(segs: Vec<Seg>) -> Self {
        KeyPath(segs)
    }

    /// The segments, outermost first.
    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    /// Appends a segment in place.
    pub(crate) fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }

    /// Removes the last segment in place.
    pub(crate) fn pop(&mut self) -> Option<Seg> {
        self.0.pop()
    }

    /// Whether `self` equals `other` or contains it (is a prefix of it).
    pub(crate) fn contains(&self, other: &KeyPath) -> bool {
        other.0.starts_with(&self.0)
    }
}

/// Whether a name is made only of ASCII letters, digits, `_` and `-`, and is not empty.
/// Feature and provider-alias names must be such names (`^[a-zA-Z0-9_-]+$`).
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_plain_name(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segs: &[Seg]) -> KeyPath {
        KeyPath::from_segs(segs.to_vec())
    }

    #[test]
    fn key_paths_print_dotted_with_indices_and_quoted_odd_keys() {
        let p = path(&[
            Seg::Key("features".into()),
            Seg::Key("chat".into()),
            Seg::Key("dimensions".into()),
            Seg::Index(1),
        ]);
        assert_eq!(p.to_string(), "features.chat.dimensions[1]");
        let odd = KeyPath::root().key("features").key("chat bot").key("model");
        assert_eq!(odd.to_string(), r#"features."chat bot".model"#);
        assert_eq!(KeyPath::root().key("").to_string(), r#""""#);
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn contains_is_prefix() {
        let a = KeyPath::root().key("features");
        let b = a.key("chat");
        assert!(a.contains(&b));
        assert!(a.contains(&a));
        assert!(!b.contains(&a));
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name("chat_v2-beta"));
        assert!(!is_plain_name(""));
        assert!(!is_plain_name("chat bot"));
        assert!(!is_plain_name("chät"));
        assert!(!is_plain_name("a.b"));
    }

    #[test]
    fn display_prefixes_every_line_with_the_origin() {
        let err = ConfigError::new(
            "config.yaml",
            vec![
                Problem::document("the file is empty; write something"),
                Problem::at(&KeyPath::root().key("features"), "bad; fix it"),
            ],
        );
        assert_eq!(
            err.to_string(),
            "config.yaml: the file is empty; write something\nconfig.yaml: features: bad; fix it"
        );
        assert_eq!(err.origin(), "config.yaml");
        assert_eq!(err.problems()[1].path(), Some("features"));
        assert_eq!(err.problems()[1].message(), "bad; fix it");
        assert_eq!(err.problems()[0].path(), None);
    }
}
