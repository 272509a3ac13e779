//! The harness of SLLMP's end-to-end tests: a real server on a loopback port, in front of
//! the built-in providers or a real mock upstream, called over real HTTP.

use std::net::SocketAddr;

use reqwest::header::HeaderMap;
use serde_json::Value;
use sllmp::ProviderRegistry;
use sllmp::Server;
use sllmp::config::{Config, Gateway};
use sllmp::providers::{HttpSettings, OpenAi, OpenAiConfig, http_client};
use tokio::sync::oneshot;

/// Providers with one `openai` provider whose `api_base` is `upstream`, configured by
/// `configure` (key, timeout, …).
pub fn upstream_providers(
    upstream: &sllmp_test_support::MockUpstream,
    configure: impl FnOnce(&mut OpenAiConfig),
) -> ProviderRegistry {
    let mut config = OpenAiConfig {
        api_base: upstream.base_url(),
        ..OpenAiConfig::default()
    };
    configure(&mut config);
    ProviderRegistry::new().with(OpenAi::new(
        "openai",
        config,
        http_client(&HttpSettings::direct()),
    ))
}

/// A running SLLMP server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

/// An HTTP answer: status, headers, body text.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter(|frame| !frame.is_empty())
            .map(|frame| {
                frame
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data frame: {frame:?}"))
                    .to_string()
            })
            .collect()
    }
}

impl TestServer {
    /// Serves `server` on 127.0.0.1 and an unused port.
    pub async fn start(server: Server) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a local address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve_on(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            client: reqwest::Client::new(),
            _stop: stop,
        }
    }

    /// Serves the gateway a YAML configuration describes, with `env` as the environment.
    pub async fn from_yaml(yaml: &str, env: &[(&str, &str)]) -> TestServer {
        TestServer::from_gateway(gateway_from_yaml(yaml, env)).await
    }

    /// Serves `gateway` (keep a clone to look at its limit counters).
    pub async fn from_gateway(gateway: Gateway) -> TestServer {
        TestServer::start(Server::from_gateway(gateway)).await
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `POST /v1/chat/completions` with a JSON body.
    pub async fn chat(&self, body: &Value) -> Answer {
        self.post_raw("/v1/chat/completions", body.to_string(), &[])
            .await
    }

    /// `POST /v1/chat/completions` with a JSON body and extra headers.
    pub async fn chat_with(&self, body: &Value, headers: &[(&str, &str)]) -> Answer {
        self.post_raw("/v1/chat/completions", body.to_string(), headers)
            .await
    }

    /// `POST /v1/embeddings` with a JSON body.
    pub async fn embeddings(&self, body: &Value) -> Answer {
        self.post_raw("/v1/embeddings", body.to_string(), &[]).await
    }

    /// `POST path` with a raw body.
    pub async fn post_raw(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url()))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("the server answers")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .expect("the server answers");
        answer(response).await
    }
}

/// The gateway a YAML configuration describes, with `env` as the environment; panics on a
/// bad configuration.
pub fn gateway_from_yaml(yaml: &str, env: &[(&str, &str)]) -> Gateway {
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let config = Config::from_yaml_with_env(yaml, "test.yaml", &lookup)
        .unwrap_or_else(|e| panic!("test config: {e}"));
    Gateway::build_with_env(config, &http_client(&HttpSettings::direct()), &lookup)
        .unwrap_or_else(|e| panic!("test gateway: {e}"))
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("a text body");
    Answer {
        status,
        headers,
        body,
    }
}

/// Replaces volatile values (ids, timestamps) in a body so it can be snapshotted.
pub fn stable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let patterns: [(&str, &str); 3] = [
        ("\"created\":", "\"created\":0"),
        ("\"request_id\":\"", "\"request_id\":\"[request_id]"),
        ("\"timestamp\":", "\"timestamp\":0"),
    ];
    'outer: while !rest.is_empty() {
        for (pattern, replacement) in patterns {
            if let Some(tail) = rest.strip_prefix(pattern) {
                out.push_str(replacement);
                let end = if pattern.ends_with('"') {
                    tail.find('"').unwrap_or(tail.len())
                } else {
                    tail.find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(tail.len())
                };
                rest = &tail[end..];
                continue 'outer;
            }
        }
        let ch = rest.chars().next().expect("not empty");
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}
