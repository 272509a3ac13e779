//! The `x-request-id` middleware: every response carries one, and panics become JSON 500s.

use std::panic::AssertUnwindSafe;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use sllmp_core::Error;

use crate::ApiError;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being handled: the client's `x-request-id` when it sent a sane
/// one (printable ASCII, at most 128 bytes), else a new `req_<uuid v7>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    fn from_header(value: Option<&HeaderValue>) -> RequestId {
        match value.and_then(|v| v.to_str().ok()) {
            Some(id)
                if !id.is_empty()
                    && id.len() <= 128
                    && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                RequestId(id.to_string())
            }
            _ => RequestId(format!("req_{}", uuid::Uuid::now_v7().simple())),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId::from_header(parts.headers.get(&X_REQUEST_ID))))
    }
}

/// Assigns the request id, puts it on the response, and turns a handler panic into an
/// OpenAI-shaped 500 carrying the same id.
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let id = RequestId::from_header(req.headers().get(&X_REQUEST_ID));
    req.extensions_mut().insert(id.clone());
    let mut response = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            Error::internal("the server failed while handling the request"),
            id.0.clone(),
        )
        .into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}
