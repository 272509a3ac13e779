//! The OpenAI chat-completions provider, for OpenAI and every OpenAI-compatible server.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::Uri;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sllmp_core::{
    Call, ChatChunk, ChatCompletion, ChunkStream, Completion, Embeddings, EmbeddingsRequest, Error,
    ErrorKind, Extra, JsonMap, Provider, Secret, UpstreamRequest,
};

use crate::client::{BodyStream, Endpoint, HttpClient, HttpResponse, Limits};
use crate::http::{status_error, transport_error};
use crate::sse::SseStream;

/// OpenAI's API base.
pub const DEFAULT_API_BASE: &str = "https://api.openai.com/v1";

/// Settings of one OpenAI (or OpenAI-compatible) provider.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API base, `https://api.openai.com/v1` by default; `/chat/completions` is appended.
    pub api_base: String,
    /// The API key, sent as `Authorization: Bearer`.
    pub api_key: Option<Secret>,
    /// Sent as `OpenAI-Organization`.
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project`.
    pub project: Option<String>,
    /// Extra headers sent with every call.
    pub headers: Vec<(String, Secret)>,
    /// The longest a non-streamed call to this provider may take (the attempt's own deadline,
    /// `timeouts.total`, applies too: the sooner wins). Streams are bounded by the pipeline.
    pub timeout: Duration,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            api_base: DEFAULT_API_BASE.to_string(),
            api_key: None,
            organization: None,
            project: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(600),
        }
    }
}

impl OpenAiConfig {
    /// Reads the options of a configured provider (`api_base`, `organization`, `project`,
    /// `headers`, `timeout` in seconds). An unknown option is an error naming it.
    pub fn from_options(
        options: &JsonMap,
        api_key: Option<Secret>,
    ) -> Result<OpenAiConfig, String> {
        let mut config = OpenAiConfig {
            api_key,
            ..OpenAiConfig::default()
        };
        for (key, value) in options {
            let string = || {
                value
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key}: expected a string"))
            };
            match key.as_str() {
                "api_base" | "base_url" => {
                    let base = string()?;
                    if http_uri(&base).is_none() {
                        return Err(format!("{key}: \"{base}\" is not an http(s) URL"));
                    }
                    config.api_base = base;
                }
                "organization" => config.organization = Some(string()?),
                "project" => config.project = Some(string()?),
                "timeout" => {
                    let secs = value
                        .as_f64()
                        .filter(|s| *s > 0.0)
                        .ok_or_else(|| format!("{key}: expected a positive number of seconds"))?;
                    config.timeout = Duration::from_secs_f64(secs);
                }
                "headers" => {
                    let map = value.as_object().ok_or_else(|| {
                        format!("{key}: expected a map of header names to values")
                    })?;
                    for (name, value) in map {
                        let value = value
                            .as_str()
                            .ok_or_else(|| format!("{key}.{name}: expected a string"))?;
                        HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| format!("{key}.{name}: not a valid header name"))?;
                        HeaderValue::from_str(value)
                            .map_err(|_| format!("{key}.{name}: not a valid header value"))?;
                        config.headers.push((name.clone(), Secret::new(value)));
                    }
                }
                other => {
                    return Err(format!(
                        "{other}: unknown option for an openai provider; known options: api_base, organization, project, headers, timeout"
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// A provider speaking OpenAI's API: chat completions (`{api_base}/chat/completions`) and
/// embeddings (`{api_base}/embeddings`).
#[derive(Debug)]
pub struct OpenAi {
    name: String,
    url: String,
    /// `url`, parsed once, with its origin's connection pool; `None` if it is not an
    /// http(s) URL (every call then fails, naming it).
    endpoint: Option<Endpoint>,
    /// `{api_base}/embeddings`, on the same pool.
    embeddings: Option<Endpoint>,
    key: Option<Secret>,
    /// Headers sent with every call; marked sensitive so they never print.
    headers: HeaderMap,
    timeout: Duration,
}

impl OpenAi {
    /// A provider called `name`, sending through `client` (share one client between all
    /// providers: it holds the connection pool).
    pub fn new(name: impl Into<String>, config: OpenAiConfig, client: HttpClient) -> OpenAi {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &config.api_key
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut optional = |name: &'static str, value: &Option<String>| {
            if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        };
        optional("openai-organization", &config.organization);
        optional("openai-project", &config.project);
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let base = config.api_base.trim_end_matches('/');
        let url = format!("{base}/chat/completions");
        let endpoint = http_uri(&url).and_then(|uri| client.endpoint(uri).ok());
        let embeddings =
            http_uri(&format!("{base}/embeddings")).and_then(|uri| client.endpoint(uri).ok());
        OpenAi {
            name: name.into(),
            endpoint,
            embeddings,
            url,
            key: config.api_key.filter(|k| !k.is_empty()),
            headers,
            timeout: config.timeout,
        }
    }

    /// The chat-completions URL this provider posts to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` to `endpoint` within the call's limits; a non-success answer is its
    /// error.
    async fn send(
        &self,
        call: &Call<'_>,
        endpoint: Option<&Endpoint>,
        body: bytes::Bytes,
        stream: bool,
    ) -> Result<HttpResponse, Error> {
        if self.key.is_none() && self.url.starts_with(DEFAULT_API_BASE) {
            return Err(Error::new(
                ErrorKind::ProviderAuthentication,
                format!(
                    "no API key for provider '{0}': set OPENAI_API_KEY or provider_api_keys.{0} in the configuration",
                    self.name
                ),
            )
            .with_provider(&self.name));
        }
        let Some(endpoint) = endpoint else {
            return Err(Error::new(
                ErrorKind::ProviderUnreachable,
                format!(
                    "provider '{}' has an invalid api_base: \"{}\" is not an http(s) URL",
                    self.name, self.url
                ),
            )
            .with_provider(&self.name));
        };
        let mut headers = self.headers.clone();
        for (name, value) in call.headers {
            headers.insert(name, value.clone());
        }
        let (head, left) = call.limits();
        let limits = Limits {
            connect: call.connect_timeout,
            head,
            // A stream's length is bounded by the pipeline, chunk by chunk.
            total: (!stream).then(|| left.map_or(self.timeout, |left| left.min(self.timeout))),
        };
        let response = endpoint
            .post_with(headers, body, limits)
            .await
            .map_err(|e| transport_error(&self.name, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        Err(status_error(
            &self.name,
            status,
            &headers,
            &body,
            self.key.as_ref(),
        ))
    }

    /// A 200 answer whose body is an error object: mapped as the status it names (its
    /// `code` or `status`, when a number), else as a 502 from the provider.
    fn error_in_success(&self, extra: &Extra, body: &[u8]) -> Option<Error> {
        let error = extra.get("error")?;
        let status = ["code", "status"]
            .iter()
            .find_map(|key| error.get(key).and_then(Value::as_u64))
            .and_then(|code| u16::try_from(code).ok())
            .and_then(|code| http::StatusCode::from_u16(code).ok())
            .filter(|status| status.is_client_error() || status.is_server_error())
            .unwrap_or(http::StatusCode::BAD_GATEWAY);
        Some(status_error(
            &self.name,
            status,
            &HeaderMap::new(),
            body,
            self.key.as_ref(),
        ))
    }

    fn invalid(&self, what: &str, err: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::ProviderInvalidResponse,
            format!("{} sent an invalid {what}: {err}", self.name),
        )
        .with_provider(&self.name)
    }
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn enforces_deadlines(&self) -> bool {
        true // the head by `head_timeout`, the body by the deadline (`send`)
    }

    async fn chat(&self, call: &Call<'_>, req: &UpstreamRequest<'_>) -> Result<Completion, Error> {
        // The client's bytes with the routed fields rewritten, when no middleware changed
        // the request; else the request encoded.
        let response = self
            .send(call, self.endpoint.as_ref(), req.to_json(), false)
            .await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&self.name, e))?;
        // OpenAI's own format: the client gets these bytes unless a middleware rewrites them.
        let completion = Completion::from_json(body).map_err(|e| self.invalid("completion", e))?;
        if completion.choices.is_empty()
            && let Some(wire) = completion.wire()
            && let Some(err) = self.error_in_success(&completion.extra, wire)
        {
            return Err(err);
        }
        Ok(completion)
    }

    async fn embeddings(
        &self,
        call: &Call<'_>,
        req: &EmbeddingsRequest,
    ) -> Result<Embeddings, Error> {
        let body = serde_json::to_vec(req).expect("an embeddings request always serializes");
        let response = self
            .send(call, self.embeddings.as_ref(), body.into(), false)
            .await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&self.name, e))?;
        let answer = Embeddings::from_json(body.clone())
            .map_err(|e| self.invalid("embeddings answer", e))?;
        if answer.data.is_empty()
            && let Some(err) = self.error_in_success(&answer.extra, &body)
        {
            return Err(err);
        }
        Ok(answer)
    }

    async fn chat_stream(
        &self,
        call: &Call<'_>,
        req: &UpstreamRequest<'_>,
    ) -> Result<ChunkStream, Error> {
        let response = self
            .send(call, self.endpoint.as_ref(), req.to_json(), true)
            .await?;
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            // Some OpenAI-compatible servers ignore `stream`; answer with chunks anyway.
            let body = response
                .bytes()
                .await
                .map_err(|e| transport_error(&self.name, e))?;
            let completion: ChatCompletion =
                serde_json::from_slice(&body).map_err(|e| self.invalid("completion", e))?;
            if completion.choices.is_empty()
                && let Some(err) = self.error_in_success(&completion.extra, &body)
            {
                return Err(err);
            }
            let chunks = completion.to_chunks(true);
            return Ok(futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed());
        }
        Ok(Box::pin(Chunks {
            events: Some(response.into_events()),
            provider: self.name.clone(),
        }))
    }
}

/// The chunks of an OpenAI stream: one per `data:` event, until `data: [DONE]`.
///
/// `[DONE]` ends the stream even if the body goes on; what follows it is read in the
/// background so the connection can be reused ([`BodyStream::finish`]). A body that ends
/// before `[DONE]` is a truncated answer: the stream ends with an error, never as if it
/// were complete.
struct Chunks {
    /// `None` once `[DONE]` arrived.
    events: Option<SseStream<BodyStream>>,
    provider: String,
}

impl Stream for Chunks {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(events).poll_next(cx)) {
            None => {
                this.events = None;
                Poll::Ready(Some(Err(truncated(&this.provider))))
            }
            Some(Err(err)) => {
                this.events = None;
                Poll::Ready(Some(Err(transport_error(&this.provider, err))))
            }
            Some(Ok(event)) if event.data == "[DONE]" => {
                if let Some(events) = this.events.take() {
                    events.into_inner().finish();
                }
                Poll::Ready(None)
            }
            Some(Ok(event)) => Poll::Ready(Some(parse_chunk(&this.provider, &event.data))),
        }
    }
}

/// The error of a stream that ended before its end marker.
pub(crate) fn truncated(provider: &str) -> Error {
    Error::new(
        ErrorKind::ProviderInvalidResponse,
        format!("{provider}: the provider's stream ended before it was complete"),
    )
    .with_provider(provider)
}

/// `text` as a URI if it is an absolute http(s) URL.
fn http_uri(text: &str) -> Option<Uri> {
    let uri: Uri = text.parse().ok()?;
    let http = matches!(uri.scheme_str(), Some("http" | "https"));
    (http && uri.authority().is_some()).then_some(uri)
}

/// One `data:` payload: a chunk, or the error object OpenAI sends mid-stream.
fn parse_chunk(provider: &str, data: &str) -> Result<ChatChunk, Error> {
    let mut chunk = ChatChunk::from_json(data).map_err(|e| {
        Error::new(
            ErrorKind::ProviderInvalidResponse,
            format!("{provider} sent an invalid stream chunk: {e}"),
        )
        .with_provider(provider)
    })?;
    if let Some(error) = chunk.extra.remove("error") {
        let message = match &error {
            Value::String(s) => s.clone(),
            other => other
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string(),
        };
        return Err(Error::new(
            ErrorKind::ProviderUnavailable,
            format!("{provider} failed mid-stream: {message}"),
        )
        .with_provider(provider));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let options: JsonMap = serde_json::from_str(
            r#"{"api_base":"http://localhost:1/v1","organization":"org","headers":{"x-a":"b"},"timeout":5}"#,
        )
        .unwrap();
        let config = OpenAiConfig::from_options(&options, None).unwrap();
        assert_eq!(config.api_base, "http://localhost:1/v1");
        assert_eq!(config.timeout, Duration::from_secs(5));

        let options: JsonMap = serde_json::from_str(r#"{"api_version":"1"}"#).unwrap();
        assert_eq!(
            OpenAiConfig::from_options(&options, None).unwrap_err(),
            "api_version: unknown option for an openai provider; known options: api_base, organization, project, headers, timeout"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let provider = OpenAi::new(
            "openai",
            OpenAiConfig {
                api_key: Some(Secret::new("sk-very-secret")),
                ..OpenAiConfig::default()
            },
            HttpClient::new(&crate::HttpSettings::default()),
        );
        let debug = format!("{provider:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
    }

    #[test]
    fn mid_stream_errors_become_errors() {
        let err = parse_chunk(
            "openai",
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(err.message(), "openai failed mid-stream: overloaded");
    }
}
