//! The `x-request-id` middleware: every response carries one, and panics become JSON 500s.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use sllmp_core::Error;
use tower::{Layer, Service};

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
            _ => {
                // `req_` and 32 hex digits, without `format!`'s machinery.
                let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
                let hex = uuid::Uuid::now_v7().simple().encode_lower(&mut hex);
                let mut id = String::with_capacity(4 + hex.len());
                id.push_str("req_");
                id.push_str(hex);
                RequestId(id)
            }
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
/// OpenAI-shaped 500 carrying the same id. A plain tower layer: no boxed future and no
/// cloned service per request (as `axum::middleware::from_fn` would cost).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> RequestIdService<S> {
        RequestIdService { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestIdService<S> {
    inner: S,
}

impl<S> Service<Request> for RequestIdService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = RequestId::from_header(req.headers().get(&X_REQUEST_ID));
        req.extensions_mut().insert(id.clone());
        let inner = &mut self.inner;
        let future = std::panic::catch_unwind(AssertUnwindSafe(move || inner.call(req)))
            .ok()
            .map(|future| AssertUnwindSafe(future).catch_unwind());
        RequestIdFuture {
            future,
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestIdService`].
    pub(crate) struct RequestIdFuture<F> {
        // `None` when calling the inner service panicked.
        #[pin]
        future: Option<CatchUnwind<AssertUnwindSafe<F>>>,
        id: Option<RequestId>,
    }
}

impl<F> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // `None`: the service panicked, while being called or while answering.
        let answered = match this.future.as_pin_mut() {
            Some(future) => match ready!(future.poll(cx)) {
                Ok(Ok(response)) => Some(response),
                Ok(Err(never)) => match never {},
                Err(_panic) => None,
            },
            None => None,
        };
        let id = this.id.take().expect("polled after completion");
        let mut response = answered.unwrap_or_else(|| {
            ApiError::new(
                Error::internal("the server failed while handling the request"),
                id.0.clone(),
            )
            .into_response()
        });
        if let Ok(value) = HeaderValue::from_str(&id.0) {
            response.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        Poll::Ready(Ok(response))
    }
}
