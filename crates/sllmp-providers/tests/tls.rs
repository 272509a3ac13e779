//! Upstreams over TLS, with HTTP/1.1 and with HTTP/2 negotiated by ALPN, against a rustls
//! server whose certificate is signed by the test CA in `tests/fixtures` (a client built
//! with [`HttpClient::with_tls`] trusts it).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sllmp_providers::{HttpClient, HttpSettings};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const CA: &[u8] = include_bytes!("fixtures/ca.crt");
const CERT: &[u8] = include_bytes!("fixtures/localhost.crt");
const KEY: &[u8] = include_bytes!("fixtures/localhost.key");

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Version, path, `host` header and body of a request.
type Recorded = (Version, String, Option<String>, String);

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// A TLS upstream offering `alpn`; answers every POST with `{"ok":true}`.
async fn upstream(alpn: &[&[u8]]) -> (Uri, Arc<Seen>) {
    let cert = CertificateDer::from_pem_slice(CERT).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&shared);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let version = request.version();
                        let path = request.uri().path().to_string();
                        let host = request
                            .headers()
                            .get(http::header::HOST)
                            .map(|h| h.to_str().unwrap().to_string());
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let body = String::from_utf8(body.to_vec()).unwrap();
                        seen.requests
                            .lock()
                            .unwrap()
                            .push((version, path, host, body));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"{\"ok\":true}",
                        ))))
                    }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    let uri = format!("https://localhost:{port}/v1/chat/completions")
        .parse()
        .unwrap();
    (uri, seen)
}

/// A client that trusts the test CA.
fn client(http2: bool) -> HttpClient {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(CA).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    HttpClient::with_tls(
        &HttpSettings {
            http2,
            ..HttpSettings::default()
        },
        tls,
    )
}

async fn post_all(client: &HttpClient, uri: &Uri, concurrent: usize) {
    let endpoint = client.endpoint(uri.clone()).unwrap();
    let answers = futures_util::future::join_all((0..concurrent).map(|n| {
        let endpoint = endpoint.clone();
        async move {
            let response = endpoint
                .post(
                    HeaderMap::new(),
                    Bytes::from(format!("{{\"n\":{n}}}")),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }
    }))
    .await;
    assert!(answers.iter().all(|a| a.as_ref() == b"{\"ok\":true}"));
}

#[tokio::test]
async fn https_upstreams_are_called_over_http1_and_reuse_the_connection() {
    let (uri, seen) = upstream(&[b"h2", b"http/1.1"]).await;
    let client = client(false);
    for _ in 0..3 {
        post_all(&client, &uri, 1).await;
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    let authority = uri.authority().unwrap().as_str();
    for (version, path, host, body) in requests {
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(host.as_deref(), Some(authority));
        assert_eq!(body, "{\"n\":0}");
    }
}

#[tokio::test]
async fn http2_is_used_when_enabled_and_offered_and_one_connection_carries_every_request() {
    let (uri, seen) = upstream(&[b"h2", b"http/1.1"]).await;
    let client = client(true);
    post_all(&client, &uri, 1).await;
    post_all(&client, &uri, 5).await;
    post_all(&client, &uri, 1).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 7);
    for (version, path, _host, _body) in &requests {
        assert_eq!(*version, Version::HTTP_2);
        assert_eq!(path, "/v1/chat/completions");
    }
    let mut bodies: Vec<_> = requests.iter().map(|r| r.3.clone()).collect();
    bodies.sort();
    assert_eq!(bodies.iter().filter(|b| *b == "{\"n\":0}").count(), 3);
}

#[tokio::test]
async fn http2_enabled_falls_back_to_http1_when_the_upstream_offers_only_it() {
    let (uri, seen) = upstream(&[b"http/1.1"]).await;
    post_all(&client(true), &uri, 2).await;
    let requests = seen.requests.lock().unwrap().clone();
    assert!(requests.iter().all(|r| r.0 == Version::HTTP_11));
}

#[tokio::test]
async fn a_certificate_no_trusted_authority_signed_is_a_connect_error() {
    let (uri, seen) = upstream(&[b"http/1.1"]).await;
    // The platform's verifier does not know the test CA.
    let client = HttpClient::new(&HttpSettings::default());
    let err = client
        .endpoint(uri)
        .unwrap()
        .post(HeaderMap::new(), Bytes::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sllmp_providers::TransportErrorKind::Connect);
    assert!(seen.requests.lock().unwrap().is_empty());
}
