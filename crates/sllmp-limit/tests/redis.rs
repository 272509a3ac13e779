//! The Redis backend against a real Redis: `127.0.0.1:6379` (or `SLLMP_TEST_REDIS_URL`),
//! each test under its own key prefix; servers and clusters of their own where a test stops
//! them. Without Redis the tests say so and pass, unless `CI=true`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sllmp_limit::{
    Actual, BackendError, Claim, Constraint, CounterKey, LimitBackend, LimitKind, OnBackendError,
    RedisBackend, RedisOptions, Ticket, Window,
};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test (or fails it in CI) with `why`.
fn skip(why: &str) {
    assert!(!in_ci(), "CI=true but {why}");
    eprintln!("skipped: {why}");
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

fn prefix(test: &str) -> String {
    format!("sllmp-test:{test}:{:x}:", random())
}

fn shared_url() -> String {
    std::env::var("SLLMP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), ping).await,
        Ok(Ok(_))
    )
}

/// The shared Redis, if it answers.
async fn shared() -> Option<String> {
    let url = shared_url();
    if ping(&url).await {
        Some(url)
    } else {
        skip(&format!("no Redis answers at {url}"));
        None
    }
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn backend(url: &str, prefix: &str, on_error: OnBackendError) -> RedisBackend {
    RedisBackend::new(RedisOptions {
        urls: vec![url.to_owned()],
        prefix: prefix.to_owned(),
        on_error,
        timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    })
    .unwrap()
}

fn ticket(id: u64, constraints: &[Arc<Constraint>], tokens: u64, cost_nanos: u64) -> Ticket {
    Ticket {
        id,
        claims: constraints
            .iter()
            .map(|constraint| Claim {
                key: CounterKey {
                    constraint: constraint.name.clone(),
                    values: vec!["alice".to_owned()],
                },
                constraint: constraint.clone(),
            })
            .collect(),
        cost_nanos,
        tokens,
    }
}

/// A port nothing listens on (nor on the port 10000 above, a cluster's bus).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `redis-server` of the test's own, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn start(dir: &std::path::Path, cluster: bool) -> Server {
        let port = free_port();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.join(format!("nodes-{port}.conf")));
        }
        let server = Server {
            child: command.spawn().expect("redis-server starts"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ping(&server.url()).await {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} never answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sllmp-{test}-{:x}", random()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rpm(name: &str, per_minute: u32) -> Arc<Constraint> {
    Arc::new(
        Constraint::new(name, vec![sllmp_limit::Dimension::UserId]).requests_per_minute(per_minute),
    )
}

/// 20 concurrent reservations over two replicas of a 5-per-minute limit: exactly 5 pass.
async fn exactly_five_of_twenty(a: &RedisBackend, b: &RedisBackend) {
    let limit = [rpm("five-per-minute", 5)];
    let tickets: Vec<Ticket> = (1..=20).map(|id| ticket(id, &limit, 10, 0)).collect();
    let results = join_all(tickets.iter().enumerate().map(|(i, t)| async move {
        let backend = if i % 2 == 0 { a } else { b };
        backend.reserve(t).await
    }))
    .await;
    let admitted = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(admitted, 5, "{results:?}");
    for result in &results {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(rejection)) => {
                assert_eq!(rejection.kind, LimitKind::Requests);
                assert_eq!((rejection.usage, rejection.limit), (5, 5));
                assert!(rejection.retry_after > Duration::from_secs(55));
                assert!(rejection.retry_after <= Duration::from_secs(60));
            }
            Err(err) => panic!("{err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_per_minute_admits_exactly_five_across_two_replicas() {
    let Some(url) = shared().await else { return };
    let prefix = prefix("exact");
    // Ticket ids collide across replicas (each counts from 1): the backends keep them apart.
    let a = backend(&url, &prefix, OnBackendError::FailClosed);
    let b = backend(&url, &prefix, OnBackendError::FailClosed);
    exactly_five_of_twenty(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_never_overspent_and_settle_to_the_actual_costs() {
    let Some(url) = shared().await else { return };
    let prefix = prefix("budget");
    let a = Arc::new(backend(&url, &prefix, OnBackendError::FailClosed));
    let b = Arc::new(backend(&url, &prefix, OnBackendError::FailClosed));
    // 1 USD a day; each request reserves 0.1 USD: 10 fit.
    let budget = [Arc::new(
        Constraint::new("daily", vec![sllmp_limit::Dimension::UserId]).budget(1.0, Window::Day),
    )];
    let tickets: Vec<Ticket> = (1..=30)
        .map(|id| ticket(id, &budget, 0, 100_000_000))
        .collect();
    let results = join_all(tickets.iter().enumerate().map(|(i, t)| {
        let backend = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { (i, backend.reserve(t).await) }
    }))
    .await;
    let admitted: Vec<usize> = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Ok(_))))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(admitted.len(), 10, "{results:?}");
    let (_, refused) = results
        .iter()
        .find(|(_, r)| matches!(r, Ok(Err(_))))
        .unwrap();
    let Ok(Err(rejection)) = refused else {
        unreachable!()
    };
    assert_eq!(rejection.kind, LimitKind::Budget);
    assert_eq!(rejection.usage, 1_000_000_000);
    assert_eq!(rejection.asked, 100_000_000);
    assert!(rejection.retry_after >= Duration::from_secs(1));

    let views = a.counters().await.unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(
        (views[0].usage, views[0].reserved),
        (1_000_000_000, 1_000_000_000)
    );

    // Settle each at a cost of its own, on the replica that reserved it.
    let mut total = 0;
    for (n, i) in admitted.iter().enumerate() {
        let cost = 10_000_000 + n as u64 * 1_234_567;
        total += cost;
        let backend = if i % 2 == 0 { &a } else { &b };
        let actual = Actual {
            cost_nanos: cost,
            tokens: 0,
        };
        backend.settle(&tickets[*i], actual).await.unwrap();
    }
    let views = b.counters().await.unwrap();
    assert_eq!((views[0].usage, views[0].reserved), (total, 0));
    assert_eq!(views[0].limit, 1_000_000_000);
    // What is left admits the next requests, and no more.
    let left = 1_000_000_000 - total;
    let next = ticket(100, &budget, 0, left);
    assert!(a.reserve(&next).await.unwrap().is_ok());
    assert!(
        b.reserve(&ticket(101, &budget, 0, 1))
            .await
            .unwrap()
            .is_err()
    );

    assert_eq!(a.reset("daily").await.unwrap(), 1);
    assert!(b.counters().await.unwrap().is_empty());
    assert!(
        b.reserve(&ticket(102, &budget, 0, 1))
            .await
            .unwrap()
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rates_settle_to_the_actual_tokens() {
    let Some(url) = shared().await else { return };
    let backend = backend(&url, &prefix("tokens"), OnBackendError::FailClosed);
    let limit = [Arc::new(
        Constraint::new("tpm", vec![sllmp_limit::Dimension::UserId]).tokens_per_minute(1000),
    )];
    let first = ticket(1, &limit, 600, 0);
    let admission = backend.reserve(&first).await.unwrap().unwrap();
    let tokens = admission.tokens.unwrap();
    assert_eq!((tokens.limit, tokens.remaining), (1000, 400));
    let refused = backend
        .reserve(&ticket(2, &limit, 500, 0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.kind, LimitKind::Tokens);
    assert_eq!(
        (refused.usage, refused.limit, refused.asked),
        (600, 1000, 500)
    );
    assert!(refused.retry_after > Duration::from_secs(55), "{refused:?}");
    // More than the limit never fits: a minute.
    let never = backend
        .reserve(&ticket(3, &limit, 2000, 0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(never.retry_after, Duration::from_secs(60));
    backend
        .settle(
            &first,
            Actual {
                cost_nanos: 0,
                tokens: 100,
            },
        )
        .await
        .unwrap();
    let admission = backend
        .reserve(&ticket(4, &limit, 500, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admission.tokens.unwrap().remaining, 400);
    let views = backend.counters().await.unwrap();
    assert_eq!(views[0].usage, 600, "{views:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_a_ttl() {
    let Some(url) = shared().await else { return };
    let prefix = prefix("ttl");
    let backend = backend(&url, &prefix, OnBackendError::FailClosed);
    let all = [Arc::new(
        Constraint::new("everything", vec![sllmp_limit::Dimension::UserId])
            .requests_per_minute(10)
            .tokens_per_minute(10_000)
            .budget(10.0, Window::Week),
    )];
    let one = ticket(1, &all, 100, 1000);
    let two = ticket(2, &all, 100, 1000);
    backend.reserve(&one).await.unwrap().unwrap();
    backend.reserve(&two).await.unwrap().unwrap();
    backend
        .settle(
            &one,
            Actual {
                cost_nanos: 500,
                tokens: 50,
            },
        )
        .await
        .unwrap();
    let mut conn = conn(&url).await;
    let pattern = format!("{{{prefix}}}*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    // q t n r e s and the index.
    assert_eq!(keys.len(), 7, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        // At most the week's end plus the margin.
        assert!(ttl <= (7 * 86_400 + 60) * 1000, "{key}: {ttl}");
    }
}

fn commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_and_a_settlement_are_one_round_trip_each() {
    if !have("redis-server") {
        return skip("redis-server is not installed");
    }
    let dir = TempDir::new("round-trips");
    let server = Server::start(&dir.0, false).await;
    let backend = backend(
        &server.url(),
        &prefix("round-trips"),
        OnBackendError::FailClosed,
    );
    let all = [
        Arc::new(
            Constraint::new("a", vec![sllmp_limit::Dimension::UserId])
                .requests_per_minute(100)
                .budget(10.0, Window::Day),
        ),
        Arc::new(Constraint::new("b", vec![]).tokens_per_minute(100_000)),
    ];
    // The first calls load the scripts.
    let warm = ticket(1, &all, 10, 10);
    backend.reserve(&warm).await.unwrap().unwrap();
    let actual = Actual {
        cost_nanos: 5,
        tokens: 5,
    };
    backend.settle(&warm, actual).await.unwrap();
    let mut conn = conn(&server.url()).await;
    let before: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tickets: Vec<Ticket> = (2..=11).map(|id| ticket(id, &all, 10, 10)).collect();
    for t in &tickets {
        backend.reserve(t).await.unwrap().unwrap();
    }
    for t in &tickets {
        backend
            .settle(
                t,
                Actual {
                    cost_nanos: 5,
                    tokens: 5,
                },
            )
            .await
            .unwrap();
    }
    let after: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls = |stats: &[(String, u64)], name: &str| {
        stats.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    };
    let (before, after) = (commandstats(&before), commandstats(&after));
    // One EVALSHA per reservation and per settlement; nothing else from the client (no
    // EVAL, no SCRIPT LOAD, no PING of a pool's checkout; commands run by the scripts
    // count too, so they are not compared).
    assert_eq!(calls(&after, "evalsha") - calls(&before, "evalsha"), 20);
    for name in ["eval", "script|load", "ping"] {
        assert_eq!(calls(&after, name), calls(&before, name), "{name}");
    }
    // A ticket with nothing to settle (requests only) costs no round trip to settle.
    let requests_only = [Arc::new(
        Constraint::new("c", vec![]).requests_per_minute(10),
    )];
    let t = ticket(50, &requests_only, 1, 1);
    backend.reserve(&t).await.unwrap().unwrap();
    let before = commandstats(
        &redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut conn)
            .await
            .unwrap(),
    );
    backend
        .settle(
            &t,
            Actual {
                cost_nanos: 1,
                tokens: 1,
            },
        )
        .await
        .unwrap();
    let after = commandstats(
        &redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut conn)
            .await
            .unwrap(),
    );
    assert_eq!(calls(&after, "evalsha"), calls(&before, "evalsha"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_fails_open_locally_or_closed_within_the_timeout() {
    if !have("redis-server") {
        return skip("redis-server is not installed");
    }
    let dir = TempDir::new("outage");
    let mut server = Server::start(&dir.0, false).await;
    let timeout = Duration::from_millis(100);
    let make = |on_error| {
        RedisBackend::new(RedisOptions {
            urls: vec![server.url()],
            prefix: prefix("outage"),
            timeout,
            on_error,
            ..RedisOptions::default()
        })
        .unwrap()
    };
    let open = make(OnBackendError::FailOpen);
    let closed = make(OnBackendError::FailClosed);
    let limit = [rpm("three", 3)];
    let before: Vec<Ticket> = (1..=2).map(|id| ticket(id, &limit, 1, 0)).collect();
    for t in &before {
        open.reserve(t).await.unwrap().unwrap();
    }
    closed
        .reserve(&ticket(1, &limit, 1, 0))
        .await
        .unwrap()
        .unwrap();
    server.stop();

    // Fail closed: an error, quickly.
    let started = Instant::now();
    let err: BackendError = closed.reserve(&ticket(2, &limit, 1, 0)).await.unwrap_err();
    assert!(started.elapsed() < 2 * timeout, "{:?}", started.elapsed());
    assert!(err.message.contains("Redis"), "{err}");
    let started = Instant::now();
    let budget = [Arc::new(
        Constraint::new("budget", vec![]).budget(1.0, Window::Day),
    )];
    let budgeted = ticket(1, &budget, 1, 0);
    let settled = closed.settle(
        &budgeted,
        Actual {
            cost_nanos: 0,
            tokens: 0,
        },
    );
    assert!(settled.await.is_err());
    assert!(started.elapsed() < 2 * timeout);

    // Fail open: served, counted in this process (3 a minute again, from zero).
    let local: Vec<Ticket> = (10..=13).map(|id| ticket(id, &limit, 1, 0)).collect();
    let mut admitted = 0;
    for t in &local {
        let started = Instant::now();
        let answer = open.reserve(t).await.unwrap();
        assert!(started.elapsed() < 2 * timeout, "{:?}", started.elapsed());
        admitted += usize::from(answer.is_ok());
    }
    assert_eq!(admitted, 3);
    assert_eq!(open.fallback().counters().await.unwrap()[0].usage, 3);
    // Settlements go where the tickets were reserved; neither fails.
    for t in before.iter().chain(&local[..3]) {
        let started = Instant::now();
        open.settle(
            t,
            Actual {
                cost_nanos: 0,
                tokens: 1,
            },
        )
        .await
        .unwrap();
        assert!(started.elapsed() < 2 * timeout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_up_delays_nothing_past_the_timeout() {
    let port = free_port();
    let timeout = Duration::from_millis(100);
    for on_error in [OnBackendError::FailClosed, OnBackendError::FailOpen] {
        let backend = RedisBackend::new(RedisOptions {
            urls: vec![format!("redis://127.0.0.1:{port}")],
            prefix: prefix("down"),
            timeout,
            on_error,
            ..RedisOptions::default()
        })
        .unwrap();
        let limit = [rpm("one", 1)];
        for id in 1..=2 {
            let started = Instant::now();
            let answer = backend.reserve(&ticket(id, &limit, 1, 0)).await;
            assert!(started.elapsed() < 2 * timeout, "{:?}", started.elapsed());
            match on_error {
                OnBackendError::FailClosed => assert!(answer.is_err()),
                OnBackendError::FailOpen => assert_eq!(answer.unwrap().is_ok(), id == 1),
            }
        }
    }
    // An address that never answers (no RST): the timeout still holds. 10.255.255.1 is not
    // used: traffic stays on this machine; a listener that never accepts stands in for it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = RedisBackend::new(RedisOptions {
        urls: vec![format!("redis://{}", silent.local_addr().unwrap())],
        prefix: prefix("silent"),
        timeout,
        on_error: OnBackendError::FailClosed,
        ..RedisOptions::default()
    })
    .unwrap();
    let started = Instant::now();
    assert!(
        backend
            .reserve(&ticket(1, &[rpm("one", 1)], 1, 0))
            .await
            .is_err()
    );
    assert!(started.elapsed() < 2 * timeout, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_exact_too() {
    if !have("redis-server") || !have("redis-cli") {
        return skip("redis-server or redis-cli is not installed");
    }
    let dir = TempDir::new("cluster");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Server::start(&dir.0, true).await);
    }
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in &nodes {
        loop {
            let mut conn = conn(&node.url()).await;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never got ready: {info}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let prefix = prefix("cluster");
    let make = || {
        RedisBackend::new(RedisOptions {
            urls: urls.clone(),
            cluster: true,
            prefix: prefix.clone(),
            timeout: Duration::from_secs(1),
            on_error: OnBackendError::FailClosed,
            ..RedisOptions::default()
        })
        .unwrap()
    };
    let (a, b) = (make(), make());
    exactly_five_of_twenty(&a, &b).await;
    // Budgets, settlement, the views and reset work there too.
    let budget = [Arc::new(
        Constraint::new("cluster-budget", vec![sllmp_limit::Dimension::UserId])
            .budget(1.0, Window::Hour),
    )];
    let t = ticket(1, &budget, 0, 600_000_000);
    a.reserve(&t).await.unwrap().unwrap();
    assert!(
        b.reserve(&ticket(1, &budget, 0, 600_000_000))
            .await
            .unwrap()
            .is_err()
    );
    a.settle(
        &t,
        Actual {
            cost_nanos: 250_000_000,
            tokens: 0,
        },
    )
    .await
    .unwrap();
    let views = a.counters().await.unwrap();
    let spend = views.iter().find(|v| v.kind == LimitKind::Budget).unwrap();
    assert_eq!((spend.usage, spend.reserved), (250_000_000, 0));
    assert_eq!(a.reset("cluster-budget").await.unwrap(), 1);
}
