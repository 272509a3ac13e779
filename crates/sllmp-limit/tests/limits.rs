//! Limits through a real pipeline and the built-in mock provider: exact under concurrency,
//! all or nothing across constraints, budgets never overspent, settled to the actual cost.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use sllmp_core::{ChatInput, Error, ProviderRegistry, Request};
use sllmp_limit::{
    Actual, Claim, Constraint, CounterKey, Dimension, InMemory, LimitBackend, LimitKind, Limiter,
    OnBackendError, Price, PriceTable, Pricing, Ticket, UnknownPrice, Window,
};
use sllmp_pipeline::{Ctx, Output, Pipeline, Reply};
use sllmp_providers::Mock;

fn request(user: &str, max_tokens: u64) -> Request {
    let body = json!({
        "model": "mock:gpt-4o-mini",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello there, how are you today?"}],
        "metadata": {"user_id": user}
    });
    Request::Chat(ChatInput::from_json(body.to_string().into_bytes().into()).unwrap())
}

/// Prices the mock as OpenAI's gpt-4o-mini (the mock itself is free).
fn priced() -> Pricing {
    Pricing::new(Arc::new(PriceTable::embedded().clone())).alias("mock", "openai")
}

async fn run(limiter: &Limiter, req: Request) -> Reply {
    let providers = Arc::new(ProviderRegistry::new().with(Mock::new("mock")));
    let mut pipeline = Pipeline::new(Ctx::new("req", &req, providers));
    pipeline.add(limiter.middleware());
    pipeline.start(req).await
}

fn status(reply: &Reply) -> u16 {
    match &reply.result {
        Ok(_) => 200,
        Err(err) => err.status(),
    }
}

#[tokio::test]
async fn five_per_minute_admits_exactly_five_of_twenty_concurrent_requests() {
    let limiter = Limiter::new(
        [Constraint::new("per-user", vec![Dimension::UserId]).requests_per_minute(5)],
        Arc::new(InMemory::new()),
    );
    let replies =
        futures_util::future::join_all((0..20).map(|_| run(&limiter, request("alice", 16)))).await;
    let admitted = replies.iter().filter(|r| status(r) == 200).count();
    assert_eq!(admitted, 5);
    let refused = replies.iter().find(|r| status(r) == 429).unwrap();
    let err = refused.result.as_ref().unwrap_err();
    assert_eq!(err.error_type(), "rate_limit_exceeded");
    assert_eq!(
        err.message(),
        "Rate limit exceeded: per-user. Current usage: 5 requests/minute, Limit: 5 requests/minute"
    );
    let retry = err.retry_after().unwrap();
    assert!(
        retry >= Duration::from_secs(59) && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    // Another user has a counter of their own.
    assert_eq!(status(&run(&limiter, request("bob", 16)).await), 200);
    // Admitted answers say what is left.
    let ok = run(&limiter, request("carol", 16)).await;
    assert_eq!(ok.headers["x-ratelimit-limit-requests"], "5");
    assert_eq!(ok.headers["x-ratelimit-remaining-requests"], "4");
    assert_eq!(ok.headers["x-ratelimit-reset-requests"], "1m0s");
}

#[tokio::test]
async fn a_request_refused_by_one_constraint_consumes_nothing_from_another() {
    let backend = Arc::new(InMemory::new());
    let limiter = Limiter::new(
        [
            Constraint::new("everyone", vec![]).requests_per_minute(100),
            Constraint::new("per-user", vec![Dimension::UserId]).requests_per_minute(1),
        ],
        backend.clone(),
    );
    assert_eq!(status(&run(&limiter, request("alice", 16)).await), 200);
    for _ in 0..3 {
        assert_eq!(status(&run(&limiter, request("alice", 16)).await), 429);
    }
    let everyone = backend
        .counters()
        .await
        .unwrap()
        .into_iter()
        .find(|c| &*c.key.constraint == "everyone")
        .unwrap();
    assert_eq!((everyone.usage, everyone.limit), (1, 100));
}

/// The budget guarantee: concurrent requests never admit more than the budget allows, the
/// estimate admits nearly as many as fit, and the recorded spend is the sum of the actual
/// costs.
#[tokio::test]
async fn concurrent_requests_never_overspend_a_budget_and_spend_is_settled_exactly() {
    let backend = Arc::new(InMemory::new());
    let max_tokens = 200;
    let price = priced()
        .price(&sllmp_core::Route::new("mock", "gpt-4o-mini"))
        .unwrap();
    // The estimate of one request: its input (about 10 tokens) and its output cap.
    let (input, output) = sllmp_limit::estimate_tokens(&request("a", max_tokens), 1024);
    let estimate = price.estimate_nanos(input, output);
    let limit_nanos = estimate * 7 + estimate / 2; // room for 7 whole estimates
    let limiter = Limiter::with(
        [Constraint::new("team-budget", vec![]).budget(limit_nanos as f64 / 1e9, Window::Day)],
        backend.clone(),
        priced(),
        OnBackendError::FailClosed,
    );
    let replies = futures_util::future::join_all(
        (0..30).map(|i| run(&limiter, request(&format!("u{i}"), max_tokens))),
    )
    .await;
    let admitted: Vec<_> = replies.iter().filter(|r| status(r) == 200).collect();
    assert_eq!(admitted.len(), 7, "exactly as many as whole estimates fit");
    let refused = replies.iter().find(|r| status(r) == 429).unwrap();
    let err = refused.result.as_ref().unwrap_err();
    assert_eq!(err.error_type(), "budget_limit_exceeded");
    assert!(
        err.message()
            .starts_with("Budget limit exceeded: team-budget. Current usage: $"),
        "{}",
        err.message()
    );
    // The actual cost of each admitted request, from its usage.
    let mut actual_sum = 0;
    for reply in &admitted {
        let Ok(Output::Complete(answer)) = &reply.result else {
            panic!("a completion")
        };
        actual_sum += price.cost_nanos(&answer.usage().unwrap());
    }
    assert!(actual_sum <= limit_nanos);
    // Settlement runs in completion tasks: wait for every reservation to be settled.
    let spent = async {
        loop {
            let view = backend.counters().await.unwrap().pop().unwrap();
            if view.reserved == 0 {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let view = tokio::time::timeout(Duration::from_secs(5), spent)
        .await
        .unwrap();
    assert_eq!(view.kind, LimitKind::Budget);
    assert_eq!(
        view.usage, actual_sum,
        "spend is the sum of the actual costs"
    );
    // Spend settled below the estimates leaves room for more.
    assert_eq!(
        status(&run(&limiter, request("late", max_tokens)).await),
        200
    );
}

#[tokio::test]
async fn an_unknown_price_is_refused_or_charged_as_configured_never_zero() {
    let budget = || Constraint::new("b", vec![]).budget(1.0, Window::Hour);
    let refuse = Limiter::with(
        [budget()],
        Arc::new(InMemory::new()),
        Pricing::new(Arc::new(PriceTable::new())).alias("mock", "openai"),
        OnBackendError::FailOpen,
    );
    let reply = run(&refuse, request("a", 10)).await;
    let err: &Error = reply.result.as_ref().unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (400, Some("unknown_model_price"))
    );
    assert_eq!(
        err.message(),
        "no price is known for model 'mock:gpt-4o-mini', which the budget 'b' needs; add it under prices: in the configuration, or set a price for unknown models"
    );
    let backend = Arc::new(InMemory::new());
    let charge = Limiter::with(
        [budget()],
        backend.clone(),
        Pricing::new(Arc::new(PriceTable::new()))
            .alias("mock", "openai")
            .unknown(UnknownPrice::Charge(Price::new(1000.0, 1000.0))),
        OnBackendError::FailOpen,
    );
    assert_eq!(status(&run(&charge, request("a", 10)).await), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(backend.counters().await.unwrap()[0].usage > 0);
}

fn ticket(id: u64, constraint: &Arc<Constraint>, cost: u64, tokens: u64) -> Ticket {
    Ticket {
        id,
        claims: vec![Claim {
            key: CounterKey {
                constraint: constraint.name.clone(),
                values: vec![],
            },
            constraint: Arc::clone(constraint),
        }],
        cost_nanos: cost,
        tokens,
    }
}

#[test]
fn rates_slide_and_budgets_reset_with_their_window() {
    let store = InMemory::new();
    let rate = Arc::new(
        Constraint::new("r", vec![])
            .requests_per_minute(2)
            .tokens_per_minute(100),
    );
    let start = Instant::now();
    let wall = SystemTime::now();
    assert!(
        store
            .reserve_at(&ticket(1, &rate, 0, 40), start, wall)
            .is_ok()
    );
    assert!(
        store
            .reserve_at(
                &ticket(2, &rate, 0, 40),
                start + Duration::from_secs(30),
                wall
            )
            .is_ok()
    );
    let third = store
        .reserve_at(
            &ticket(3, &rate, 0, 10),
            start + Duration::from_secs(45),
            wall,
        )
        .unwrap_err();
    assert_eq!(third.kind, LimitKind::Requests);
    assert_eq!(third.retry_after, Duration::from_secs(15));
    // A minute after the first, its slot is free again.
    assert!(
        store
            .reserve_at(
                &ticket(4, &rate, 0, 10),
                start + Duration::from_secs(60),
                wall
            )
            .is_ok()
    );
    // Tokens settle to the actual count: 40 estimated, 5 used.
    store.settle_at(
        &ticket(2, &rate, 0, 40),
        Actual {
            cost_nanos: 0,
            tokens: 5,
        },
        wall,
    );
    let tokens = store
        .counters_at(start + Duration::from_secs(61), wall)
        .into_iter()
        .find(|c| c.kind == LimitKind::Tokens)
        .unwrap();
    assert_eq!(tokens.usage, 15);

    let budget = Arc::new(Constraint::new("b", vec![]).budget(1e-6, Window::Hour)); // 1000 nanos
    let hour = SystemTime::UNIX_EPOCH + Duration::from_secs(3600 * 500_000);
    assert!(
        store
            .reserve_at(&ticket(10, &budget, 800, 0), start, hour)
            .is_ok()
    );
    let over = store
        .reserve_at(&ticket(11, &budget, 300, 0), start, hour)
        .unwrap_err();
    assert_eq!(
        (over.kind, over.usage, over.limit),
        (LimitKind::Budget, 800, 1000)
    );
    assert_eq!(over.retry_after, Duration::from_secs(3600));
    store.settle_at(
        &ticket(10, &budget, 800, 0),
        Actual {
            cost_nanos: 600,
            tokens: 0,
        },
        hour,
    );
    assert!(
        store
            .reserve_at(&ticket(12, &budget, 300, 0), start, hour)
            .is_ok()
    );
    // The next hour starts over.
    let next = hour + Duration::from_secs(3600);
    store.settle_at(
        &ticket(12, &budget, 300, 0),
        Actual {
            cost_nanos: 300,
            tokens: 0,
        },
        hour,
    );
    assert!(
        store
            .reserve_at(&ticket(13, &budget, 1000, 0), start, next)
            .is_ok()
    );
}
