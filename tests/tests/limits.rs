//! Rate limits and budgets from the YAML configuration, end to end: exact under concurrency,
//! all or nothing across constraints, budgets never overspent, streams settled, nothing
//! counted for a request that fails validation.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use sllmp::limit::{LimitBackend, LimitKind};
use sllmp_integration::{Answer, TestServer, gateway_from_yaml, stable};

/// A chat request to the mock for `user`, at most 10 output tokens.
fn chat(user: &str) -> Value {
    json!({
        "model": "mock:echo",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": user}
    })
}

/// A server for `yaml`, and the backend counting its limits.
async fn serve(yaml: &str) -> (TestServer, Arc<dyn LimitBackend>) {
    let gateway = gateway_from_yaml(yaml, &[]);
    let backend = gateway.limit_backend();
    (TestServer::from_gateway(gateway).await, backend)
}

/// Waits until no reservation is outstanding: a non-streamed request settles in a task after
/// its answer was sent.
async fn settled(backend: &Arc<dyn LimitBackend>) {
    for _ in 0..400 {
        let counters = backend.counters().await.expect("in memory");
        if counters.iter().all(|c| c.reserved == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("reservations were never settled");
}

/// The spend (nano-USD) of the budget counters, settled.
async fn spent(backend: &Arc<dyn LimitBackend>) -> u64 {
    settled(backend).await;
    let counters = backend.counters().await.expect("in memory");
    counters
        .iter()
        .filter(|c| c.kind == LimitKind::Budget)
        .map(|c| c.usage)
        .sum()
}

fn statuses(answers: &[Answer]) -> (usize, usize) {
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(ok + refused, answers.len(), "only 200s and 429s");
    (ok, refused)
}

const PER_USER: &str = "
defaults: {}
features:
  default:
    budget_constraints:
      per-user:
        dimensions: [user_id]
        rate_limit: {per_minute: 5}
";

#[tokio::test]
async fn five_per_minute_admits_exactly_five_of_twenty_concurrent_requests() {
    let (server, _) = serve(PER_USER).await;
    let body = chat("alice");
    let answers = join_all((0..20).map(|_| server.chat(&body))).await;
    assert_eq!(statuses(&answers), (5, 15));

    let refused = answers.iter().find(|a| a.status == 429).unwrap();
    insta::assert_snapshot!(stable(&refused.body), @r#"{"error":{"message":"Rate limit exceeded: per-user. Current usage: 5 requests/minute, Limit: 5 requests/minute","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded","request_id":"[request_id]"}}"#);
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("a retry-after header")
        .parse()
        .unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");

    // Each admitted answer says what was left after it: 4, 3, 2, 1, 0.
    let mut remaining: Vec<&str> = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(|a| a.header("x-ratelimit-remaining-requests").unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, ["0", "1", "2", "3", "4"]);

    // Another user has a counter of their own, and its headers.
    let bob = server.chat(&chat("bob")).await;
    assert_eq!(bob.status, 200, "{}", bob.body);
    assert_eq!(bob.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(bob.header("x-ratelimit-remaining-requests"), Some("4"));
    assert_eq!(bob.header("x-ratelimit-reset-requests"), Some("1m0s"));
}

/// Each mock call costs 0.1 USD per token: "hi" with `max_tokens: 10` is estimated at 14
/// tokens ($1.40) and answered with 8 ($0.80: 7 prompt, 1 completion).
fn budget(limit: &str, stream: bool) -> String {
    format!(
        r#"
defaults: {{}}
prices:
  models:
    "mock:*": {{input: 100000, output: 100000}}
features:
  default:
    budget_constraints:
      feature-budget:
        dimensions: [feature]
        budget_limit: {{limit: {limit}, window: 1d}}
        description: "{limit} USD a day per feature{}"
"#,
        if stream { ", streamed" } else { "" }
    )
}

/// What an answer cost: its usage at 0.1 USD (10⁸ nano-USD) per token.
fn cost_nanos(answer: &Answer) -> u64 {
    let usage = &answer.json()["usage"];
    let tokens =
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    tokens * 100_000_000
}

#[tokio::test]
async fn a_budget_refuses_once_spent() {
    let (server, backend) = serve(&budget("5.0", false)).await;
    for _ in 0..5 {
        let answer = server.chat(&chat("alice")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(cost_nanos(&answer), 800_000_000);
        settled(&backend).await;
    }
    assert_eq!(spent(&backend).await, 4_000_000_000);
    let refused = server.chat(&chat("alice")).await;
    assert_eq!(refused.status, 429);
    insta::assert_snapshot!(stable(&refused.body), @r#"{"error":{"message":"Budget limit exceeded: 5.0 USD a day per feature. Current usage: $4.0000, Limit: $5.0000, Estimated cost: $1.4000","type":"budget_limit_exceeded","param":null,"code":"budget_limit_exceeded","request_id":"[request_id]"}}"#);
    assert!(refused.header("retry-after").is_some());
    // The refusal cost nothing.
    assert_eq!(spent(&backend).await, 4_000_000_000);
}

#[tokio::test]
async fn concurrent_requests_never_overspend_a_budget() {
    let (server, backend) = serve(&budget("5.0", false)).await;
    let body = chat("alice");
    let answers = join_all((0..20).map(|_| server.chat(&body))).await;
    let (ok, refused) = statuses(&answers);
    // Every admission reserved $1.40 of the $5: at least three fit, whatever the timing.
    assert!(ok >= 3, "{ok} admitted");
    assert!(refused > 0);
    for answer in answers.iter().filter(|a| a.status == 429) {
        assert_eq!(answer.json()["error"]["code"], "budget_limit_exceeded");
    }
    let actual: u64 = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(cost_nanos)
        .sum();
    assert!(actual <= 5_000_000_000, "spent {actual} nano-USD of 5 USD");
    // What was recorded is exactly what the answers cost.
    assert_eq!(spent(&backend).await, actual);
}

#[tokio::test]
async fn streams_are_charged() {
    let (server, backend) = serve(&budget("2.5", true)).await;
    let mut body = chat("alice");
    body["stream"] = json!(true);
    for _ in 0..2 {
        let answer = server.chat(&body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.sse_data().last().map(String::as_str), Some("[DONE]"));
        settled(&backend).await;
    }
    assert_eq!(spent(&backend).await, 1_600_000_000);
    let refused = server.chat(&body).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json()["error"]["message"],
        "Budget limit exceeded: 2.5 USD a day per feature, streamed. Current usage: $1.6000, Limit: $2.5000, Estimated cost: $1.4000"
    );
}

#[tokio::test]
async fn a_refusal_by_one_constraint_counts_nothing_on_the_other() {
    let (server, _) = serve(
        "
defaults: {}
features:
  default:
    budget_constraints:
      everyone: {dimensions: [], rate_limit: {per_minute: 4}}
      per-user: {dimensions: [user_id], rate_limit: {per_minute: 2}}
",
    )
    .await;
    let body = chat("alice");
    let answers = join_all((0..5).map(|_| server.chat(&body))).await;
    assert_eq!(statuses(&answers), (2, 3));
    for answer in answers.iter().filter(|a| a.status == 429) {
        assert_eq!(
            answer.json()["error"]["message"],
            "Rate limit exceeded: per-user. Current usage: 2 requests/minute, Limit: 2 requests/minute"
        );
    }
    // `everyone` counted alice's two admitted requests only: two more fit.
    for user in ["bob", "bob"] {
        let answer = server.chat(&chat(user)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let carol = server.chat(&chat("carol")).await;
    assert_eq!(carol.status, 429);
    assert_eq!(
        carol.json()["error"]["message"],
        "Rate limit exceeded: everyone. Current usage: 4 requests/minute, Limit: 4 requests/minute"
    );
}

#[tokio::test]
async fn a_request_that_fails_validation_consumes_nothing() {
    let (server, backend) = serve(
        "
defaults: {}
features:
  default:
    budget_constraints:
      everyone: {dimensions: [], rate_limit: {per_minute: 1}}
",
    )
    .await;
    for _ in 0..3 {
        let answer = server.chat(&json!({"model": "mock:echo"})).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
    }
    let unknown = server
        .chat(
            &json!({"model": "mock:echo", "messages": [{"role": "user", "content": "hi"}],
                      "metadata": {"feature": "nope"}}),
        )
        .await;
    assert_eq!(unknown.json()["error"]["code"], "unknown_feature");
    assert!(backend.counters().await.unwrap().is_empty());
    assert_eq!(server.chat(&chat("alice")).await.status, 200);
    assert_eq!(server.chat(&chat("alice")).await.status, 429);
}

#[test]
fn the_python_readme_keys_are_refused_at_start_up() {
    let yaml = "
defaults:
  budget_constraints:
    daily_budget:
      max_cost: 100.0
      window_seconds: 86400
features:
  default:
    budget_constraints:
      burst: {max_requests: 1000, window_seconds: 60}
";
    let err =
        sllmp::config::Config::from_yaml_with_env(yaml, "gateway.yaml", &|_| None).unwrap_err();
    let message = "`max_cost`, `window_seconds` and `max_requests` are not keys of a constraint (the Python original's README showed them, but its code never accepted them); write budget_limit: {limit: 10.0, window: 1d} and/or rate_limit: {per_minute: 60}, with dimensions: [feature]";
    assert_eq!(
        err.to_string(),
        format!(
            "gateway.yaml: defaults.budget_constraints.daily_budget: {message}\n\
             gateway.yaml: features.default.budget_constraints.burst: {message}"
        )
    );
}

/// The request log says what each request cost, from the same prices the budget charges.
#[tokio::test]
async fn the_request_log_shows_the_cost() {
    let capture = sllmp_test_support::LogCapture::global(|| sllmp::observe::LineFormat);
    let (server, _backend) = serve(&budget("5.0", false)).await;
    let answer = server
        .chat_with(&chat("logged"), &[("x-request-id", "req_cost_log")])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let expected = format!(" cost_usd={:?} ", cost_nanos(&answer) as f64 / 1e9);
    for _ in 0..200 {
        if let Some(line) = capture
            .text()
            .lines()
            .find(|line| line.contains("request_id=\"req_cost_log\""))
        {
            assert!(line.contains(&expected), "{expected} in {line}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no request line for req_cost_log");
}
