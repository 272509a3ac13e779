//! The one HTTP client every provider shares, and the mapping of upstream failures onto
//! [`sllmp_core::ErrorKind`].

use std::time::Duration;

use http::StatusCode;
use http::header::HeaderMap;
use serde_json::Value;
use sllmp_core::{Error, ErrorKind, Secret};

use crate::client::{HttpClient, TransportError, TransportErrorKind};
use crate::proxy::{Proxies, ProxyError};

/// Connection settings of the shared client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response (between two stream chunks, or before the
    /// first byte of a non-streamed answer).
    pub read_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Allow HTTP/2 with servers that offer it. Off by default: HTTP/2 multiplexes every
    /// request to a host over one connection, and LLM streams last long enough to exhaust
    /// its concurrent-stream limit (about 100), after which new requests queue. HTTP/1.1
    /// uses a pool of connections instead.
    pub http2: bool,
    /// Outbound proxies ([`Proxies`]). The default reads them from `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, as curl does.
    pub proxies: Proxies,
    /// The largest non-streamed answer read from an upstream: 64 MiB (a large batch of
    /// embeddings fits). Over it, the call fails with a 502 `provider_invalid_response`.
    pub max_body_bytes: usize,
    /// The largest single event (line) of an upstream stream: 4 MiB. Over it, the stream
    /// ends with a 502 `provider_invalid_response`.
    pub max_event_bytes: usize,
}

impl Default for HttpSettings {
    /// The defaults, with the outbound proxies of the environment. An unusable proxy
    /// variable is logged as an error and ignored (calls then go direct);
    /// [`HttpSettings::from_env`] refuses it instead, as a server should at start-up.
    fn default() -> Self {
        let proxies = Proxies::from_env().unwrap_or_else(|err| {
            tracing::error!("{err}; ignoring the outbound proxy variables");
            Proxies::default()
        });
        HttpSettings {
            proxies,
            ..HttpSettings::direct()
        }
    }
}

impl HttpSettings {
    /// The defaults with no outbound proxy, whatever the environment says.
    pub fn direct() -> HttpSettings {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            http2: false,
            proxies: Proxies::default(),
            max_body_bytes: 64 * 1024 * 1024,
            max_event_bytes: 4 * 1024 * 1024,
        }
    }

    /// The defaults, with the outbound proxies the environment names
    /// ([`Proxies::from_env`]): what a server binary should use.
    ///
    /// # Errors
    ///
    /// When a proxy variable holds an unusable URL; the error names the variable.
    pub fn from_env() -> Result<HttpSettings, ProxyError> {
        Ok(HttpSettings {
            proxies: Proxies::from_env()?,
            ..HttpSettings::direct()
        })
    }
}

/// Builds the connection-pooled client providers share ([`HttpClient::new`]). Build it
/// once and clone it: a clone shares the pool.
pub fn http_client(settings: &HttpSettings) -> HttpClient {
    HttpClient::new(settings)
}

/// The error for an upstream answer with a non-success `status`.
///
/// The message names the provider and quotes the upstream's own message
/// (`openai returned 429: Rate limit reached ...`), with `key` scrubbed from it.
pub fn status_error(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    key: Option<&Secret>,
) -> Error {
    let upstream = UpstreamError::parse(body);
    let mut message = format!(
        "{provider} returned {}: {}",
        status.as_u16(),
        upstream.message
    );
    if let Some(key) = key.filter(|k| k.expose().len() >= 8) {
        message = message.replace(key.expose(), "[REDACTED]");
    }
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::ProviderAuthentication,
        404 => ErrorKind::ProviderModelNotFound,
        408 => ErrorKind::ProviderTimeout,
        429 => ErrorKind::ProviderRateLimited,
        400..=499 => ErrorKind::ProviderBadRequest,
        500..=599 => ErrorKind::ProviderUnavailable,
        _ => ErrorKind::ProviderInvalidResponse,
    };
    let mut err = Error::new(kind, message).with_provider(provider);
    if kind == ErrorKind::ProviderBadRequest {
        if let Some(code) = upstream.code {
            err = err.with_code(code);
        }
        if let Some(param) = upstream.param {
            err = err.with_param(param);
        }
    }
    if let Some(retry_after) = retry_after(headers) {
        err = err.with_retry_after(retry_after);
    }
    err
}

/// The error for a transport failure talking to `provider`.
pub fn transport_error(provider: &str, err: TransportError) -> Error {
    let (kind, what) = match err.kind() {
        TransportErrorKind::Timeout => (ErrorKind::ProviderTimeout, "timed out"),
        TransportErrorKind::Connect => (ErrorKind::ProviderUnreachable, "could not be reached"),
        TransportErrorKind::Body => (ErrorKind::ProviderUnreachable, "broke off its answer"),
        TransportErrorKind::Request => (ErrorKind::ProviderUnreachable, "failed"),
        TransportErrorKind::TooLarge => (
            ErrorKind::ProviderInvalidResponse,
            "sent an answer over the size limit",
        ),
    };
    // hyper's messages name neither a URL nor a header: safe to keep as the source.
    Error::new(kind, format!("{provider} {what}: {}", error_chain(&err)))
        .with_provider(provider)
        .with_source(err)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The wait a `retry-after-ms`, or a `Retry-After` (seconds, or an HTTP date), header asks
/// for. A date in the past is no wait; a value that is not a number or a date is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, std::time::SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let seconds = |secs: f64| {
        secs.is_finite()
            .then(|| Duration::try_from_secs_f64(secs.max(0.0)).ok())
            .flatten()
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let value = header("retry-after")?;
    match value.parse::<f64>() {
        Ok(secs) => seconds(secs),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            Some(date.duration_since(now).unwrap_or(Duration::ZERO))
        }
    }
}

/// The parts of an upstream error body worth passing on.
struct UpstreamError {
    message: String,
    code: Option<String>,
    param: Option<String>,
}

impl UpstreamError {
    fn parse(body: &[u8]) -> UpstreamError {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Ok(value) = serde_json::from_slice::<Value>(body) {
            let error = value.get("error").unwrap_or(&value);
            let message = match error {
                Value::String(s) => Some(s.clone()),
                _ => error.get("message").and_then(text),
            };
            if let Some(message) = message {
                return UpstreamError {
                    message,
                    code: error.get("code").and_then(text),
                    param: error.get("param").and_then(text),
                };
            }
        }
        let raw = String::from_utf8_lossy(body);
        let raw = raw.trim();
        UpstreamError {
            message: if raw.is_empty() {
                "(empty body)".to_string()
            } else {
                raw.chars().take(300).collect()
            },
            code: None,
            param: None,
        }
    }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, http::HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let at = |name, value| retry_after_at(&headers(name, value), now);
        assert_eq!(at("retry-after", "7"), Some(Duration::from_secs(7)));
        assert_eq!(
            at("retry-after", " 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            at("retry-after-ms", "250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            at("retry-after", "Wed, 21 Oct 2026 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at("retry-after", "Wed, 21 Oct 2026 07:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(at("retry-after", "soon"), None);
        // Never a panic on what a provider sends.
        assert_eq!(at("retry-after", "inf"), None);
        assert_eq!(at("retry-after", "NaN"), None);
        assert_eq!(at("retry-after", "-3"), Some(Duration::ZERO));
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    fn check(status: u16, body: &str) -> (u16, String, Option<String>, String) {
        let err = status_error(
            "openai",
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            Some(&Secret::new("sk-secret-123456")),
        );
        (
            err.status(),
            err.error_type().to_string(),
            err.code().map(str::to_string),
            err.message().to_string(),
        )
    }

    #[test]
    fn maps_every_upstream_status_class() {
        let body = r#"{"error":{"message":"nope","type":"x","code":"bad_thing","param":"p"}}"#;
        assert_eq!(
            check(400, body),
            (
                400,
                "provider_bad_request".into(),
                Some("bad_thing".into()),
                "openai returned 400: nope".into()
            )
        );
        assert_eq!(check(401, body).0, 401);
        assert_eq!(check(403, body).1, "authentication_error");
        assert_eq!(check(404, body).1, "model_not_found_error");
        assert_eq!(check(429, body).1, "provider_rate_limit_error");
        assert_eq!(check(500, body).1, "service_unavailable_error");
        assert_eq!(check(529, body).0, 503);
        assert_eq!(check(408, body).0, 504);
    }

    #[test]
    fn scrubs_the_key_from_upstream_messages() {
        let (_, _, _, message) = check(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-123456"}}"#,
        );
        assert_eq!(
            message,
            "openai returned 401: Incorrect API key provided: [REDACTED]"
        );
    }

    #[test]
    fn quotes_non_json_bodies() {
        assert_eq!(
            check(502, "Bad Gateway\n").3,
            "openai returned 502: Bad Gateway"
        );
        assert_eq!(check(503, "").3, "openai returned 503: (empty body)");
    }

    #[test]
    fn reads_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
    }
}
