//! The handlers: thin functions from HTTP to the pipeline and back.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sllmp_core::{ChatInput, EmbeddingsRequest, Error, ErrorKind, Route};
use sllmp_pipeline::{Ctx, Output, Pipeline, Reply, ResponseStream, StreamItem, Validation};

use crate::error::error_frame;
use crate::{ApiError, AppState, RequestId};

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "timestamp": unix_now()}))
}

pub(crate) async fn models(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data: Vec<_> = app
        .models
        .iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": app.started, "owned_by": m.owned_by}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub(crate) async fn chat_completions(
    State(app): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    request: Request,
) -> Response {
    // The request keeps the body: an OpenAI-compatible provider forwards it as it came,
    // the routed model spliced in, unless a middleware rewrites the request.
    operation(app, request_id, request, |body| {
        ChatInput::from_json(body).map(sllmp_core::Request::Chat)
    })
    .await
}

pub(crate) async fn embeddings(
    State(app): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    request: Request,
) -> Response {
    operation(app, request_id, request, |body| {
        EmbeddingsRequest::from_slice(&body).map(sllmp_core::Request::Embeddings)
    })
    .await
}

/// Any operation: the body read and parsed by `parse`, the pipeline run, its reply written.
async fn operation(
    app: Arc<AppState>,
    request_id: String,
    request: Request,
    parse: impl FnOnce(Bytes) -> Result<sllmp_core::Request, Error>,
) -> Response {
    // The request's own header map moves into the context: no copy.
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let body = match read_body(body, &headers, app.settings.body_limit).await {
        Ok(body) => body,
        Err(err) => return ApiError::new(err, request_id).into_response(),
    };
    let req = match parse(body) {
        Ok(req) => req,
        Err(err) => return ApiError::new(err, request_id).into_response(),
    };
    let ctx = Ctx::new(request_id.clone(), &req, Arc::clone(&app.providers)).with_headers(headers);
    let mut pipeline = Pipeline::new(ctx);
    pipeline.set_settings(app.settings.pipeline);
    pipeline.track(&app.tracker);
    // Validation always runs first, before any middleware of the user's.
    pipeline.add(Validation);
    app.factory.build(&mut pipeline);
    let Reply {
        route,
        headers,
        result,
    } = pipeline.start(req).await;
    let mut response = match result {
        Ok(Output::Complete(answer)) => json_response(answer.to_json()),
        Ok(Output::Stream(stream)) => sse_response(stream, request_id),
        Err(err) => ApiError::new(err, request_id).into_response(),
    };
    if let Some(route) = route {
        set_model_header(&mut response, &route);
    }
    if !headers.is_empty() {
        response.headers_mut().extend(headers);
    }
    response
}

/// `x-sllmp-model: provider:model`: the target that answered (or last failed).
fn set_model_header(response: &mut Response, route: &Route) {
    if let Ok(value) = HeaderValue::from_str(route.as_str()) {
        response.headers_mut().insert(X_SLLMP_MODEL, value);
    }
}

/// The response header naming the target that answered.
pub const X_SLLMP_MODEL: HeaderName = HeaderName::from_static("x-sllmp-model");

/// The whole request body, at most `limit` bytes (a `content-length` over it is refused
/// before anything is read).
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error> {
    let too_large = || {
        Error::new(
            ErrorKind::RequestTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Error::invalid_request(
            "invalid_json",
            None,
            format!("the request body could not be read: {err}"),
        )),
    }
}

/// A 200 with a JSON body already encoded (the provider's own bytes, when unchanged).
fn json_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn sse_response(stream: ResponseStream, request_id: String) -> Response {
    let body = SseBody {
        stream,
        request_id,
        state: SseState::Open,
    };
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

enum SseState {
    Open,
    Closed,
}

/// The frames of a streamed answer: `data: <chunk>\n\n` per chunk, then `data: [DONE]\n\n`,
/// or one error frame and nothing after it.
struct SseBody {
    stream: ResponseStream,
    request_id: String,
    state: SseState,
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let SseState::Closed = self.state {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(StreamItem::Chunk(chunk))) => {
                let mut frame = Vec::with_capacity(256);
                frame.extend_from_slice(b"data: ");
                serde_json::to_writer(&mut frame, &chunk).expect("a chunk serializes");
                frame.extend_from_slice(b"\n\n");
                Poll::Ready(Some(Ok(Bytes::from(frame))))
            }
            Poll::Ready(Some(StreamItem::Json(json))) => {
                let mut frame = Vec::with_capacity(json.len() + 8);
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(&json);
                frame.extend_from_slice(b"\n\n");
                Poll::Ready(Some(Ok(Bytes::from(frame))))
            }
            Poll::Ready(Some(StreamItem::Error(err))) => {
                self.state = SseState::Closed;
                Poll::Ready(Some(Ok(error_frame(&err, &self.request_id))))
            }
            Poll::Ready(None) => {
                self.state = SseState::Closed;
                Poll::Ready(Some(Ok(Bytes::from_static(b"data: [DONE]\n\n"))))
            }
        }
    }
}

pub(crate) async fn unknown_url(
    RequestId(request_id): RequestId,
    uri: axum::http::Uri,
) -> Response {
    let err = Error::new(
        ErrorKind::UnknownUrl,
        format!("Invalid URL ({uri}): no such route"),
    );
    ApiError::new(err, request_id).into_response()
}

pub(crate) async fn method_not_allowed(
    RequestId(request_id): RequestId,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let err = Error::new(
        ErrorKind::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    );
    ApiError::new(err, request_id).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn started_now() -> u64 {
    unix_now()
}
