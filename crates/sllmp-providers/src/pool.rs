//! Connections to one origin (scheme, host and port), kept open between requests.
//!
//! A [`Pool`] lends an HTTP/1.1 connection to one request at a time and takes it back when the
//! response has been read to its end (a response abandoned half-read closes its connection:
//! HTTP/1.1 cannot skip the rest). With HTTP/2 negotiated, one connection is shared by every
//! request (those arriving while it is being made wait for it). Providers hold their origin's
//! pool (an [`Endpoint`]), so a request finds it without a lookup; idle connections are reused
//! newest first, and dropped when the upstream has closed them or when they have been idle
//! longer than the idle timeout (a task per pool closes those while there are idle connections,
//! so a pool left alone after a burst does not keep its connections open).
//!
//! [`Endpoint`]: crate::Endpoint

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

use crate::client::{BoxError, TransportError, TransportErrorKind};
use crate::proxy::Connector;

/// What every pool of a client shares: how to connect, and for how long to keep idle
/// connections.
pub(crate) struct Shared {
    pub(crate) connector: HttpsConnector<Connector>,
    pub(crate) idle_timeout: Duration,
    /// Whether HTTP/2 is offered (ALPN) to `https://` origins.
    pub(crate) http2: bool,
    /// Which origins go through which proxy (`Proxies::matcher`).
    pub(crate) matcher: Arc<Matcher>,
}

/// The connections to one origin.
pub(crate) struct Pool {
    scheme: Scheme,
    authority: Authority,
    /// `scheme://authority/`, what the connector dials (an `http://` origin with a proxy:
    /// the proxy's).
    dial: Uri,
    /// The `Host` header of HTTP/1.1 requests.
    host: HeaderValue,
    /// An `http://` origin reached through a proxy: requests keep their absolute target,
    /// with the proxy's credentials (`Proxy-Authorization`), if any.
    forward: Option<Forward>,
    /// Idle HTTP/1.1 connections, oldest first.
    idle: Mutex<VecDeque<Idle>>,
    /// The HTTP/2 connection, once one was negotiated.
    h2: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
    /// Whether the task closing connections idle past the timeout runs.
    reaping: AtomicBool,
    /// What the origin answered when HTTP/2 was offered: [`UNKNOWN`], [`HTTP1`] or
    /// [`HTTP2`]. While it may be HTTP/2, one request at a time connects (`h2_connecting`)
    /// and the others wait for that connection instead of opening their own.
    protocol: AtomicU8,
    h2_connecting: tokio::sync::Mutex<()>,
    shared: Arc<Shared>,
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

struct Forward {
    authorization: Option<HeaderValue>,
}

struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    since: Instant,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.dial)
            .field("idle", &lock(&self.idle).len())
            .finish_non_exhaustive()
    }
}

/// An HTTP/1.1 connection lent to one request; [`Lease::release`] gives it back once the
/// response has been read to its end. Dropped unreleased, it closes the connection.
pub(crate) struct Lease {
    sender: http1::SendRequest<Full<Bytes>>,
    pool: Arc<Pool>,
}

impl Lease {
    /// The response was read to its end: the connection can serve the next request.
    pub(crate) fn release(self) {
        self.pool.put(self.sender);
    }
}

enum Connected {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Pool {
    /// The pool of `uri`'s origin, or `None` when `uri` has no scheme or host.
    pub(crate) fn new(uri: &Uri, shared: Arc<Shared>) -> Option<Pool> {
        let scheme = uri.scheme()?.clone();
        let authority = uri.authority()?.clone();
        let mut dial = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        // `https://` origins with a proxy are tunnelled by the connector.
        let via = if scheme == Scheme::HTTP {
            shared.matcher.intercept(uri)
        } else {
            None
        };
        let forward = via.map(|via| {
            // `Proxy::parse` takes http:// proxies only.
            debug_assert_eq!(via.uri().scheme(), Some(&Scheme::HTTP));
            dial = via.uri().clone();
            Forward {
                authorization: via.basic_auth().cloned(),
            }
        });
        // Only `https://` origins negotiate HTTP/2 (ALPN); others are known HTTP/1.1.
        let protocol = if shared.http2 && scheme == Scheme::HTTPS {
            UNKNOWN
        } else {
            HTTP1
        };
        Some(Pool {
            protocol: AtomicU8::new(protocol),
            h2_connecting: tokio::sync::Mutex::new(()),
            scheme,
            authority,
            dial,
            host,
            forward,
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            reaping: AtomicBool::new(false),
            shared,
        })
    }

    /// Whether `uri` is on this pool's origin.
    pub(crate) fn serves(&self, uri: &Uri) -> bool {
        uri.scheme() == Some(&self.scheme)
            && uri.authority().map(Authority::as_str) == Some(self.authority.as_str())
    }

    /// Sends `request` (its URI absolute, on this origin) on an idle connection, or on a new
    /// one; resolves with the response head and, for HTTP/1.1, the connection's lease.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
        connect_timeout: Option<Duration>,
    ) -> Result<(Response<Incoming>, Option<Lease>), TransportError> {
        if let Some(h2) = self.h2_sender() {
            return send_h2(h2, request).await;
        }
        // An origin that may speak HTTP/2: one connection is enough, so requests wait for
        // the one being made (boxed: rare, and it holds a whole connect).
        if self.protocol.load(Ordering::Relaxed) != HTTP1
            && let Some(sent) = Box::pin(self.send_on_shared(&mut request, connect_timeout)).await
        {
            return sent;
        }
        // HTTP/1.1 writes the request target in origin form (absolute to a proxy), and
        // needs `Host`.
        let absolute = std::mem::take(request.uri_mut());
        match &self.forward {
            None => *request.uri_mut() = origin_form(&absolute),
            Some(forward) => {
                *request.uri_mut() = absolute.clone();
                if let Some(authorization) = &forward.authorization {
                    request
                        .headers_mut()
                        .insert(http::header::PROXY_AUTHORIZATION, authorization.clone());
                }
            }
        }
        request
            .headers_mut()
            .insert(http::header::HOST, self.host.clone());
        while let Some(mut sender) = self.take_idle() {
            if !sender.is_ready() && sender.ready().await.is_err() {
                continue; // closed by the upstream while it waited
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Some(self.lease(sender)))),
                Err(mut err) => match err.take_message() {
                    // Never written: the connection closed first. Try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(failed(err.into_error())),
                },
            }
        }
        // Boxed: connecting (TCP, TLS, handshake) is rare, and its future is large; inline,
        // every request's future would carry (and move) its size.
        match Box::pin(self.connect_within(connect_timeout)).await? {
            Connected::H1(mut sender) => {
                let response = sender.send_request(request).await.map_err(failed)?;
                Ok((response, Some(self.lease(sender))))
            }
            Connected::H2(mut sender) => {
                request.headers_mut().remove(http::header::HOST);
                *request.uri_mut() = absolute;
                let response = sender.send_request(request).await.map_err(failed)?;
                Ok((response, None))
            }
        }
    }

    /// Sends `request` on the origin's HTTP/2 connection, made here unless another request
    /// is making it (then waited for); `None` (with `request` untouched) when the origin
    /// turned out to speak HTTP/1.1 only (the connection made is left idle in the pool).
    async fn send_on_shared(
        self: &Arc<Self>,
        request: &mut Request<Full<Bytes>>,
        connect_timeout: Option<Duration>,
    ) -> Option<Result<(Response<Incoming>, Option<Lease>), TransportError>> {
        let connecting = self.h2_connecting.lock().await;
        if let Some(h2) = self.h2_sender() {
            drop(connecting);
            return Some(send_h2(h2, std::mem::take(request)).await);
        }
        if self.protocol.load(Ordering::Relaxed) == HTTP1 {
            return None;
        }
        let connected = match self.connect_within(connect_timeout).await {
            Ok(connected) => connected,
            Err(err) => return Some(Err(err)),
        };
        drop(connecting);
        match connected {
            Connected::H2(sender) => Some(send_h2(sender, std::mem::take(request)).await),
            // Idle for a moment: the HTTP/1.1 path takes it from there.
            Connected::H1(sender) => {
                self.put(sender);
                None
            }
        }
    }

    fn lease(self: &Arc<Self>, sender: http1::SendRequest<Full<Bytes>>) -> Lease {
        Lease {
            sender,
            pool: Arc::clone(self),
        }
    }

    /// The newest idle connection still open and not past the idle timeout.
    fn take_idle(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = lock(&self.idle);
        self.evict_expired(&mut idle, Instant::now());
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        self.evict_expired(&mut idle, now);
        idle.push_back(Idle { sender, since: now });
        if !self.reaping.swap(true, Ordering::Relaxed) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(reap(Arc::downgrade(self), self.shared.idle_timeout));
                }
                // Outside a runtime (no I/O can happen there either): the next `put` inside
                // one starts the task.
                Err(_) => self.reaping.store(false, Ordering::Relaxed),
            }
        }
    }

    /// Drops (closing them) the idle connections past the timeout: the oldest, at the front.
    fn evict_expired(&self, idle: &mut VecDeque<Idle>, now: Instant) {
        while idle
            .front()
            .is_some_and(|entry| now.duration_since(entry.since) >= self.shared.idle_timeout)
        {
            idle.pop_front();
        }
    }

    fn h2_sender(&self) -> Option<http2::SendRequest<Full<Bytes>>> {
        let mut h2 = lock(&self.h2);
        if h2.as_ref().is_some_and(http2::SendRequest::is_closed) {
            *h2 = None;
        }
        h2.clone()
    }

    /// [`Pool::connect`], given at most `limit` (besides the client's own connect timeout).
    async fn connect_within(&self, limit: Option<Duration>) -> Result<Connected, TransportError> {
        match limit {
            None => self.connect().await,
            Some(limit) => match tokio::time::timeout(limit, self.connect()).await {
                Ok(connected) => connected,
                Err(_) => Err(TransportError::connect_timed_out()),
            },
        }
    }

    /// A new connection: TCP (and TLS), then the HTTP handshake; its I/O runs in a task of
    /// its own until the connection closes.
    async fn connect(&self) -> Result<Connected, TransportError> {
        let connect_failed = |err: BoxError| TransportError::new(TransportErrorKind::Connect, err);
        let mut connector = self.shared.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(connect_failed)?;
        let io = connector
            .call(self.dial.clone())
            .await
            .map_err(connect_failed)?;
        let handshake_failed = |err: hyper::Error| connect_failed(Box::new(err));
        let h2 = io.connected().is_negotiated_h2();
        if self.protocol.load(Ordering::Relaxed) == UNKNOWN {
            self.protocol
                .store(if h2 { HTTP2 } else { HTTP1 }, Ordering::Relaxed);
        }
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(handshake_failed)?;
            run_connection(connection);
            *lock(&self.h2) = Some(sender.clone());
            return Ok(Connected::H2(sender));
        }
        let (sender, connection) = http1::Builder::new()
            // SSE chunks are a few hundred bytes: small reads, small buffers per stream.
            .read_buf_exact_size(Some(4096))
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        run_connection(connection);
        Ok(Connected::H1(sender))
    }
}

/// Runs a connection's I/O in a task of its own until it closes.
fn run_connection<F>(connection: F)
where
    F: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    });
}

/// Closes `pool`'s connections idle past `timeout`, checking as the oldest expires, until the
/// pool has no idle connection left (the next `put` starts it again) or is dropped.
async fn reap(pool: Weak<Pool>, timeout: Duration) {
    let mut wait = timeout;
    loop {
        tokio::time::sleep(wait).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut idle = lock(&pool.idle);
        pool.evict_expired(&mut idle, now);
        match idle.front() {
            Some(oldest) => wait = timeout.saturating_sub(now.duration_since(oldest.since)),
            None => {
                // Under the lock, so a `put` after this sees `false` and starts a new task.
                pool.reaping.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

async fn send_h2(
    mut sender: http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Option<Lease>), TransportError> {
    sender
        .send_request(request)
        .await
        .map(|response| (response, None))
        .map_err(failed)
}

fn failed(err: hyper::Error) -> TransportError {
    TransportError::new(TransportErrorKind::Request, err)
}

/// `uri`'s path and query alone, as HTTP/1.1 sends it.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    }
}

/// A pool's lock: what it guards stays consistent even if a holder panicked (each
/// critical section is a push or a pop).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
