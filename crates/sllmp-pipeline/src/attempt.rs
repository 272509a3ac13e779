//! [`AttemptRequest`]: the request as one attempt's `on_attempt` hooks see it.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sllmp_core::Request;

/// The request of one attempt, as [`Middleware::on_attempt`](crate::Middleware::on_attempt)
/// sees it: the request as `on_request` left it, copied on the first write.
///
/// Reads (`req.model()`, `req.chat()`) go to the request itself; the first write through it
/// (`req.chat_mut()`, `req.set_model(…)`) makes this attempt's own copy,
/// which is what the provider then receives. Every attempt therefore starts from the same
/// request, and hooks that only read cost no copy (a 2 KB request with tools takes about as
/// long to copy as to parse).
///
/// ```
/// use sllmp_core::{ChatRequest, Request};
/// use sllmp_pipeline::AttemptRequest;
///
/// let original = Request::from(ChatRequest { model: "openai:gpt-4o".into(), ..Default::default() });
/// let mut req = AttemptRequest::new(&original);
/// assert!(req.model().starts_with("openai:")); // a read: no copy
/// assert!(!req.is_copied());
/// req.chat_mut().unwrap().temperature = Some(0.0); // a write: this attempt's own copy
/// assert!(req.is_copied());
/// assert_eq!(original.chat().unwrap().temperature, None);
/// ```
pub struct AttemptRequest<'a> {
    original: &'a Request,
    /// Boxed: the view lives in the attempt's future, which would otherwise hold room for a
    /// whole request that most attempts never make.
    copy: Option<Box<Request>>,
}

impl<'a> AttemptRequest<'a> {
    /// A view of `original` that copies it on the first write.
    pub fn new(original: &'a Request) -> AttemptRequest<'a> {
        AttemptRequest {
            original,
            copy: None,
        }
    }

    /// Whether a write made this attempt's own copy.
    pub fn is_copied(&self) -> bool {
        self.copy.is_some()
    }

    /// This attempt's copy, if a hook wrote to the request.
    pub fn into_copy(self) -> Option<Box<Request>> {
        self.copy
    }
}

impl Deref for AttemptRequest<'_> {
    type Target = Request;

    fn deref(&self) -> &Request {
        self.copy.as_deref().unwrap_or(self.original)
    }
}

impl DerefMut for AttemptRequest<'_> {
    fn deref_mut(&mut self) -> &mut Request {
        let original = self.original;
        self.copy.get_or_insert_with(|| Box::new(original.clone()))
    }
}

impl fmt::Debug for AttemptRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptRequest")
            .field("copied", &self.is_copied())
            .field("request", &**self)
            .finish()
    }
}
