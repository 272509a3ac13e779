//! Turning a [`sllmp_core::Error`] into an HTTP response: the only place statuses are set.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sllmp_core::{Error, ErrorBody};

/// An error on its way to the client, with the request id its body carries.
#[derive(Debug)]
pub struct ApiError {
    /// The error.
    pub error: Error,
    /// The id of the request it answers.
    pub request_id: String,
}

impl ApiError {
    /// Pairs an error with its request id.
    pub fn new(error: Error, request_id: impl Into<String>) -> ApiError {
        ApiError {
            error,
            request_id: request_id.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody::new(&self.error, Some(&self.request_id)))
            .expect("an error body serializes");
        let status =
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Bytes::from(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry_after) = self.error.retry_after() {
            let secs = retry_after.as_secs_f64().ceil() as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// One SSE frame carrying an error: `data: {"error":{...}}\n\n`.
pub(crate) fn error_frame(error: &Error, request_id: &str) -> Bytes {
    let mut frame = b"data: ".to_vec();
    serde_json::to_writer(&mut frame, &ErrorBody::new(error, Some(request_id)))
        .expect("an error body serializes");
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}
