//! Which feature a request belongs to.
//!
//! Looked up in this order, the first one present wins:
//!
//! 1. `metadata["feature"]` of the request body;
//! 2. `metadata["x-ai-feature"]`;
//! 3. the `x-ai-feature` HTTP header;
//! 4. a feature named `default`, if there is one.
//!
//! Unlike the Python original, a name that is given but unknown is an error
//! ([`FeatureError::Unknown`]) rather than a silent fall-back to `default`, and the header
//! is honoured. An empty or null value counts as not given. Names are case-sensitive.

use serde_json::{Map, Value};

use crate::{Config, ResolvedFeature};

/// The request does not name a usable feature. The messages are meant for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The request names a feature the configuration does not define.
    #[error("unknown feature {name:?} in {source_key}; known features: {}", known.join(", "))]
    Unknown {
        /// The name as given.
        name: String,
        /// Where it was given: `"metadata.feature"`, `"metadata.x-ai-feature"` or
        /// `"x-ai-feature header"`.
        source_key: &'static str,
        /// Every defined feature, sorted.
        known: Vec<String>,
    },
    /// The request names no feature and there is no feature named `default`.
    #[error(
        "unable to determine the feature: set metadata.feature to one of: {} (no feature is \
         named \"default\")",
        known.join(", ")
    )]
    Undetermined {
        /// Every defined feature, sorted.
        known: Vec<String>,
    },
}

/// The feature a request falls back to when it names none.
const DEFAULT_FEATURE: &str = "default";

impl Config {
    /// The feature a request belongs to, from its body `metadata` and the value of its
    /// `x-ai-feature` HTTP header.
    ///
    /// The first of these that is given (not null, not empty) wins: `metadata["feature"]`,
    /// `metadata["x-ai-feature"]`, the header. A given name that is not a feature is
    /// [`FeatureError::Unknown`] (no fall-back). With no name given, the feature named
    /// `default` is used, or [`FeatureError::Undetermined`] if there is none. Names are
    /// case-sensitive.
    ///
    /// ```
    /// # use sllmp_config::{Config, FeatureError};
    /// let config = Config::from_yaml_with_env(
    ///     "defaults: {}\nfeatures: {chat: {}, code: {}}\n",
    ///     "config.yaml",
    ///     &|_| None,
    /// )?;
    /// let metadata = serde_json::json!({"feature": "code"});
    /// let feature = config.detect_feature(metadata.as_object(), Some("chat"))?;
    /// assert_eq!(feature.name, "code");
    ///
    /// let err = config.detect_feature(None, None).unwrap_err();
    /// assert!(matches!(err, FeatureError::Undetermined { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detect_feature(
        &self,
        metadata: Option<&Map<String, Value>>,
        header: Option<&str>,
    ) -> Result<&ResolvedFeature, FeatureError> {
        let from_metadata = |key: &str| metadata.and_then(|m| given(m.get(key)?));
        let named = from_metadata("feature")
            .map(|name| (name, "metadata.feature"))
            .or_else(|| from_metadata("x-ai-feature").map(|name| (name, "metadata.x-ai-feature")))
            .or_else(|| {
                header
                    .filter(|h| !h.is_empty())
                    .map(|h| (h.to_owned(), "x-ai-feature header"))
            });
        match named {
            Some((name, source_key)) => match self.features.get(&name) {
                Some(feature) => Ok(feature),
                None => Err(FeatureError::Unknown {
                    name,
                    source_key,
                    known: self.known(),
                }),
            },
            None => self
                .features
                .get(DEFAULT_FEATURE)
                .ok_or_else(|| FeatureError::Undetermined {
                    known: self.known(),
                }),
        }
    }

    fn known(&self) -> Vec<String> {
        self.features.keys().cloned().collect()
    }
}

/// A metadata value as a feature name: a non-empty string as is; null or "" as not given;
/// any other value as its JSON text (which names no feature, so it is reported).
fn given(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(features: &str) -> Config {
        Config::from_yaml_with_env(
            &format!("defaults: {{}}\nfeatures: {features}\n"),
            "t.yaml",
            &|_| None,
        )
        .expect("valid")
    }

    fn meta(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn order_is_metadata_feature_then_metadata_header_key_then_header_then_default() {
        let c = config("{a: {}, b: {}, c: {}, default: {}}");
        let both = meta(json!({"feature": "a", "x-ai-feature": "b"}));
        assert_eq!(c.detect_feature(Some(&both), Some("c")).unwrap().name, "a");
        let second = meta(json!({"x-ai-feature": "b"}));
        assert_eq!(
            c.detect_feature(Some(&second), Some("c")).unwrap().name,
            "b"
        );
        assert_eq!(
            c.detect_feature(Some(&meta(json!({}))), Some("c"))
                .unwrap()
                .name,
            "c"
        );
        assert_eq!(c.detect_feature(None, None).unwrap().name, "default");
        let blank = meta(json!({"feature": "", "x-ai-feature": null}));
        assert_eq!(
            c.detect_feature(Some(&blank), Some("")).unwrap().name,
            "default"
        );
    }

    #[test]
    fn an_unknown_name_is_an_error_not_a_fallback() {
        let c = config("{chat: {}, code: {}, default: {}}");
        let err = c
            .detect_feature(Some(&meta(json!({"feature": "foo"}))), Some("chat"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown feature \"foo\" in metadata.feature; known features: chat, code, default"
        );
        let err = c.detect_feature(None, Some("Chat")).unwrap_err();
        assert!(matches!(
            err,
            FeatureError::Unknown {
                source_key: "x-ai-feature header",
                ..
            }
        ));
        let err = c
            .detect_feature(Some(&meta(json!({"x-ai-feature": 5}))), None)
            .unwrap_err();
        assert_eq!(
            err,
            FeatureError::Unknown {
                name: "5".into(),
                source_key: "metadata.x-ai-feature",
                known: vec!["chat".into(), "code".into(), "default".into()],
            }
        );
    }

    #[test]
    fn no_name_and_no_default_is_undetermined() {
        let c = config("{chat: {}, code: {}}");
        let err = c.detect_feature(None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to determine the feature: set metadata.feature to one of: chat, code (no \
             feature is named \"default\")"
        );
    }
}
