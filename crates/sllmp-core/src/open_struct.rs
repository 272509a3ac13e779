//! `Deserialize` for the open chat structs, without `#[serde(flatten)]`.
//!
//! serde's `flatten` buffers every field of the object into an intermediate tree before
//! handing the known ones to the struct, which made parsing a chat request cost as much as
//! parsing it into a `serde_json::Value` (see docs/benchmarks.md). [`open_struct!`] writes the
//! visitor by hand instead: one pass, known keys matched without allocating, every other
//! key kept in the struct's `extra` map in order.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Visitor};

/// A map key: borrowed from the input when it has no escapes.
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }

    pub(crate) fn into_string(self) -> String {
        match self {
            Key::Borrowed(key) => key.to_owned(),
            Key::Owned(key) => key,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }
            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

/// Implements `Deserialize` for an open struct: an object whose listed keys go to fields
/// (each field's type deserializes its value; `via Wrapper` deserializes a wrapper and
/// takes its `.0`) and every other key to `extra`. Missing keys keep the value of `init`.
macro_rules! open_struct {
    (
        $ty:ident, expecting $expecting:literal, init $init:expr,
        { $( $key:literal => $field:ident $(via $via:ty)? ),* $(,)? }
    ) => {
        impl $ty {
            /// The value every parse starts from: what a missing key leaves.
            pub(crate) fn open_init() -> $ty {
                $init
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                struct OpenVisitor;
                impl<'de> ::serde::de::Visitor<'de> for OpenVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::open_init();
                        while let Some(key) = map.next_key::<$crate::open_struct::Key<'de>>()? {
                            match key.as_str() {
                                $( $key => {
                                    out.$field = $crate::open_struct::open_struct!(@value map $(via $via)?);
                                } )*
                                _ => {
                                    let value = map.next_value::<::serde_json::Value>()?;
                                    out.extra.insert(key.into_string(), value);
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                de.deserialize_map(OpenVisitor)
            }
        }
    };
    (@value $map:ident) => { $map.next_value()? };
    (@value $map:ident via $via:ty) => { $map.next_value::<$via>()?.0 };
}

pub(crate) use open_struct;
