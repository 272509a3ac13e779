//! [`Route`]: where an attempt goes, as a value: a provider name and its model.

use std::fmt;
use std::sync::Arc;

/// A provider (as addressed: `openai`, `my-openai`) and the model as that provider names it
/// (`gpt-4o`). Written `provider:model`.
///
/// Middleware choose a request's target with a route ([`Ctx::set_route`] in the pipeline)
/// instead of rewriting the request's model string; routes parsed once (a feature's model,
/// its fallbacks) are shared, so cloning one costs two reference counts.
///
/// ```
/// use sllmp_core::Route;
///
/// let route = Route::parse("openai:gpt-4o").unwrap();
/// assert_eq!((route.provider(), route.model()), ("openai", "gpt-4o"));
/// assert_eq!(route.to_string(), "openai:gpt-4o");
/// // `provider/model` is accepted too; a model may itself contain `/` or `:`.
/// assert_eq!(Route::parse("openrouter/meta-llama/llama-3").unwrap().model(), "meta-llama/llama-3");
/// assert!(Route::parse("gpt-4o").is_none());
/// ```
///
/// [`Ctx::set_route`]: https://docs.rs/sllmp-pipeline
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// `provider:model`, one allocation (a route is made per request).
    text: Arc<str>,
    /// Where the provider ends (the `:`).
    split: usize,
}

impl Route {
    /// A route to `model` at `provider`.
    pub fn new(provider: impl AsRef<str>, model: impl AsRef<str>) -> Route {
        let (provider, model) = (provider.as_ref(), model.as_ref());
        let mut text = String::with_capacity(provider.len() + 1 + model.len());
        text.push_str(provider);
        text.push(':');
        text.push_str(model);
        Route {
            text: text.into(),
            split: provider.len(),
        }
    }

    /// Splits `provider:model` at the first `:` (or, when there is none, `provider/model` at
    /// the first `/`). `None` when there is no separator, or nothing on either side of it.
    pub fn parse(text: &str) -> Option<Route> {
        match text.find(':') {
            Some(at) => (at > 0 && at + 1 < text.len()).then(|| Route {
                text: text.into(),
                split: at,
            }),
            None => {
                let (provider, model) = text.split_once('/')?;
                (!provider.is_empty() && !model.is_empty()).then(|| Route::new(provider, model))
            }
        }
    }

    /// The provider name, as addressed.
    pub fn provider(&self) -> &str {
        &self.text[..self.split]
    }

    /// The model, as the provider names it.
    pub fn model(&self) -> &str {
        &self.text[self.split + 1..]
    }

    /// `provider:model`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Route({})", self.text)
    }
}
