//! [`Extra`]: the fields of a JSON object that a chat type does not model.

use std::fmt;
use std::ops::{Index, IndexMut};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

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
#[derive(Clone, Default, PartialEq)]
pub struct Extra(Vec<(String, Value)>);

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
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key`, to change it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`: in its place if present (returning the old value), else last.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.get_mut(&key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The fields' values, in order, to change them.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&String, &mut Value)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The fields as a JSON object.
    pub fn to_map(&self) -> JsonMap {
        self.0.iter().cloned().collect()
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
        Extra(map.into_iter().collect())
    }
}

impl IntoIterator for Extra {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Extra {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a String, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
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
