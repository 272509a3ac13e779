//! [`HttpClient`]: the pooled HTTP client every provider shares, on hyper with rustls.
//!
//! Built on hyper's connections directly rather than a general-purpose client: a provider call
//! is always a POST to a URL parsed once at start-up, with no redirects or cookies (outbound
//! proxies, when configured, are [`Proxies`](crate::Proxies)). reqwest's general-purpose layers
//! (URL re-parsing, redirect policy, retry layer) cost about a fifth of SLLMP's instructions
//! per request, and hyper-util's pooled client another tenth (a hashed pool lookup per request,
//! and a task spawned per request to return the connection); see docs/benchmarks.md. Here each
//! origin has its own [`Pool`](crate::pool), which a provider holds as an [`Endpoint`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::header::{HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, Sleep};

use crate::HttpSettings;
use crate::pool::{Lease, Pool, Shared};
use crate::proxy::Connector;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The shared, connection-pooled HTTP client (HTTP/1.1, HTTP/2 by ALPN when
/// [`HttpSettings::http2`] is on; TLS by rustls with the platform's certificate
/// verifier). Clones share the pool.
#[derive(Clone)]
pub struct HttpClient {
    shared: Arc<Shared>,
    /// One pool per origin; a handful at most (one per configured provider base URL).
    pools: Arc<Mutex<Vec<Arc<Pool>>>>,
    read_timeout: Duration,
    max_body_bytes: usize,
    max_event_bytes: usize,
    user_agent: HeaderValue,
}

/// The time limits of one exchange ([`Endpoint::post_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// A new connection must be made within this (besides the client's connect timeout).
    pub connect: Option<Duration>,
    /// The response head must arrive within this.
    pub head: Option<Duration>,
    /// The whole exchange, body included, must end within this.
    pub total: Option<Duration>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `settings`. Build it once and clone it.
    ///
    /// Where the platform's certificate verifier cannot be set up (no usable root store),
    /// the client is still made, an error is logged, and every `https://` call fails with a
    /// TLS error naming the problem; `http://` upstreams work.
    pub fn new(settings: &HttpSettings) -> HttpClient {
        HttpClient::with_tls(settings, tls_config())
    }

    /// A client that verifies upstream certificates with `tls` instead of the platform's
    /// verifier: for upstreams behind a private certificate authority, or with client
    /// certificates. The client sets the ALPN protocols itself (`http/1.1`, and `h2` when
    /// [`HttpSettings::http2`] is on).
    pub fn with_tls(settings: &HttpSettings, tls: rustls::ClientConfig) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        let matcher = Arc::new(settings.proxies.matcher());
        let tcp = Connector {
            tcp: http,
            matcher: Arc::clone(&matcher),
            connect_timeout: settings.connect_timeout,
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1();
        let https = if settings.http2 {
            builder.enable_http2().wrap_connector(tcp)
        } else {
            builder.wrap_connector(tcp)
        };
        HttpClient {
            shared: Arc::new(Shared {
                connector: https,
                idle_timeout: settings.pool_idle_timeout,
                http2: settings.http2,
                matcher,
            }),
            pools: Arc::default(),
            read_timeout: settings.read_timeout,
            max_body_bytes: settings.max_body_bytes,
            max_event_bytes: settings.max_event_bytes,
            user_agent: HeaderValue::from_static(concat!("sllmp/", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// The endpoint `uri` (an absolute http(s) URL): requests to it share the pool of its
    /// origin with every other endpoint on the same scheme, host and port. Look it up once
    /// and keep it: [`Endpoint::post`] then finds its connections without a lookup.
    ///
    /// # Errors
    ///
    /// When `uri` has no scheme or host, or its host is not a valid `Host` header.
    pub fn endpoint(&self, uri: Uri) -> Result<Endpoint, InvalidUri> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = match pools.iter().find(|pool| pool.serves(&uri)) {
            Some(pool) => Arc::clone(pool),
            None => {
                let pool = Arc::new(Pool::new(&uri, Arc::clone(&self.shared)).ok_or(InvalidUri)?);
                pools.push(Arc::clone(&pool));
                pool
            }
        };
        Ok(Endpoint {
            uri,
            pool,
            read_timeout: self.read_timeout,
            max_body_bytes: self.max_body_bytes,
            max_event_bytes: self.max_event_bytes,
            user_agent: self.user_agent.clone(),
        })
    }

    /// POSTs `body` to `uri` with `headers` (see [`Endpoint::post`]); for a URL used once.
    /// A provider calling the same URL again keeps an [`Endpoint`] instead.
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, TransportError> {
        let endpoint = self
            .endpoint(uri)
            .map_err(|err| TransportError::new(TransportErrorKind::Connect, err))?;
        endpoint.post(headers, body, timeout).await
    }
}

/// A URL that is not absolute http(s) with a host (see [`HttpClient::endpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUri;

impl fmt::Display for InvalidUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an absolute http(s) URL with a host")
    }
}

impl std::error::Error for InvalidUri {}

/// One URL of an upstream and the connection pool of its origin ([`HttpClient::endpoint`]).
#[derive(Clone)]
pub struct Endpoint {
    uri: Uri,
    pool: Arc<Pool>,
    read_timeout: Duration,
    max_body_bytes: usize,
    max_event_bytes: usize,
    user_agent: HeaderValue,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The same URL with another path and query (`/v1/embeddings` beside
    /// `/v1/chat/completions`), sharing the pool.
    pub fn with_path(&self, path_and_query: &str) -> Result<Endpoint, InvalidUri> {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| InvalidUri)?);
        let uri = Uri::from_parts(parts).map_err(|_| InvalidUri)?;
        Ok(Endpoint {
            uri,
            ..self.clone()
        })
    }

    /// POSTs `body` with `headers`; resolves with the response head.
    ///
    /// With `timeout`, the whole exchange (connecting, head and body) must end within it;
    /// without, only silences longer than the read timeout fail it (streams).
    pub async fn post(
        &self,
        headers: HeaderMap,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, TransportError> {
        let limits = Limits {
            total: timeout,
            ..Limits::default()
        };
        self.post_with(headers, body, limits).await
    }

    /// POSTs `body` with `headers` within `limits`; resolves with the response head.
    ///
    /// The head must arrive within `limits.head` and `limits.total`; the body (read with
    /// [`HttpResponse::bytes`]) by the end of `limits.total`. Without a total, only silences
    /// longer than the read timeout fail it (streams).
    pub async fn post_with(
        &self,
        mut headers: HeaderMap,
        body: Bytes,
        limits: Limits,
    ) -> Result<HttpResponse, TransportError> {
        let timeout = limits.total;
        headers
            .entry(USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        let now = Instant::now();
        let deadline = now + timeout.unwrap_or(self.read_timeout);
        let head_deadline = limits
            .head
            .map_or(deadline, |head| (now + head).min(deadline));
        let (response, lease) =
            match tokio::time::timeout_at(head_deadline, self.pool.send(request, limits.connect))
                .await
            {
                Ok(sent) => sent?,
                Err(_) => return Err(TransportError::timed_out()),
            };
        let (head, body) = response.into_parts();
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body,
            lease,
            deadline: timeout.map(|_| deadline),
            read_timeout: self.read_timeout,
            max_body_bytes: self.max_body_bytes,
            max_event_bytes: self.max_event_bytes,
        })
    }
}

/// The rustls configuration: the platform's verifier and aws-lc-rs (the connector sets
/// ALPN for the protocols enabled).
fn tls_config() -> rustls::ClientConfig {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions");
    match builder.clone().with_platform_verifier() {
        Ok(builder) => builder.with_no_client_auth(),
        Err(err) => {
            tracing::error!(
                error = %err,
                "the platform's TLS certificate store is unusable: https:// upstreams will fail \
                 (install the system CA certificates, or build the client with HttpClient::with_tls)"
            );
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    }
}

/// A response whose head has arrived; read its body with [`bytes`](Self::bytes) or
/// [`into_stream`](Self::into_stream).
pub struct HttpResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    /// The connection, back to its pool once the body was read to its end.
    lease: Option<Lease>,
    deadline: Option<Instant>,
    read_timeout: Duration,
    max_body_bytes: usize,
    max_event_bytes: usize,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl HttpResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body, within the request's timeout (or the read timeout), and at most
    /// [`HttpSettings::max_body_bytes`] long ([`TransportErrorKind::TooLarge`] over it: a
    /// broken upstream cannot grow the proxy's memory without bound).
    pub async fn bytes(self) -> Result<Bytes, TransportError> {
        let deadline = self
            .deadline
            .unwrap_or_else(|| Instant::now() + self.read_timeout);
        let limit = self.max_body_bytes;
        let declared = self
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(TransportError::too_large(limit));
        }
        let limited = http_body_util::Limited::new(self.body, limit);
        match tokio::time::timeout_at(deadline, limited.collect()).await {
            Ok(Ok(collected)) => {
                if let Some(lease) = self.lease {
                    lease.release();
                }
                Ok(collected.to_bytes())
            }
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                Err(TransportError::too_large(limit))
            }
            Ok(Err(err)) => Err(TransportError::new(TransportErrorKind::Body, err)),
            Err(_) => Err(TransportError::timed_out()),
        }
    }

    /// The body as server-sent events, each at most [`HttpSettings::max_event_bytes`].
    pub fn into_events(self) -> crate::sse::SseStream<BodyStream> {
        let limit = self.max_event_bytes;
        crate::sse::SseStream::with_limit(self.into_stream(), limit)
    }

    /// The body as it arrives; a silence longer than the read timeout ends it with an error.
    pub fn into_stream(self) -> BodyStream {
        BodyStream {
            body: self.body,
            lease: self.lease,
            idle: Box::pin(tokio::time::sleep(self.read_timeout)),
            read_timeout: self.read_timeout,
        }
    }
}

/// A response body's data frames (see [`HttpResponse::into_stream`]).
///
/// Dropped before its end, it closes its connection: for a stream, that is how the upstream
/// learns to stop generating. When the protocol's own end marker has arrived (OpenAI's
/// `data: [DONE]`) call [`finish`](Self::finish) instead, so the connection is kept.
pub struct BodyStream {
    body: Incoming,
    lease: Option<Lease>,
    idle: Pin<Box<Sleep>>,
    read_timeout: Duration,
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyStream").finish_non_exhaustive()
    }
}

/// At most this much of a body is read after [`BodyStream::finish`] to keep its connection.
const FINISH_MAX_BYTES: usize = 64 * 1024;
/// And for at most this long.
const FINISH_MAX_WAIT: Duration = Duration::from_secs(5);

impl BodyStream {
    /// The caller needs nothing more from this body: its end marker arrived. Whatever is
    /// left of it (usually just HTTP's end-of-body) is read and discarded, in a task of its
    /// own if it has not arrived yet (at most 64 KiB, for at most 5 s), so the connection goes
    /// back to its pool instead of being closed.
    pub fn finish(mut self) {
        let Some(lease) = self.lease.take() else {
            return; // HTTP/2, or the end was already read
        };
        let mut body = self.body;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Usually the end is already here: no task needed.
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(None) => return lease.release(),
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_))) => return,
                Poll::Pending => break,
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drained = tokio::time::timeout(FINISH_MAX_WAIT, async {
                let mut read = 0;
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { return false };
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > FINISH_MAX_BYTES {
                        return false;
                    }
                }
                true
            })
            .await;
            if drained == Ok(true) {
                lease.release();
            }
        });
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + self.read_timeout;
                    self.idle.as_mut().reset(deadline);
                    // Trailers carry nothing a provider needs.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    return Poll::Ready(Some(Err(TransportError::new(
                        TransportErrorKind::Body,
                        err,
                    ))));
                }
                Poll::Ready(None) => {
                    if let Some(lease) = self.lease.take() {
                        lease.release();
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(self.idle.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(TransportError::timed_out())));
                }
            }
        }
    }
}

/// What went wrong talking to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No connection: refused, unresolvable host, TLS handshake, connect timeout.
    Connect,
    /// The request could not be sent or the response head was malformed.
    Request,
    /// The connection broke while the body was read.
    Body,
    /// No answer (or no next chunk) in time.
    Timeout,
    /// The answer (or one event of a stream) is over the size limit.
    TooLarge,
}

/// A transport failure: its kind, and the underlying error (hyper's) as its `source`.
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: Option<BoxError>,
}

impl TransportError {
    pub(crate) fn new(kind: TransportErrorKind, source: impl Into<BoxError>) -> TransportError {
        TransportError {
            kind,
            source: Some(source.into()),
        }
    }

    pub(crate) fn timed_out() -> TransportError {
        TransportError {
            kind: TransportErrorKind::Timeout,
            source: None,
        }
    }

    /// No connection within the call's connect timeout.
    pub(crate) fn connect_timed_out() -> TransportError {
        TransportError::new(
            TransportErrorKind::Connect,
            "no connection within the connect timeout",
        )
    }

    /// A body or stream event over `limit` bytes.
    pub fn too_large(limit: usize) -> TransportError {
        TransportError::new(
            TransportErrorKind::TooLarge,
            format!("larger than the limit of {limit} bytes"),
        )
    }

    /// The kind of failure.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            TransportErrorKind::Connect => "connection failed",
            TransportErrorKind::Request => "request failed",
            TransportErrorKind::Body => "response body broke off",
            TransportErrorKind::Timeout => "no answer within the timeout",
            TransportErrorKind::TooLarge => "answer too large",
        })
    }
}

impl From<crate::sse::EventTooLarge> for TransportError {
    fn from(err: crate::sse::EventTooLarge) -> TransportError {
        TransportError::too_large(err.limit)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|err| err as &(dyn std::error::Error + 'static))
    }
}
