//! The one error type of SLLMP, and its OpenAI-shaped JSON rendering.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// What went wrong, as a closed, low-cardinality set (usable as a metrics label).
///
/// Each kind has an HTTP status, an OpenAI error `type` and a default `code`;
/// [`ErrorKind::Custom`] carries its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed: bad JSON, a missing, wrongly typed or out-of-range field.
    InvalidRequest,
    /// The model is not written `provider:model`, or names no configured provider.
    ModelNotFound,
    /// No route at this path.
    UnknownUrl,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body is over the size limit.
    RequestTooLarge,
    /// The provider answered 400 (or another 4xx that is the request's fault).
    ProviderBadRequest,
    /// The provider answered 401 or 403, or no key is configured for it.
    ProviderAuthentication,
    /// The provider answered 404.
    ProviderModelNotFound,
    /// The provider answered 429.
    ProviderRateLimited,
    /// The provider answered 5xx, or said it is overloaded.
    ProviderUnavailable,
    /// The provider could not be reached.
    ProviderUnreachable,
    /// The provider did not answer in time.
    ProviderTimeout,
    /// The provider answered something that is not the API it claims to speak.
    ProviderInvalidResponse,
    /// A bug, a panic, or anything unforeseen.
    Internal,
    /// An error defined by a middleware, with its own status, type and code.
    Custom,
}

impl ErrorKind {
    /// The HTTP status code of this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ProviderBadRequest => 400,
            ErrorKind::ProviderAuthentication => 401,
            ErrorKind::ModelNotFound | ErrorKind::UnknownUrl | ErrorKind::ProviderModelNotFound => {
                404
            }
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::ProviderRateLimited => 429,
            ErrorKind::Internal | ErrorKind::Custom => 500,
            ErrorKind::ProviderUnreachable | ErrorKind::ProviderInvalidResponse => 502,
            ErrorKind::ProviderUnavailable => 503,
            ErrorKind::ProviderTimeout => 504,
        }
    }

    /// The OpenAI error `type` of this kind.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ModelNotFound
            | ErrorKind::UnknownUrl
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTooLarge => "invalid_request_error",
            ErrorKind::ProviderBadRequest => "provider_bad_request",
            ErrorKind::ProviderAuthentication => "authentication_error",
            ErrorKind::ProviderModelNotFound => "model_not_found_error",
            ErrorKind::ProviderRateLimited => "provider_rate_limit_error",
            ErrorKind::ProviderUnavailable => "service_unavailable_error",
            ErrorKind::ProviderUnreachable => "network_error",
            ErrorKind::ProviderTimeout => "timeout_error",
            ErrorKind::ProviderInvalidResponse => "llm_provider_error",
            ErrorKind::Internal | ErrorKind::Custom => "internal_error",
        }
    }

    /// The default `code` of this kind.
    pub fn default_code(self) -> Option<&'static str> {
        Some(match self {
            ErrorKind::InvalidRequest | ErrorKind::ProviderBadRequest | ErrorKind::Custom => {
                return None;
            }
            ErrorKind::ModelNotFound | ErrorKind::ProviderModelNotFound => "model_not_found",
            ErrorKind::UnknownUrl => "unknown_url",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::ProviderAuthentication => "provider_authentication_failed",
            ErrorKind::ProviderRateLimited => "rate_limit_exceeded",
            ErrorKind::ProviderUnavailable => "provider_unavailable",
            ErrorKind::ProviderUnreachable => "provider_unreachable",
            ErrorKind::ProviderTimeout => "provider_timeout",
            ErrorKind::ProviderInvalidResponse => "provider_invalid_response",
            ErrorKind::Internal => "internal_error",
        })
    }

    /// Whether retrying the same call may succeed: rate limits, unavailability, network
    /// failures and timeouts. Internal errors and bad requests are never retried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::ProviderRateLimited
                | ErrorKind::ProviderUnavailable
                | ErrorKind::ProviderUnreachable
                | ErrorKind::ProviderTimeout
        )
    }

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::UnknownUrl => "unknown_url",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::ProviderBadRequest => "provider_bad_request",
            ErrorKind::ProviderAuthentication => "provider_authentication",
            ErrorKind::ProviderModelNotFound => "provider_model_not_found",
            ErrorKind::ProviderRateLimited => "provider_rate_limited",
            ErrorKind::ProviderUnavailable => "provider_unavailable",
            ErrorKind::ProviderUnreachable => "provider_unreachable",
            ErrorKind::ProviderTimeout => "provider_timeout",
            ErrorKind::ProviderInvalidResponse => "provider_invalid_response",
            ErrorKind::Internal => "internal",
            ErrorKind::Custom => "custom",
        }
    }
}

/// An error on the way through the proxy: its kind, HTTP status, OpenAI `type`, `code`,
/// `param`, a message for the client, whether a retry may help, and its cause.
///
/// Messages say what failed and name the provider (`openai returned 429: ...`); they never
/// contain secrets. Building an error has no side effect: nothing is logged here.
///
/// ```
/// use sllmp_core::{Error, ErrorKind};
///
/// let err = Error::invalid_request("invalid_value", Some("temperature".into()), "too hot");
/// assert_eq!(err.status(), 400);
/// assert_eq!(err.kind(), ErrorKind::InvalidRequest);
/// assert_eq!(
///     err.body(Some("req_1")).to_string(),
///     r#"{"error":{"message":"too hot","type":"invalid_request_error","param":"temperature","code":"invalid_value","request_id":"req_1"}}"#
/// );
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    status: u16,
    error_type: Cow<'static, str>,
    code: Option<Cow<'static, str>>,
    param: Option<String>,
    message: String,
    provider: Option<String>,
    retryable: bool,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` with its default status, type, code and retryability.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                status: kind.status(),
                error_type: Cow::Borrowed(kind.error_type()),
                code: kind.default_code().map(Cow::Borrowed),
                param: None,
                message: message.into(),
                provider: None,
                retryable: kind.is_retryable(),
                retry_after: None,
                source: None,
            }),
        }
    }

    /// A 400 `invalid_request_error` with a code (`invalid_json`, `missing_required_parameter`,
    /// `invalid_type`, `invalid_value`) and the parameter it is about.
    pub fn invalid_request(
        code: &'static str,
        param: Option<String>,
        message: impl Into<String>,
    ) -> Error {
        let mut err = Error::new(ErrorKind::InvalidRequest, message).with_code(code);
        err.inner.param = param;
        err
    }

    /// A 404 `model_not_found` about the request's `model`.
    pub fn model_not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::ModelNotFound, message).with_param("model")
    }

    /// A 500 `internal_error`.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// An error of a middleware's own making, e.g. a 429 `rate_limit_exceeded` or a 401
    /// for a bad client key. It is not retryable unless [`Error::with_retryable`] says so.
    pub fn custom(
        status: u16,
        error_type: impl Into<Cow<'static, str>>,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Error {
        let mut err = Error::new(ErrorKind::Custom, message);
        err.inner.status = status;
        err.inner.error_type = error_type.into();
        err.inner.code = code.map(Cow::Borrowed);
        err
    }

    /// Sets the `code`.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Error {
        self.inner.code = Some(code.into());
        self
    }

    /// Sets the `param`.
    pub fn with_param(mut self, param: impl Into<String>) -> Error {
        self.inner.param = Some(param.into());
        self
    }

    /// Records which provider the error came from.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Error {
        self.inner.provider = Some(provider.into());
        self
    }

    /// Overrides whether a retry may help.
    pub fn with_retryable(mut self, retryable: bool) -> Error {
        self.inner.retryable = retryable;
        self
    }

    /// How long the provider asked us to wait (its `Retry-After`).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Error {
        self.inner.retry_after = Some(retry_after);
        self
    }

    /// Attaches the underlying cause (kept for logs, never shown to clients).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.inner.status
    }

    /// The OpenAI error `type`.
    pub fn error_type(&self) -> &str {
        &self.inner.error_type
    }

    /// The `code`, if any.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// The `param`, if any.
    pub fn param(&self) -> Option<&str> {
        self.inner.param.as_deref()
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The provider the error came from, if it came from one.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }

    /// How long the provider asked us to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The OpenAI-shaped body: `{"error":{"message","type","param","code","request_id"}}`.
    pub fn body(&self, request_id: Option<&str>) -> serde_json::Value {
        serde_json::to_value(ErrorBody::new(self, request_id)).expect("an error body serializes")
    }
}

/// The OpenAI-shaped error body, borrowing from an [`Error`]; serialize it with serde.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    error_type: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    /// The body of `error`, with the request id when there is one.
    pub fn new(error: &'a Error, request_id: Option<&'a str>) -> ErrorBody<'a> {
        ErrorBody {
            error: ErrorObject {
                message: error.message(),
                error_type: error.error_type(),
                param: error.param(),
                code: error.code(),
                request_id,
            },
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut s = f.debug_struct("Error");
        s.field("kind", &inner.kind)
            .field("status", &inner.status)
            .field("type", &inner.error_type)
            .field("code", &inner.code)
            .field("param", &inner.param)
            .field("message", &inner.message);
        if let Some(provider) = &inner.provider {
            s.field("provider", provider);
        }
        if let Some(source) = &inner.source {
            s.field("source", &source.to_string());
        }
        s.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
