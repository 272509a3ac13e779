//! Rate limits shared through Redis (`server.redis_url`): two gateways from one file, as two
//! replicas, count against the same counters. Uses the Redis at 127.0.0.1:6379 (or
//! `SLLMP_TEST_REDIS_URL`) under a key prefix of its own; without one the test says so and
//! passes, unless `CI=true`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::json;
use sllmp_integration::{TestServer, gateway_from_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Redis URL, if a Redis answers `PING` there.
async fn redis() -> Option<String> {
    let url = std::env::var("SLLMP_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let address = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let ping = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        (&reply == b"+PONG\r\n").then_some(())
    };
    if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(500), ping).await {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but no Redis answers at {url}"
    );
    eprintln!("skipped: no Redis answers at {url}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_five_per_minute_limit() {
    let Some(url) = redis().await else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let yaml = format!(
        "
server:
  redis_url: \"${{REDIS_URL}}\"
  redis_prefix: \"sllmp-test:replicas:{nanos}:\"
  redis_timeout: 500ms
  on_redis_error: fail_closed
defaults: {{}}
features:
  default:
    budget_constraints:
      per-user:
        dimensions: [user_id]
        rate_limit: {{per_minute: 5}}
"
    );
    let env = [("REDIS_URL", url.as_str())];
    let a = TestServer::from_yaml(&yaml, &env).await;
    let b = TestServer::from_yaml(&yaml, &env).await;
    let body = json!({
        "model": "mock:echo",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "alice"}
    });
    let answers = join_all((0..20).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        server.chat(&body)
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(
        (ok, refused),
        (5, 15),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let refused = answers.iter().find(|a| a.status == 429).unwrap();
    assert!(
        refused.body.contains("Current usage: 5 requests/minute"),
        "{}",
        refused.body
    );
    assert!(refused.header("retry-after").is_some());
    // Another user has a counter of their own.
    let mut other = body.clone();
    other["metadata"]["user_id"] = json!("bob");
    assert_eq!(b.chat(&other).await.status, 200);
}

#[tokio::test]
async fn a_redis_that_is_down_fails_closed_with_a_503() {
    // A port nothing listens on: Redis down at start-up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "
server:
  redis_url: \"redis://127.0.0.1:{port}\"
  on_redis_error: fail_closed
defaults: {{}}
features:
  default:
    budget_constraints:
      per-user:
        dimensions: [user_id]
        rate_limit: {{per_minute: 5}}
"
    );
    let server = TestServer::from_gateway(gateway_from_yaml(&yaml, &[])).await;
    let body = json!({"model": "mock:echo", "messages": [{"role": "user", "content": "hi"}]});
    let answer = server.chat(&body).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("limits_unavailable"),
        "{}",
        answer.body
    );
    // Fail open serves.
    let open = TestServer::from_gateway(gateway_from_yaml(
        &yaml.replace("fail_closed", "fail_open"),
        &[],
    ))
    .await;
    assert_eq!(open.chat(&body).await.status, 200);
}
