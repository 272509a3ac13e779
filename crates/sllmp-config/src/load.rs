//! From YAML text to a checked [`RawConfig`], collecting every problem on the way.
//!
//! 1. YAML is parsed into a `serde_json::Value` (syntax errors carry line and column).
//! 2. `${VAR}` is substituted in every string value ([`crate::env`]).
//! 3. The value is read into the serde types of [`crate::schema`] with
//!    `serde_path_to_error`, so every error names its key path.
//!
//! serde stops at the first error. To report them all, step 3 runs in rounds: after each
//! error the offending node is removed from the document and reading starts again. Nodes
//! removed because their value was wrong are remembered ("pruned"), and errors that are
//! only a consequence of a removal (a required key that is now missing, a check on a parent
//! whose child was removed) are not reported. Each round removes a node, so the rounds end.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::MessageFormatter;

use crate::env::{self, EnvLookup};
use crate::error::{KeyPath, Problem, Seg};
use crate::schema::RawConfig;

/// Parses, substitutes and checks a document. Problems are sorted by key path.
pub(crate) fn load(src: &str, env: EnvLookup<'_>) -> Result<RawConfig, Vec<Problem>> {
    let mut doc = parse_yaml(src).map_err(|p| vec![p])?;
    match &doc {
        Value::Object(_) => {}
        Value::Null => {
            return Err(vec![Problem::document(
                "the file is empty; write a mapping with the top-level keys \"defaults\" \
                 and \"features\"",
            )]);
        }
        other => {
            return Err(vec![Problem::document(format!(
                "the top level is {}, not a mapping; write a mapping with the top-level keys \
                 \"defaults\" and \"features\"",
                kind_of(other)
            ))]);
        }
    }
    let has_defaults = doc.get("defaults").is_some();
    let has_features = doc.get("features").is_some();

    let mut reader = Reader::default();
    let mut env_failures = env::substitute(&mut doc, env);
    // Remove later siblings first so that list indices stay those of the file.
    env_failures.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, message) in env_failures {
        reader.problems.push(Problem::at(&path, message));
        if !reader.is_pruned(&path) {
            reader.remove(&mut doc, &path, true);
        }
    }

    let raw = reader.read::<RawConfig>(&mut doc);
    if let Some(raw) = &raw {
        let defaults_path = KeyPath::root().key("defaults");
        if !has_defaults {
            reader.problems.push(Problem::at(
                &defaults_path,
                "missing; add it, even if empty: \"defaults: {}\"",
            ));
        }
        let features_path = KeyPath::root().key("features");
        let no_features = raw.features.as_ref().is_none_or(|f| f.is_empty());
        if !has_features {
            reader.problems.push(Problem::at(
                &features_path,
                "missing; add it with at least one feature, e.g. \"features: {chat: {}}\"",
            ));
        } else if no_features && !reader.has_pruned_within(&features_path) {
            reader.problems.push(Problem::at(
                &features_path,
                "no feature is defined; add at least one, e.g. \"features: {chat: {}}\"",
            ));
        }
    }

    let mut problems = reader.problems;
    if problems.is_empty() {
        return raw.ok_or_else(|| {
            vec![Problem::document(
                "the configuration could not be read; check its structure",
            )]
        });
    }
    problems.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    problems.dedup();
    Err(problems)
}

/// Parses YAML into a JSON value. Snippets are turned off: they would quote the source
/// line, which may hold a secret.
fn parse_yaml(src: &str) -> Result<Value, Problem> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Value>(src, options).map_err(|err| {
        let message = serde_saphyr::UserMessageFormatter.format_message(&err);
        let place = match err.location() {
            Some(location) if location.line() > 0 => {
                format!("line {}, column {}: ", location.line(), location.column())
            }
            _ => String::new(),
        };
        Problem::document(format!(
            "{place}invalid YAML: {message}; fix the syntax there"
        ))
    })
}

/// Reads typed values out of a document round after round (see the module docs).
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    /// Nodes removed because their value was wrong, in file coordinates.
    pruned: Vec<KeyPath>,
    /// For each list (file coordinates), the file indices of the items removed from it.
    removed_items: HashMap<KeyPath, Vec<usize>>,
}

impl Reader {
    fn read<T: DeserializeOwned>(&mut self, doc: &mut Value) -> Option<T> {
        loop {
            let err = match serde_path_to_error::deserialize::<_, T>(&*doc) {
                Ok(value) => return Some(value),
                Err(err) => err,
            };
            let current = KeyPath::from_segs(
                err.path()
                    .iter()
                    .map(|seg| match seg {
                        serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
                        serde_path_to_error::Segment::Map { key }
                        | serde_path_to_error::Segment::Enum { variant: key } => {
                            Seg::Key(key.clone())
                        }
                        serde_path_to_error::Segment::Unknown => Seg::Key("?".to_owned()),
                    })
                    .collect(),
            );
            let path = self.in_file(&current);
            let message = err.into_inner().to_string();

            let removed = if let Some(rest) = message.strip_prefix("unknown field `") {
                // An unknown key means nothing: removing it changes nothing else.
                self.problems.push(Problem::at(&path, unknown_key(rest)));
                self.remove(doc, &current, false)
            } else if let Some(rest) = message.strip_prefix("missing field ") {
                for field in backticked(rest) {
                    let field_path = path.key(&field);
                    if !self.is_pruned(&field_path) {
                        self.problems
                            .push(Problem::at(&field_path, missing_hint(&field)));
                    }
                }
                self.remove(doc, &current, true)
            } else {
                if !self.has_pruned_within(&path) {
                    let found = lookup(doc, &current);
                    self.problems
                        .push(Problem::at(&path, describe(&message, found)));
                }
                self.remove(doc, &current, true)
            };
            // At the root, or where nothing could be removed, another round would fail
            // the same way.
            if !removed {
                return None;
            }
        }
    }

    /// Converts a path in the current (partly removed) document to file coordinates.
    fn in_file(&self, current: &KeyPath) -> KeyPath {
        let mut out = KeyPath::root();
        for seg in current.segs() {
            match seg {
                Seg::Index(index) => {
                    let mut index = *index;
                    if let Some(removed) = self.removed_items.get(&out) {
                        for &gone in removed {
                            if gone <= index {
                                index += 1;
                            }
                        }
                    }
                    out.push(Seg::Index(index));
                }
                Seg::Key(key) => out.push(Seg::Key(key.clone())),
            }
        }
        out
    }

    /// Removes the node at `current` (current coordinates) from the document. `meaningful`
    /// removals (of wrong values) are remembered to silence their consequences. Returns
    /// whether a node was removed (never the root).
    fn remove(&mut self, doc: &mut Value, current: &KeyPath, meaningful: bool) -> bool {
        let in_file = self.in_file(current);
        if meaningful {
            self.pruned.push(in_file.clone());
        }
        let Some((last, parent)) = current.segs().split_last() else {
            return false;
        };
        let Some(container) = lookup_mut(doc, parent) else {
            return false;
        };
        match (container, last) {
            (Value::Object(map), Seg::Key(key)) => map.remove(key).is_some(),
            (Value::Array(items), Seg::Index(index)) if *index < items.len() => {
                items.remove(*index);
                let Some((Seg::Index(file_index), list_in_file)) = in_file.segs().split_last()
                else {
                    return true;
                };
                let removed = self
                    .removed_items
                    .entry(KeyPath::from_segs(list_in_file.to_vec()))
                    .or_default();
                let at = removed.partition_point(|&i| i < *file_index);
                removed.insert(at, *file_index);
                true
            }
            _ => false,
        }
    }

    /// Whether `path` (file coordinates) or one of its ancestors was pruned.
    fn is_pruned(&self, path: &KeyPath) -> bool {
        self.pruned.iter().any(|p| p.contains(path))
    }

    /// Whether `path` (file coordinates) or something inside it was pruned.
    fn has_pruned_within(&self, path: &KeyPath) -> bool {
        self.pruned.iter().any(|p| path.contains(p))
    }
}

fn lookup<'a>(doc: &'a Value, path: &KeyPath) -> Option<&'a Value> {
    path.segs()
        .iter()
        .try_fold(doc, |value, seg| match (value, seg) {
            (Value::Object(map), Seg::Key(key)) => map.get(key),
            (Value::Array(items), Seg::Index(index)) => items.get(*index),
            _ => None,
        })
}

fn lookup_mut<'a>(doc: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    segs.iter().try_fold(doc, |value, seg| match (value, seg) {
        (Value::Object(map), Seg::Key(key)) => map.get_mut(key),
        (Value::Array(items), Seg::Index(index)) => items.get_mut(*index),
        _ => None,
    })
}

/// The names between backticks: "`a`, `b` or `c`" gives a, b, c.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// `unknown key; expected one of: a, b (did you mean "b"?)` from serde's
/// "x`, expected one of `a`, `b`" (the text after "unknown field `").
fn unknown_key(rest: &str) -> String {
    let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
    let expected = backticked(expected);
    if expected.is_empty() {
        return "unknown key; this mapping takes no keys, remove it".to_owned();
    }
    let mut message = format!("unknown key; expected one of: {}", expected.join(", "));
    if let Some(close) = expected
        .iter()
        .filter(|e| edit_distance(key, e) <= 2.max(e.len() / 4))
        .min_by_key(|e| edit_distance(key, e))
    {
        message.push_str(&format!(" (did you mean {close:?}?)"));
    }
    message
}

/// Levenshtein distance, for "did you mean" hints on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The problem text for a required key that is missing.
fn missing_hint(field: &str) -> String {
    let example = match field {
        "provider" => "provider: openai",
        "dimensions" => "dimensions: [user_id]",
        "public_key" => "public_key: \"${LANGFUSE_PUBLIC_KEY}\"",
        "secret_key" => "secret_key: \"${LANGFUSE_SECRET_KEY}\"",
        "limit" => "limit: 10.0",
        "window" => "window: 1d",
        "input" => "input: 2.5",
        "output" => "output: 10.0",
        _ => return "missing; add it".to_owned(),
    };
    format!("missing; add it, e.g. {example}")
}

/// "a number", "a list"...: what kind of value a node is, never the value itself.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Turns a serde error message into problem text. serde's own messages quote the wrong
/// value ("invalid type: string \"sk-...\""), which could be a secret, so they are
/// rewritten from the expected type and the kind of value found. Messages raised by
/// [`crate::schema`] are already problem text and pass through.
fn describe(message: &str, found: Option<&Value>) -> String {
    let (head, expected) = match message.rsplit_once(", expected ") {
        Some((head, expected))
            if head.starts_with("invalid type: ")
                || head.starts_with("invalid value: ")
                || head.starts_with("invalid length ") =>
        {
            (head, expected)
        }
        _ => return message.to_owned(),
    };
    let expected = friendly_expected(expected);
    let found_text = found.map_or("another value", kind_of);
    if head.starts_with("invalid type: ") {
        format!(
            "expected {expected}, found {found_text}; {}",
            type_fix(&expected, found)
        )
    } else {
        format!("expected {expected}; change the value")
    }
}

fn friendly_expected(expected: &str) -> String {
    match expected {
        "a map" => "a mapping".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" => "a whole number".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other => other.to_owned(),
    }
}

fn type_fix(expected: &str, found: Option<&Value>) -> &'static str {
    match (expected, found) {
        (_, Some(Value::Null)) => "write a value after the colon",
        ("a string", Some(Value::Number(_) | Value::Bool(_))) => {
            "put the value in quotes to keep it as text"
        }
        ("a string", Some(Value::Object(_))) => {
            "write a single text value, in quotes if it contains \": \" or ends with \":\""
        }
        ("a string", _) => "write a single text value",
        ("a list", _) => "write a list, e.g. [user_id]",
        (e, _) if e.starts_with("a mapping") => "write its keys on the indented lines below",
        _ => "change the value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn problems(src: &str) -> Vec<String> {
        match load(src, &no_env) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_minimal_document_loads() {
        assert_eq!(
            problems("defaults: {}\nfeatures: {chat: {}}\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("defaults:\nfeatures: {chat: }\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn document_level_problems() {
        assert_eq!(problems("")[0], problems("# just a comment\n")[0]);
        assert!(problems("")[0].starts_with("the file is empty"));
        assert!(problems("- a\n")[0].starts_with("the top level is a list, not a mapping"));
        assert!(problems("a: [1\n")[0].contains("invalid YAML"));
        assert_eq!(
            problems("{}"),
            vec![
                "defaults: missing; add it, even if empty: \"defaults: {}\"",
                "features: missing; add it with at least one feature, e.g. \"features: {chat: {}}\""
            ]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let got = problems(
            "defaults:\n  modle: x\n  model: gpt-4\nfeatures:\n  chat:\n    owner: 5\n  \"bad name\": {}\n  code:\n    budget_constraints:\n      a: {dimensions: [user_id, users, team, nobody], budget_limit: {limit: 1, window: 2h}}\n      b: {dimensions: [team]}\n",
        );
        assert_eq!(
            got,
            vec![
                "defaults.model: \"gpt-4\" is not written as provider:model; write it as e.g. \"openai:gpt-4\"",
                "defaults.modle: unknown key; expected one of: model, provider_api_keys, providers, budget_constraints, langfuse, retry, timeouts, fallbacks (did you mean \"model\"?)",
                "features.\"bad name\": invalid feature name; use only letters, digits, \"_\" and \"-\" (e.g. \"bad-name\")",
                "features.chat.owner: expected a string, found a number; put the value in quotes to keep it as text",
                "features.code.budget_constraints.a.budget_limit.window: \"2h\" is not a budget window; use one of 1h, 1d, 7d, 30d",
                "features.code.budget_constraints.a.dimensions[1]: \"users\" is not a dimension; use one of feature, user_id, organization, team, api_key, model, provider, meta:<key>",
                "features.code.budget_constraints.a.dimensions[3]: \"nobody\" is not a dimension; use one of feature, user_id, organization, team, api_key, model, provider, meta:<key>",
                "features.code.budget_constraints.b: sets neither budget_limit nor rate_limit, so it limits nothing; add budget_limit: {limit: 10.0, window: 1d} or rate_limit: {per_minute: 60}",
            ]
        );
    }

    #[test]
    fn consequences_of_a_removal_are_not_reported() {
        // The bad window removes budget_limit; "no limit" must not follow.
        let got = problems(
            "defaults: {}\nfeatures:\n  chat:\n    budget_constraints:\n      a: {dimensions: [], budget_limit: {limit: 1, window: 2h}}\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        // Every feature is wrong: "no feature is defined" must not follow.
        let got = problems("defaults: {}\nfeatures:\n  \"a b\": {}\n");
        assert_eq!(got.len(), 1, "{got:?}");
        // A missing variable in a required field: no "missing" on top.
        let got = problems(
            "defaults:\n  providers: {p: {provider: \"${NOPE}\"}}\nfeatures: {chat: {}}\n",
        );
        assert_eq!(
            got,
            vec![
                "defaults.providers.p.provider: environment variable NOPE is not set; set it, or give a default with ${NOPE:-default}"
            ]
        );
    }

    #[test]
    fn missing_required_keys_are_named_at_their_own_path() {
        let got = problems(
            "defaults:\n  langfuse: {}\n  providers: {p: {api_base: x}}\nfeatures: {chat: {budget_constraints: {a: {rate_limit: {per_minute: 1}}}}}\n",
        );
        assert_eq!(
            got,
            vec![
                "defaults.langfuse.public_key: missing; add it, e.g. public_key: \"${LANGFUSE_PUBLIC_KEY}\"",
                "defaults.langfuse.secret_key: missing; add it, e.g. secret_key: \"${LANGFUSE_SECRET_KEY}\"",
                "defaults.providers.p.provider: missing; add it, e.g. provider: openai",
                "features.chat.budget_constraints.a.dimensions: missing; add it, e.g. dimensions: [user_id]",
            ]
        );
    }

    #[test]
    fn type_errors_never_quote_the_value() {
        let got = problems(
            "defaults:\n  provider_api_keys: sk-live-123\n  langfuse: {public_key: [sk-lf-1], secret_key: 42}\nfeatures: {chat: {}}\n",
        );
        let all = got.join("\n");
        assert!(!all.contains("sk-live-123"), "{all}");
        assert!(!all.contains("sk-lf-1"), "{all}");
        assert!(!all.contains("42"), "{all}");
        assert!(
            all.contains("defaults.provider_api_keys: expected a mapping, found text"),
            "{all}"
        );
    }

    #[test]
    fn removed_list_items_keep_file_indices() {
        let got = problems(
            "defaults: {}\nfeatures:\n  c:\n    budget_constraints:\n      a: {dimensions: [x, \"${A}\", y, team, z], rate_limit: {per_minute: 1}}\n",
        );
        let paths: Vec<&str> = got.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            vec![
                "features.c.budget_constraints.a.dimensions[0]",
                "features.c.budget_constraints.a.dimensions[1]",
                "features.c.budget_constraints.a.dimensions[2]",
                "features.c.budget_constraints.a.dimensions[4]",
            ]
        );
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("modle", "model"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
