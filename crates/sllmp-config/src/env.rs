//! `${VAR}` substitution, applied to every string value of the parsed document before it is
//! read into typed structs.
//!
//! Forms, anywhere inside a string value (never in keys):
//!
//! - `${VAR}`: the value of `VAR`; an error if `VAR` is not set.
//! - `${VAR:-default}`: the value of `VAR`, or `default` when `VAR` is unset or empty (as in
//!   a POSIX shell). The default runs to the first `}` and is taken literally.
//! - `$${`: a literal `${`.
//!
//! A `$` not followed by `{` is kept as is. Variable names are `[A-Za-z_][A-Za-z0-9_]*`.
//!
//! This differs from the Python original on purpose: it substituted only whole values of a
//! few keys, had no defaults, and gave no way to write a literal `${`.

use serde_json::Value;

use crate::error::{KeyPath, Seg};

/// Looks a variable up; `None` means "not set". Injected so tests never touch the process
/// environment.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why one string could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// `${NAME}` with `NAME` unset and no default.
    Missing(String),
    /// `${` with no closing `}`.
    Unterminated,
    /// `${...}` whose content is not a variable name (the content is not repeated: it might
    /// be a pasted secret).
    BadName,
}

impl ExpandError {
    /// The problem text, `<what is wrong>; <how to fix it>`.
    pub(crate) fn message(&self) -> String {
        match self {
            ExpandError::Missing(name) => format!(
                "environment variable {name} is not set; set it, or give a default with \
                 ${{{name}:-default}}"
            ),
            ExpandError::Unterminated => "\"${\" has no closing \"}\"; close it, or write \
                                          \"$${\" for a literal \"${\""
                .to_owned(),
            ExpandError::BadName => "\"${...}\" does not hold a variable name (letters, digits \
                                     and _, not starting with a digit); write ${NAME} or \
                                     ${NAME:-default}, or \"$${\" for a literal \"${\""
                .to_owned(),
        }
    }
}

fn is_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Expands every `${...}` in `input`. Returns all errors of the string, not only the first.
pub(crate) fn expand(input: &str, env: EnvLookup<'_>) -> Result<String, Vec<ExpandError>> {
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let at = &rest[pos..];
        if let Some(after) = at.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = at.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                errors.push(ExpandError::Unterminated);
                rest = "";
                break;
            };
            let body = &after[..end];
            rest = &after[end + 1..];
            let (name, default) = match body.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !is_var_name(name) {
                errors.push(ExpandError::BadName);
                continue;
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => errors.push(ExpandError::Missing(name.to_owned())),
            }
        } else {
            out.push('$');
            rest = &at[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Substitutes every string value under `value` in place.
///
/// Returns the paths of the strings that could not be expanded, each with its problem
/// text (one entry per error). Those strings are left unchanged; the caller removes them
/// so they do not cause follow-on errors.
pub(crate) fn substitute(value: &mut Value, env: EnvLookup<'_>) -> Vec<(KeyPath, String)> {
    let mut failures = Vec::new();
    walk(value, &mut KeyPath::root(), env, &mut failures);
    failures
}

fn walk(
    value: &mut Value,
    path: &mut KeyPath,
    env: EnvLookup<'_>,
    failures: &mut Vec<(KeyPath, String)>,
) {
    match value {
        Value::String(s) => {
            if !s.contains('$') {
                return;
            }
            match expand(s, env) {
                Ok(expanded) => *s = expanded,
                Err(errors) => {
                    failures.extend(errors.iter().map(|e| (path.clone(), e.message())));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk(item, path, env, failures);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                path.push(Seg::Key(key.clone()));
                walk(item, path, env, failures);
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "KEY" => Some("sk-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ok(s: &str) -> String {
        expand(s, &env).expect("expands")
    }

    #[test]
    fn whole_partial_and_repeated() {
        assert_eq!(ok("${KEY}"), "sk-123");
        assert_eq!(ok("https://${HOST}/v1"), "https://example.com/v1");
        assert_eq!(ok("${HOST}:${KEY}"), "example.com:sk-123");
        assert_eq!(ok("no dollars"), "no dollars");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(ok("${NOPE:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${KEY:-fallback}"), "sk-123");
        assert_eq!(ok("${NOPE:-}"), "");
        assert_eq!(ok("${NOPE:-a:-b}"), "a:-b");
        assert_eq!(ok("${EMPTY}"), "");
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(ok("$${KEY}"), "${KEY}");
        assert_eq!(ok("price: $5"), "price: $5");
        assert_eq!(ok("$$"), "$$");
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("a$${b}$${"), "a${b}${");
        assert_eq!(ok("$$${KEY}"), "$${KEY}");
    }

    #[test]
    fn errors_are_all_reported() {
        assert_eq!(
            expand("${A}-${B}", &env),
            Err(vec![
                ExpandError::Missing("A".into()),
                ExpandError::Missing("B".into())
            ])
        );
        assert_eq!(expand("x${KEY", &env), Err(vec![ExpandError::Unterminated]));
        assert_eq!(expand("${}", &env), Err(vec![ExpandError::BadName]));
        assert_eq!(expand("${1X}", &env), Err(vec![ExpandError::BadName]));
        assert_eq!(expand("${A-b}", &env), Err(vec![ExpandError::BadName]));
    }

    #[test]
    fn messages_do_not_repeat_the_string() {
        let Err(errors) = expand("${sk-secret-value}", &env) else {
            panic!("expected an error");
        };
        assert!(!errors[0].message().contains("sk-secret"));
        assert!(
            ExpandError::Missing("X".into())
                .message()
                .contains("${X:-default}")
        );
    }

    #[test]
    fn substitute_walks_values_not_keys_and_reports_paths() {
        let mut doc = json!({
            "${KEY}": "${KEY}",
            "list": ["${HOST}", 1, "${MISSING}"],
            "nested": {"deep": "x-${MISSING2}", "n": null, "b": true}
        });
        let failures = substitute(&mut doc, &env);
        assert_eq!(doc["${KEY}"], "sk-123");
        assert_eq!(doc["list"][0], "example.com");
        assert_eq!(doc["list"][2], "${MISSING}");
        let paths: Vec<String> = failures.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths, vec!["list[2]", "nested.deep"]);
        assert!(failures[1].1.contains("MISSING2"));
    }
}
