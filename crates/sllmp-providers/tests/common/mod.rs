//! Helpers shared by the pool, TLS and proxy tests: reading raw HTTP/1.1 requests, a rustls
//! upstream whose certificate the test CA in `tests/fixtures` signed, and a client that
//! trusts that CA.

// Each test file uses a part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sllmp_providers::{HttpClient, HttpSettings};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const CA: &[u8] = include_bytes!("../fixtures/ca.crt");
const CERT: &[u8] = include_bytes!("../fixtures/localhost.crt");
const KEY: &[u8] = include_bytes!("../fixtures/localhost.key");

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Version, path, `host` header and body of a request.
pub(crate) type Recorded = (Version, String, Option<String>, String);

#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) connections: AtomicUsize,
    pub(crate) requests: Mutex<Vec<Recorded>>,
}

/// A TLS upstream offering `alpn`; answers every POST with `{"ok":true}`.
pub(crate) async fn upstream(alpn: &[&[u8]]) -> (Uri, Arc<Seen>) {
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

/// A client with `settings` that trusts the test CA.
pub(crate) fn client_with(settings: &HttpSettings) -> HttpClient {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(CA).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    HttpClient::with_tls(settings, tls)
}

/// A client that trusts the test CA, with HTTP/2 allowed or not.
pub(crate) fn client(http2: bool) -> HttpClient {
    client_with(&HttpSettings {
        http2,
        ..HttpSettings::default()
    })
}

/// Reads from `socket` until `buf` holds a whole request head; its length, or `None` when
/// the connection ends first.
pub(crate) async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        read_more(socket, buf).await?;
    }
}

/// One request off `socket`: its head (as text), its `content-length` body consumed; what
/// follows stays in `buf`. `None` when the connection ends first.
pub(crate) async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = read_head(socket, buf).await?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read_more(socket, buf).await?;
    }
    buf.drain(..head_end + length);
    Some(head)
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
