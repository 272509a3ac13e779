//! [`Extra`]: the fields of a JSON object that a chat type does not model.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::sync::OnceLock;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::JsonMap;

/// The fields of a JSON object that a chat type does not model, in the order they came.
///
/// A small map: a list of keys and values, searched in order. The objects of the chat
/// format carry few unknown fields (`refusal`, `logprobs`, `system_fingerprint`, a
/// provider's own parameters), and for so few a list is faster than a hash map: no hashing
/// and one allocation, where a map needs two and a hash of every key, per object. Parsing an
/// OpenAI answer with its three usual extra fields took a third longer with a map.
///
/// ```
/// use serde_json::json;
/// use sllmp_core::Extra;
///
/// let mut extra = Extra::new();
/// extra.insert("reasoning_effort", json!("low"));
/// extra.insert("seed", json!(7));
/// assert_eq!(extra["seed"], 7);
/// assert_eq!(extra.insert("seed", json!(8)), Some(json!(7))); // replaced in place
/// assert_eq!(serde_json::to_string(&extra).unwrap(), r#"{"reasoning_effort":"low","seed":8}"#);
/// ```
#[derive(Clone, Default)]
pub struct Extra(Vec<(String, Entry)>);

/// One field's value: parsed, or (for an object or an array read by the fast reader) kept
/// as its JSON text until something looks at it. A request's `tools` or `response_format`
/// is forwarded far more often than read.
#[derive(Clone)]
enum Entry {
    Value(Value),
    Raw {
        raw: Box<RawValue>,
        /// Parsed on the first look; `raw` stays what is written out until a change turns
        /// the entry into a [`Entry::Value`].
        parsed: OnceLock<Value>,
    },
}

impl Entry {
    fn value(&self) -> &Value {
        match self {
            Entry::Value(value) => value,
            Entry::Raw { raw, parsed } => parsed.get_or_init(|| parse_raw(raw)),
        }
    }

    fn value_mut(&mut self) -> &mut Value {
        if let Entry::Raw { .. } = self {
            let value = std::mem::replace(self, Entry::Value(Value::Null)).into_value();
            *self = Entry::Value(value);
        }
        match self {
            Entry::Value(value) => value,
            Entry::Raw { .. } => unreachable!("made a value above"),
        }
    }

    fn into_value(self) -> Value {
        match self {
            Entry::Value(value) => value,
            Entry::Raw { raw, parsed } => parsed.into_inner().unwrap_or_else(|| parse_raw(&raw)),
        }
    }
}

/// A raw value's parse; it was valid JSON when it was made, so this cannot fail.
fn parse_raw(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).expect("a raw value is valid JSON")
}

impl Extra {
    /// No fields.
    pub const fn new() -> Extra {
        Extra(Vec::new())
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.value())
    }

    /// The value of `key`, to change it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.value_mut())
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Sets `key` to `value`: in its place if present (returning the old value), else last.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        self.put(key.into(), Entry::Value(value))
            .map(Entry::into_value)
    }

    /// Sets `key` to a value kept as its JSON text until looked at.
    pub(crate) fn insert_raw(&mut self, key: impl Into<String>, raw: Box<RawValue>) {
        self.put(
            key.into(),
            Entry::Raw {
                raw,
                parsed: OnceLock::new(),
            },
        );
    }

    fn put(&mut self, key: String, entry: Entry) -> Option<Entry> {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => Some(std::mem::replace(slot, entry)),
            None => {
                self.0.push((key, entry));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1.into_value())
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v.value()))
    }

    /// The fields' values, in order, to change them.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&String, &mut Value)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v.value_mut()))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The fields as a JSON object.
    pub fn to_map(&self) -> JsonMap {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl PartialEq for Extra {
    /// The same keys in the same order with the same values, however they are kept.
    fn eq(&self, other: &Extra) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((ka, va), (kb, vb))| ka == kb && va.value() == vb.value())
    }
}

impl Index<&str> for Extra {
    type Output = Value;

    /// The value of `key`; panics if it is absent, like [`JsonMap`]'s index.
    fn index(&self, key: &str) -> &Value {
        self.get(key).expect("no entry found for key")
    }
}

impl IndexMut<&str> for Extra {
    fn index_mut(&mut self, key: &str) -> &mut Value {
        self.get_mut(key).expect("no entry found for key")
    }
}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(String, Value)> for Extra {
    /// Later values of a repeated key replace earlier ones, in the first one's place.
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Extra {
        let mut extra = Extra::new();
        extra.extend(iter);
        extra
    }
}

impl Extend<(String, Value)> for Extra {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.insert(key, value);
        }
    }
}

impl From<JsonMap> for Extra {
    fn from(map: JsonMap) -> Extra {
        Extra(map.into_iter().map(|(k, v)| (k, Entry::Value(v))).collect())
    }
}

impl IntoIterator for Extra {
    type Item = (String, Value);
    type IntoIter = ExtraIntoIter;

    fn into_iter(self) -> ExtraIntoIter {
        ExtraIntoIter(self.0.into_iter())
    }
}

impl<'a> IntoIterator for &'a Extra {
    type Item = (&'a String, &'a Value);
    type IntoIter = ExtraIter<'a>;

    fn into_iter(self) -> ExtraIter<'a> {
        ExtraIter(self.0.iter())
    }
}

/// The fields of an [`Extra`], by value.
pub struct ExtraIntoIter(std::vec::IntoIter<(String, Entry)>);

impl Iterator for ExtraIntoIter {
    type Item = (String, Value);

    fn next(&mut self) -> Option<(String, Value)> {
        self.0.next().map(|(k, v)| (k, v.into_value()))
    }
}

/// The fields of an [`Extra`], by reference.
pub struct ExtraIter<'a>(std::slice::Iter<'a, (String, Entry)>);

impl<'a> Iterator for ExtraIter<'a> {
    type Item = (&'a String, &'a Value);

    fn next(&mut self) -> Option<(&'a String, &'a Value)> {
        self.0.next().map(|(k, v)| (k, v.value()))
    }
}

impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, entry) in &self.0 {
            match entry {
                Entry::Value(value) => map.serialize_entry(key, value)?,
                // The text as it came: nothing changed it.
                Entry::Raw { raw, .. } => map.serialize_entry(key, raw)?,
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Extra, D::Error> {
        struct ExtraVisitor;
        impl<'de> Visitor<'de> for ExtraVisitor {
            type Value = Extra;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Extra, A::Error> {
                let mut extra = Extra::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    extra.insert(key, value);
                }
                Ok(extra)
            }
        }
        de.deserialize_map(ExtraVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_order_and_replaces_in_place() {
        let mut extra: Extra = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(extra.keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(extra["b"], 3);
        extra.insert("c", json!(null));
        assert_eq!(extra.remove("b"), Some(json!(3)));
        assert_eq!(
            serde_json::to_string(&extra).unwrap(),
            r#"{"a":2,"c":null}"#
        );
        assert!(extra.contains_key("c"));
        assert!(!extra.contains_key("b"));
        assert_eq!(format!("{extra:?}"), r#"{"a": Number(2), "c": Null}"#);
        assert_eq!(Extra::from(extra.to_map()), extra);
    }
}
