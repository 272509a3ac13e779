//! The client's connection pool, against a raw HTTP/1.1 server that counts connections and
//! records what reached it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Uri};
use sllmp_providers::sse::SseStream;
use sllmp_providers::{Endpoint, HttpSettings, TransportErrorKind, http_client};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// How the server treats a connection after answering.
#[derive(Clone, Copy)]
enum AfterAnswer {
    KeepOpen,
    /// Closes the socket without a `Connection: close` header, as servers whose
    /// keep-alive timeout expired do.
    Close,
    /// Answers with a chunked body: one `data: [DONE]` event at once, the body's end
    /// after this long (streaming servers end the body after their last event).
    Chunked(Duration),
}

#[derive(Default)]
struct Seen {
    connections: usize,
    /// Connections the client closed (or the server dropped).
    closed: usize,
    heads: Vec<String>,
}

struct Upstream {
    uri: Uri,
    seen: Arc<Mutex<Seen>>,
}

impl Upstream {
    async fn start(after: AfterAnswer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                shared.lock().unwrap().connections += 1;
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    serve(socket, after, Arc::clone(&seen)).await;
                    seen.lock().unwrap().closed += 1;
                });
            }
        });
        Upstream {
            uri: format!("http://{addr}/v1/chat/completions")
                .parse()
                .unwrap(),
            seen,
        }
    }

    fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }

    fn closed(&self) -> usize {
        self.seen.lock().unwrap().closed
    }

    /// Waits (at most 5 s) until `n` connections were closed.
    async fn wait_closed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.closed() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().heads.clone()
    }
}

/// Answers each request on `socket` with `{"n":<request number>}`.
async fn serve(mut socket: TcpStream, after: AfterAnswer, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = common::read_request(&mut socket, &mut buf).await else {
            return;
        };
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.heads.push(head);
            seen.heads.len()
        };
        if let AfterAnswer::Chunked(end_after) = after {
            let event = "data: [DONE]\n\n";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                event.len()
            );
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(end_after).await;
            if socket.write_all(b"0\r\n\r\n").await.is_err() {
                return;
            }
            continue;
        }
        let body = format!("{{\"n\":{n}}}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if let AfterAnswer::Close = after {
            return;
        }
    }
}

fn endpoint(upstream: &Upstream, settings: &HttpSettings) -> Endpoint {
    http_client(settings)
        .endpoint(upstream.uri.clone())
        .unwrap()
}

async fn post(endpoint: &Endpoint) -> String {
    let response = endpoint
        .post(HeaderMap::new(), Bytes::from_static(b"{\"x\":1}"), None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    let endpoint = endpoint(&upstream, &HttpSettings::default());
    for n in 1..=3 {
        assert_eq!(post(&endpoint).await, format!("{{\"n\":{n}}}"));
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn requests_carry_origin_form_target_host_and_body() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    let endpoint = endpoint(&upstream, &HttpSettings::default());
    post(&endpoint).await;
    let head = &upstream.heads()[0];
    let authority = upstream.uri.authority().unwrap().as_str();
    assert!(
        head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("host: {authority}\r\n")), "{head}");
    assert!(head.contains("content-length: 7\r\n"), "{head}");
    assert!(head.contains("user-agent: sllmp/"), "{head}");
}

#[tokio::test]
async fn endpoints_on_one_origin_share_its_pool() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    let client = http_client(&HttpSettings::default());
    let first = client.endpoint(upstream.uri.clone()).unwrap();
    let other_path: Uri = format!("http://{}/v1/other", upstream.uri.authority().unwrap())
        .parse()
        .unwrap();
    let second = client.endpoint(other_path).unwrap();
    post(&first).await;
    post(&second).await;
    assert_eq!(upstream.connections(), 1);
    assert!(upstream.heads()[1].starts_with("POST /v1/other HTTP/1.1"));
}

#[tokio::test]
async fn a_response_dropped_unread_closes_its_connection() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    let endpoint = endpoint(&upstream, &HttpSettings::default());
    let response = endpoint
        .post(HeaderMap::new(), Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    drop(response);
    // The next request cannot reuse a connection whose answer was never read.
    assert_eq!(post(&endpoint).await, "{\"n\":2}");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn concurrent_requests_open_connections_then_reuse_them() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    let endpoint = endpoint(&upstream, &HttpSettings::default());
    let answers = futures_util::future::join_all((0..4).map(|_| post(&endpoint))).await;
    assert_eq!(answers.len(), 4);
    let opened = upstream.connections();
    assert!((1..=4).contains(&opened), "{opened} connections");
    for _ in 0..4 {
        post(&endpoint).await;
    }
    assert_eq!(
        upstream.connections(),
        opened,
        "no new connection once pooled"
    );
}

/// Reads a streamed answer up to its `[DONE]` event; then `finish`es it, or drops it.
async fn stream_to_done(endpoint: &Endpoint, finish: bool) {
    use futures_util::StreamExt;
    let response = endpoint
        .post(HeaderMap::new(), Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    let mut events = SseStream::new(response.into_stream());
    let event = events.next().await.unwrap().unwrap();
    assert_eq!(event.data, "[DONE]");
    if finish {
        events.into_inner().finish();
    }
}

#[tokio::test]
async fn a_stream_finished_at_its_end_marker_keeps_its_connection() {
    // The body's end arrives with the event, or 50 ms later (read in the background).
    for end_after in [Duration::ZERO, Duration::from_millis(50)] {
        let upstream = Upstream::start(AfterAnswer::Chunked(end_after)).await;
        let endpoint = endpoint(&upstream, &HttpSettings::default());
        stream_to_done(&endpoint, true).await;
        // Time for the end to arrive and be read in the background, even on a busy machine.
        tokio::time::sleep(end_after + Duration::from_millis(250)).await;
        stream_to_done(&endpoint, true).await;
        assert_eq!(upstream.connections(), 1, "end after {end_after:?}");
    }
}

#[tokio::test]
async fn a_stream_dropped_before_its_end_closes_its_connection() {
    // Dropping is how a cancelled stream tells the upstream to stop generating.
    let upstream = Upstream::start(AfterAnswer::Chunked(Duration::from_millis(50))).await;
    let endpoint = endpoint(&upstream, &HttpSettings::default());
    stream_to_done(&endpoint, false).await;
    // The upstream sees its connection closed.
    upstream.wait_closed(1).await;
    assert_eq!(upstream.closed(), 1);
    stream_to_done(&endpoint, false).await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let upstream = Upstream::start(AfterAnswer::Close).await;
    let endpoint = endpoint(&upstream, &HttpSettings::default());
    assert_eq!(post(&endpoint).await, "{\"n\":1}");
    // Give the client's connection task time to see the close, even on a busy machine.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(post(&endpoint).await, "{\"n\":2}");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_not_reused() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    // Long enough that the first two requests never straddle it, even on a busy machine.
    let settings = HttpSettings {
        pool_idle_timeout: Duration::from_millis(500),
        ..HttpSettings::default()
    };
    let endpoint = endpoint(&upstream, &settings);
    post(&endpoint).await;
    post(&endpoint).await;
    assert_eq!(upstream.connections(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    post(&endpoint).await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeout_without_further_requests() {
    let upstream = Upstream::start(AfterAnswer::KeepOpen).await;
    // Long enough that none is closed before the check right after the requests.
    let settings = HttpSettings {
        pool_idle_timeout: Duration::from_millis(300),
        ..HttpSettings::default()
    };
    let endpoint = endpoint(&upstream, &settings);
    futures_util::future::join_all((0..3).map(|_| post(&endpoint))).await;
    let opened = upstream.connections();
    assert_eq!(upstream.closed(), 0);
    // No request after this: the pool's own task closes them.
    upstream.wait_closed(opened).await;
    assert_eq!(upstream.closed(), opened);
    // And the pool still works afterwards.
    post(&endpoint).await;
    assert_eq!(upstream.connections(), opened + 1);
}

#[tokio::test]
async fn an_address_nothing_listens_on_is_a_connect_error() {
    // A port bound but not listening: connections to it are refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let uri: Uri = format!(
        "http://{}/v1/chat/completions",
        socket.local_addr().unwrap()
    )
    .parse()
    .unwrap();
    let endpoint = http_client(&HttpSettings::default()).endpoint(uri).unwrap();
    let err = endpoint
        .post(HeaderMap::new(), Bytes::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::Connect);
}

#[test]
fn an_endpoint_needs_an_absolute_url() {
    let client = http_client(&HttpSettings::default());
    assert!(client.endpoint(Uri::from_static("/relative")).is_err());
}
