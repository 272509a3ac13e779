//! Upstreams reached through an outbound HTTP proxy: a real one, in this file, that tunnels
//! `CONNECT` and relays absolute-form requests, and records what it was asked.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Version};
use sllmp_providers::{HttpSettings, NoProxy, Proxies, Proxy, TransportErrorKind};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// What the proxy was asked, per connection: the request line and its
/// `Proxy-Authorization` header.
#[derive(Default)]
struct Asked {
    connections: usize,
    lines: Vec<(String, Option<String>)>,
}

struct TestProxy {
    url: String,
    asked: Arc<Mutex<Asked>>,
}

impl TestProxy {
    /// A proxy that wants exactly this `Proxy-Authorization` value when given one, and
    /// answers 407 to requests without it.
    async fn start(authorization: Option<&str>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Asked::default()));
        let shared = Arc::clone(&asked);
        let wanted = authorization.map(str::to_string);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                shared.lock().unwrap().connections += 1;
                tokio::spawn(relay(socket, Arc::clone(&shared), wanted.clone()));
            }
        });
        TestProxy {
            url: format!("http://{addr}"),
            asked,
        }
    }

    fn asked(&self) -> Vec<(String, Option<String>)> {
        self.asked.lock().unwrap().lines.clone()
    }

    fn connections(&self) -> usize {
        self.asked.lock().unwrap().connections
    }
}

/// One client connection: reads the first request's head, then either opens the tunnel it
/// asks for (`CONNECT`) or connects to the absolute target's host and passes the request on;
/// from there on, bytes flow both ways untouched.
async fn relay(mut client: TcpStream, asked: Arc<Mutex<Asked>>, wanted: Option<String>) {
    let mut buf = Vec::new();
    let Some(head_end) = common::read_head(&mut client, &mut buf).await else {
        return;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let line = head.lines().next().unwrap().to_string();
    let authorization = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_string())
    });
    asked
        .lock()
        .unwrap()
        .lines
        .push((line.clone(), authorization.clone()));
    if wanted.is_some() && authorization != wanted {
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
    let mut upstream = if method == "CONNECT" {
        let upstream = TcpStream::connect(target).await.unwrap();
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        buf.drain(..head_end);
        upstream
    } else {
        let authority = target
            .strip_prefix("http://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        TcpStream::connect(authority).await.unwrap()
    };
    upstream.write_all(&buf).await.unwrap();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn through(proxy: Proxy, no_proxy: &str, http2: bool) -> HttpSettings {
    HttpSettings {
        http2,
        proxies: Proxies {
            http: Some(proxy.clone()),
            https: Some(proxy),
            no_proxy: NoProxy::parse(no_proxy),
        },
        ..HttpSettings::default()
    }
}

/// A plain-HTTP upstream that answers every request with its request line and `host`.
async fn plain_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&heads);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let heads = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = common::read_request(&mut socket, &mut buf).await {
                    heads.lock().unwrap().push(head);
                    let body = b"{\"ok\":true}";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let mut answer = answer.into_bytes();
                    answer.extend_from_slice(body);
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1/chat/completions"), heads)
}

async fn post(
    client: &sllmp_providers::HttpClient,
    url: &str,
) -> Result<Bytes, TransportErrorKind> {
    let response = client
        .post(
            url.parse().unwrap(),
            HeaderMap::new(),
            Bytes::from_static(b"{}"),
            None,
        )
        .await
        .map_err(|err| err.kind())?;
    assert_eq!(response.status(), 200);
    response.bytes().await.map_err(|err| err.kind())
}

#[tokio::test]
async fn http_upstreams_get_absolute_targets_and_credentials_through_the_proxy() {
    // `Basic` of base64("me:p@ss word").
    let proxy = TestProxy::start(Some("Basic bWU6cEBzcyB3b3Jk")).await;
    let (url, heads) = plain_upstream().await;
    let with_credentials = proxy.url.replace("http://", "http://me:p%40ss%20word@");
    let client = common::client_with(&through(
        Proxy::parse(&with_credentials).unwrap(),
        "",
        false,
    ));
    for _ in 0..2 {
        assert_eq!(
            post(&client, &url).await.unwrap().as_ref(),
            b"{\"ok\":true}"
        );
    }
    // One connection to the proxy, kept for the second request.
    assert_eq!(proxy.connections(), 1);
    let authorization = Some("Basic bWU6cEBzcyB3b3Jk".to_string());
    assert_eq!(
        proxy.asked(),
        vec![(format!("POST {url} HTTP/1.1"), authorization.clone())]
    );
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    for head in heads {
        assert!(
            head.starts_with(&format!("POST {url} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(head.contains(&format!("host: {authority}\r\n")), "{head}");
        let sent = format!("proxy-authorization: {}", authorization.as_deref().unwrap());
        assert!(head.contains(&sent), "{head}");
    }
}

#[tokio::test]
async fn https_upstreams_are_tunnelled_with_tls_end_to_end() {
    for http2 in [false, true] {
        let proxy = TestProxy::start(None).await;
        let (uri, seen) = common::upstream(&[b"h2", b"http/1.1"]).await;
        let client = common::client_with(&through(Proxy::parse(&proxy.url).unwrap(), "", http2));
        for _ in 0..2 {
            let answer = post(&client, &uri.to_string()).await.unwrap();
            assert_eq!(answer.as_ref(), b"{\"ok\":true}");
        }
        let authority = uri.authority().unwrap().as_str();
        assert_eq!(
            proxy.asked(),
            vec![(format!("CONNECT {authority} HTTP/1.1"), None)]
        );
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        let version = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        for (got, path, _host, _body) in seen.requests.lock().unwrap().iter() {
            assert_eq!(*got, version);
            assert_eq!(path, "/v1/chat/completions");
        }
    }
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_a_connect_error_without_the_credentials() {
    // `Basic` of base64("me:right"); the client sends "me:hunter22".
    let proxy = TestProxy::start(Some("Basic bWU6cmlnaHQ=")).await;
    let (uri, seen) = common::upstream(&[b"http/1.1"]).await;
    let wrong = proxy.url.replace("http://", "http://me:hunter22@");
    let client = common::client_with(&through(Proxy::parse(&wrong).unwrap(), "", false));
    let err = client
        .post(uri, HeaderMap::new(), Bytes::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::Connect);
    let provider_error = sllmp_providers::transport_error("openai", err);
    assert_eq!(
        provider_error.message(),
        "openai could not be reached: connection failed: the outbound proxy did not open the tunnel: tunnel error: proxy authorization required"
    );
    assert!(seen.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn hosts_in_no_proxy_are_reached_directly() {
    let proxy = TestProxy::start(None).await;
    let (url, heads) = plain_upstream().await;
    let client = common::client_with(&through(
        Proxy::parse(&proxy.url).unwrap(),
        "localhost, 127.0.0.0/8",
        false,
    ));
    post(&client, &url).await.unwrap();
    assert_eq!(proxy.connections(), 0);
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{heads:?}"
    );
}
