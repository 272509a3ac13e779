//! Upstreams over TLS, with HTTP/1.1 and with HTTP/2 negotiated by ALPN, against a rustls
//! server whose certificate is signed by the test CA in `tests/fixtures` (a client built
//! with [`HttpClient::with_tls`] trusts it).

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{client, upstream};
use http::{HeaderMap, Uri, Version};
use sllmp_providers::{HttpClient, HttpSettings};

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
    // Five at once before anything is known of the origin: they wait for one connection.
    post_all(&client, &uri, 5).await;
    post_all(&client, &uri, 1).await;
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
    assert_eq!(bodies.iter().filter(|b| *b == "{\"n\":4}").count(), 1);
}

#[tokio::test]
async fn http2_enabled_falls_back_to_http1_when_the_upstream_offers_only_it() {
    let (uri, seen) = upstream(&[b"http/1.1"]).await;
    let client = client(true);
    post_all(&client, &uri, 2).await;
    // Known HTTP/1.1 now: concurrent requests get connections of their own again.
    post_all(&client, &uri, 3).await;
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 5);
    assert!(requests.iter().all(|r| r.0 == Version::HTTP_11));
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
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
