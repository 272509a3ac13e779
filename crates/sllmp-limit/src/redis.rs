//! [`RedisBackend`]: counters in Redis (or a Redis Cluster), shared by every replica, with
//! the same semantics as [`InMemory`]: one script call reserves a ticket on all its claims or
//! none, one settles it.
//!
//! Every key is under one hash tag, `{<prefix>}`, so that a script's keys are in one slot of a
//! cluster (the limits of one gateway live on one node; see `docs/limits.md`, "Redis").

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};

use crate::backend::{
    Actual, Admission, BackendError, Claim, CounterKey, CounterView, LimitBackend, LimitKind,
    RateState, Rejection, Ticket,
};
use crate::{Constraint, InMemory, OnBackendError, Window};

const MINUTE: Duration = Duration::from_secs(60);

/// Lua numbers are doubles: counts and nano-USD are exact up to 2^53 (about 9 million USD).
const MAX_EXACT: u64 = 1 << 53;

/// How many tickets reserved in the local fallback are remembered for their settlement.
const MAX_LOCAL_TICKETS: usize = 65_536;

const COMMON: &str = include_str!("redis/common.lua");

/// Where a [`RedisBackend`] connects, and what it does when Redis fails.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); for a cluster, any of its
    /// nodes (several are tried in turn).
    pub urls: Vec<String>,
    /// Whether `urls` are the nodes of a Redis Cluster.
    pub cluster: bool,
    /// Every key starts with `{prefix}` (the prefix is the hash tag): non-empty, no braces.
    pub prefix: String,
    /// How long any call may wait on Redis, connecting included.
    pub timeout: Duration,
    /// What a failure does: `FailOpen` reserves in a local [`InMemory`] instead (limits then
    /// hold per process) and logs once per outage; `FailClosed` returns the
    /// [`BackendError`] (the [`Limiter`](crate::Limiter) answers 503 `limits_unavailable`).
    pub on_error: OnBackendError,
    /// How long a budget reservation is held when its ticket is never settled (a replica
    /// that died): longer than any request runs.
    pub reservation_ttl: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            cluster: false,
            prefix: "sllmp:limits:".to_owned(),
            timeout: Duration::from_millis(100),
            on_error: OnBackendError::FailOpen,
            reservation_ttl: Duration::from_secs(3_600),
        }
    }
}

/// Counters in Redis, shared by every replica pointed at it; exact like [`InMemory`].
///
/// - A reservation is one `EVALSHA` of a Lua script (loaded on the first `NOSCRIPT`) over
///   every claim of the ticket: it checks them all, then counts on all of them, or returns
///   the first refusal; a settlement is one more (none when nothing needs settling).
/// - Rates are exact sliding minutes (a sorted set of ticket → time per counter, time from
///   Redis `TIME`); budgets keep the spend per fixed UTC window and the reservations of
///   running tickets, each with a deadline so a dead replica's reservations expire.
/// - Every key has a TTL; the index of counters (for [`counters`](LimitBackend::counters)
///   and [`reset`](LimitBackend::reset)) too.
/// - No call waits on Redis longer than [`RedisOptions::timeout`]; nothing connects before
///   the first call, so a Redis that is down at start-up delays nothing.
pub struct RedisBackend {
    connector: Connector,
    tag: String,
    timeout: Duration,
    on_error: OnBackendError,
    reservation_ttl: Duration,
    /// Makes ticket ids unique across replicas (each counts its own from 1).
    instance: String,
    reserve: Script,
    settle: Script,
    view: Script,
    reset: Script,
    fallback: InMemory,
    /// Tickets reserved in `fallback`, settled there.
    local: Mutex<HashSet<u64>>,
    /// The constraints seen in tickets, by name (the views need their limits).
    constraints: Mutex<HashMap<Arc<str>, Arc<Constraint>>>,
    /// Whether Redis is failing (fail-open logs once per outage).
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("tag", &self.tag)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `options`. Checks the URLs and the prefix; connects on the first call.
    pub fn new(options: RedisOptions) -> Result<RedisBackend, BackendError> {
        let error = |message: String| BackendError { message };
        if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
            return Err(error(format!(
                "the Redis key prefix {:?} must be non-empty and without braces",
                options.prefix
            )));
        }
        if options.urls.is_empty() {
            return Err(error("no Redis URL".to_owned()));
        }
        let runtime = Some(deadpool_redis::Runtime::Tokio1);
        let pool = if options.cluster {
            let pool = deadpool_redis::cluster::Config::from_urls(options.urls.clone())
                .create_pool(runtime)
                .map_err(|err| error(format!("invalid Redis Cluster configuration: {err}")))?;
            Pool::Cluster(pool)
        } else {
            if options.urls.len() > 1 {
                return Err(error(
                    "several Redis URLs are only for a cluster".to_owned(),
                ));
            }
            let pool = deadpool_redis::Config::from_url(options.urls[0].clone())
                .create_pool(runtime)
                .map_err(|err| error(format!("invalid Redis configuration: {err}")))?;
            Pool::Single(pool)
        };
        Ok(RedisBackend {
            connector: Connector {
                pool,
                current: tokio::sync::Mutex::new(None),
            },
            tag: format!("{{{}}}", options.prefix),
            timeout: options.timeout,
            on_error: options.on_error,
            reservation_ttl: options.reservation_ttl.max(Duration::from_secs(1)),
            instance: instance_id(),
            reserve: Script::new(&format!("{COMMON}\n{}", include_str!("redis/reserve.lua"))),
            settle: Script::new(&format!("{COMMON}\n{}", include_str!("redis/settle.lua"))),
            view: Script::new(include_str!("redis/view.lua")),
            reset: Script::new(include_str!("redis/reset.lua")),
            fallback: InMemory::new(),
            local: Mutex::new(HashSet::new()),
            constraints: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
        })
    }

    /// The hash tag every key starts with: `{<prefix>}`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Makes [`counters`](LimitBackend::counters) show the counters of `constraint` (by its
    /// name), which it learns otherwise from the tickets it reserves.
    pub fn know(&self, constraint: Arc<Constraint>) {
        self.constraints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(constraint.name.clone(), constraint);
    }

    /// The local counters used while Redis fails (fail-open).
    pub fn fallback(&self) -> &InMemory {
        &self.fallback
    }

    fn index_key(&self) -> String {
        format!("{}i", self.tag)
    }

    fn keys(&self, id: &str) -> [String; 6] {
        ["q:", "t:", "n:", "r:", "e:", "s:"].map(|kind| format!("{}{kind}{id}", self.tag))
    }

    fn member(&self, ticket: &Ticket) -> String {
        format!("{}:{}", self.instance, ticket.id)
    }

    /// Runs `script` with a deadline of the timeout, connecting first if need be.
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let call = async {
            let mut conn = self.connector.get().await?;
            invocation
                .invoke_async::<T>(&mut conn)
                .await
                .map_err(Failure::Redis)
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Timeout,
        };
        if result.breaks_connection() {
            self.connector.broken();
        }
        Err(BackendError {
            message: result.message(self.timeout),
        })
    }

    fn remember(&self, ticket: &Ticket) {
        let mut constraints = self
            .constraints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for claim in &ticket.claims {
            if !constraints.contains_key(&claim.key.constraint) {
                constraints.insert(claim.key.constraint.clone(), claim.constraint.clone());
            }
        }
    }

    fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis is answering again; limits are shared again");
        }
    }

    /// Fail-open: logs the first failure of an outage.
    fn failed(&self, err: &BackendError) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error = err.message.as_str(),
                "Redis is failing; limits are counted in this process until it answers"
            );
        }
    }

    fn locals(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn reserve_in_redis(
        &self,
        ticket: &Ticket,
    ) -> Result<Result<Admission, Rejection>, BackendError> {
        let mut invocation = self.reserve.prepare_invoke();
        self.claims_into(&mut invocation, ticket, ticket.tokens, ticket.cost_nanos);
        let reply: Vec<i64> = self.run(&invocation).await?;
        parse_reserve(ticket, &reply).ok_or_else(|| BackendError {
            message: format!("unexpected reply of the Redis reservation script: {reply:?}"),
        })
    }

    /// The keys and arguments of `ticket`'s claims (the layout of `common.lua`).
    fn claims_into(
        &self,
        invocation: &mut ::redis::ScriptInvocation<'_>,
        ticket: &Ticket,
        tokens: u64,
        cost: u64,
    ) {
        invocation
            .key(self.index_key())
            .arg(self.member(ticket))
            .arg(tokens.min(MAX_EXACT))
            .arg(cost.min(MAX_EXACT))
            .arg(millis(self.reservation_ttl))
            .arg(millis(MINUTE) + 1_000)
            .arg(60_000u64);
        for claim in &ticket.claims {
            let id = counter_id(&claim.key);
            for key in self.keys(&id) {
                invocation.key(key);
            }
            let constraint = &claim.constraint;
            let rate = constraint.rate.unwrap_or_default();
            let (budget, window, offset) = match constraint.budget {
                Some(budget) => {
                    let (window, offset) = window_args(budget.window);
                    (budget.limit_nanos.min(MAX_EXACT) as i64, window, offset)
                }
                None => (-1, 1, 0),
            };
            invocation
                .arg(id)
                .arg(rate.per_minute.map_or(-1, i64::from))
                .arg(
                    rate.tokens_per_minute
                        .map_or(-1, |t| t.min(MAX_EXACT) as i64),
                )
                .arg(budget)
                .arg(window)
                .arg(offset);
        }
    }
}

/// The window's length and the offset of its starts from the Unix epoch, in seconds.
fn window_args(window: Window) -> (u64, u64) {
    let offset = if window == Window::Week {
        4 * 86_400
    } else {
        0
    };
    (window.length().as_secs(), offset)
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A counter as it appears in keys: the JSON array of its constraint's name and values.
fn counter_id(key: &CounterKey) -> String {
    let mut parts = Vec::with_capacity(key.values.len() + 1);
    parts.push(&*key.constraint);
    parts.extend(key.values.iter().map(String::as_str));
    serde_json::to_string(&parts).unwrap_or_default()
}

fn parse_counter_id(id: &str) -> Option<CounterKey> {
    let mut parts: Vec<String> = serde_json::from_str(id).ok()?;
    if parts.is_empty() {
        return None;
    }
    let name = parts.remove(0);
    Some(CounterKey {
        constraint: name.into(),
        values: parts,
    })
}

fn parse_reserve(ticket: &Ticket, reply: &[i64]) -> Option<Result<Admission, Rejection>> {
    let count = |v: i64| u64::try_from(v).ok();
    match reply.first()? {
        0 => {
            let [_, index, kind, usage, limit, asked, retry] = reply else {
                return None;
            };
            let claim: &Claim = ticket
                .claims
                .get(usize::try_from(*index).ok()?.checked_sub(1)?)?;
            let kind = match kind {
                1 => LimitKind::Requests,
                2 => LimitKind::Tokens,
                3 => LimitKind::Budget,
                _ => return None,
            };
            Some(Err(Rejection {
                constraint: claim.constraint.clone(),
                key: claim.key.clone(),
                kind,
                usage: count(*usage)?,
                limit: count(*limit)?,
                asked: count(*asked)?,
                retry_after: Duration::from_millis(count(*retry)?),
            }))
        }
        1 => {
            if reply.len() != 1 + 2 * ticket.claims.len() {
                return None;
            }
            let mut admission = Admission::default();
            for (claim, left) in ticket.claims.iter().zip(reply[1..].chunks(2)) {
                let rate = claim.constraint.rate.unwrap_or_default();
                if let (Some(limit), Some(remaining)) = (rate.per_minute, count(left[0])) {
                    let state = RateState {
                        limit: u64::from(limit),
                        remaining,
                        reset: MINUTE,
                    };
                    keep_tightest(&mut admission.requests, state);
                }
                if let (Some(limit), Some(remaining)) = (rate.tokens_per_minute, count(left[1])) {
                    let state = RateState {
                        limit,
                        remaining,
                        reset: MINUTE,
                    };
                    keep_tightest(&mut admission.tokens, state);
                }
            }
            Some(Ok(admission))
        }
        _ => None,
    }
}

fn keep_tightest(slot: &mut Option<RateState>, state: RateState) {
    if slot.is_none_or(|current| state.remaining < current.remaining) {
        *slot = Some(state);
    }
}

/// A random id for this backend, so two replicas' ticket 1 are different members.
fn instance_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[async_trait::async_trait]
impl LimitBackend for RedisBackend {
    async fn reserve(&self, ticket: &Ticket) -> Result<Result<Admission, Rejection>, BackendError> {
        if ticket.claims.is_empty() {
            return Ok(Ok(Admission::default()));
        }
        self.remember(ticket);
        match self.reserve_in_redis(ticket).await {
            Ok(answer) => {
                self.recovered();
                Ok(answer)
            }
            Err(err) => match self.on_error {
                OnBackendError::FailClosed => Err(err),
                OnBackendError::FailOpen => {
                    self.failed(&err);
                    let answer = self.fallback.reserve(ticket).await?;
                    if answer.is_ok() {
                        let mut local = self.locals();
                        if local.len() >= MAX_LOCAL_TICKETS {
                            // Forgotten tickets settle in Redis, where they are not found:
                            // only their spend is charged there.
                            local.clear();
                        }
                        local.insert(ticket.id);
                    }
                    Ok(answer)
                }
            },
        }
    }

    async fn settle(&self, ticket: &Ticket, actual: Actual) -> Result<(), BackendError> {
        if self.locals().remove(&ticket.id) {
            return self.fallback.settle(ticket, actual).await;
        }
        // Only token rates and budgets change at settlement.
        let needed = ticket.claims.iter().any(|claim| {
            claim.constraint.budget.is_some()
                || claim
                    .constraint
                    .rate
                    .is_some_and(|rate| rate.tokens_per_minute.is_some())
        });
        if !needed {
            return Ok(());
        }
        let mut invocation = self.settle.prepare_invoke();
        self.claims_into(&mut invocation, ticket, actual.tokens, actual.cost_nanos);
        match self.run::<i64>(&invocation).await {
            Ok(_) => Ok(()),
            Err(err) => match self.on_error {
                OnBackendError::FailClosed => Err(err),
                // The reservation expires by itself; the outage is logged once.
                OnBackendError::FailOpen => {
                    self.failed(&err);
                    Ok(())
                }
            },
        }
    }

    async fn counters(&self) -> Result<Vec<CounterView>, BackendError> {
        let ids: Vec<String> = {
            let cmd = ::redis::cmd("ZRANGE")
                .arg(self.index_key())
                .arg(0)
                .arg(-1)
                .to_owned();
            let call = async {
                let mut conn = self.connector.get().await?;
                cmd.query_async::<Vec<String>>(&mut conn)
                    .await
                    .map_err(Failure::Redis)
            };
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(ids)) => ids,
                Ok(Err(failure)) => {
                    return Err(BackendError {
                        message: failure.message(self.timeout),
                    });
                }
                Err(_) => {
                    return Err(BackendError {
                        message: Failure::Timeout.message(self.timeout),
                    });
                }
            }
        };
        let constraints = self
            .constraints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut views = Vec::new();
        for id in ids {
            let Some(key) = parse_counter_id(&id) else {
                continue;
            };
            // Counters of constraints this process never saw are not shown (their limits
            // are not known here).
            let Some(constraint) = constraints.get(&key.constraint).cloned() else {
                continue;
            };
            let (window, offset) = constraint.budget.map_or((-1, -1), |b| {
                let (w, o) = window_args(b.window);
                (w as i64, o as i64)
            });
            let mut invocation = self.view.prepare_invoke();
            for k in self.keys(&id) {
                invocation.key(k);
            }
            invocation.arg(window).arg(offset);
            let reply: Vec<i64> = self.run(&invocation).await?;
            let [
                now,
                requests,
                newest_request,
                tokens,
                newest_token,
                reserved,
                spent,
                end,
            ] = reply[..]
            else {
                continue;
            };
            let back = |newest: i64| {
                Duration::from_millis(u64::try_from(newest + 60_000 - now).unwrap_or(0))
            };
            let count = |v: i64| u64::try_from(v).unwrap_or(0);
            let rate = constraint.rate.unwrap_or_default();
            if let Some(limit) = rate.per_minute {
                views.push(CounterView {
                    key: key.clone(),
                    kind: LimitKind::Requests,
                    usage: count(requests),
                    reserved: 0,
                    limit: u64::from(limit),
                    resets_in: if newest_request < 0 {
                        Duration::ZERO
                    } else {
                        back(newest_request)
                    },
                });
            }
            if let Some(limit) = rate.tokens_per_minute {
                views.push(CounterView {
                    key: key.clone(),
                    kind: LimitKind::Tokens,
                    usage: count(tokens),
                    reserved: 0,
                    limit,
                    resets_in: if newest_token < 0 {
                        Duration::ZERO
                    } else {
                        back(newest_token)
                    },
                });
            }
            if let Some(budget) = constraint.budget {
                let reserved = count(reserved);
                views.push(CounterView {
                    key: key.clone(),
                    kind: LimitKind::Budget,
                    usage: count(spent).saturating_add(reserved),
                    reserved,
                    limit: budget.limit_nanos,
                    resets_in: Duration::from_secs(count(end).saturating_sub(count(now) / 1000)),
                });
            }
        }
        views.sort_by(|a, b| (&a.key, a.kind as u8).cmp(&(&b.key, b.kind as u8)));
        Ok(views)
    }

    async fn reset(&self, constraint: &str) -> Result<usize, BackendError> {
        let name = serde_json::to_string(constraint).unwrap_or_default();
        let mut invocation = self.reset.prepare_invoke();
        invocation
            .key(self.index_key())
            .arg(&self.tag)
            .arg(format!("[{name},"))
            .arg(format!("[{name}]"));
        let count: i64 = self.run(&invocation).await?;
        let local = self.fallback.reset(constraint).await?;
        Ok(usize::try_from(count).unwrap_or(0).max(local))
    }
}

/// Why a call failed.
enum Failure {
    Pool(String),
    Redis(RedisError),
    Timeout,
}

impl Failure {
    /// Whether the connection should be dropped (the next call connects again).
    fn breaks_connection(&self) -> bool {
        match self {
            Failure::Pool(_) | Failure::Timeout => true,
            Failure::Redis(err) => {
                err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_timeout()
                    || err.is_unrecoverable_error()
            }
        }
    }

    fn message(&self, timeout: Duration) -> String {
        match self {
            Failure::Pool(message) => format!("Redis is unreachable: {message}"),
            Failure::Redis(err) => format!("Redis failed: {err}"),
            Failure::Timeout => format!("Redis did not answer within {timeout:?}"),
        }
    }
}

enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// One multiplexed connection (or cluster connection), made by the pool on first use and
/// shared by every call: the pool's own checkout pings each connection it hands out again,
/// which would double the round trips.
struct Connector {
    pool: Pool,
    current: tokio::sync::Mutex<Option<Conn>>,
}

impl Connector {
    async fn get(&self) -> Result<Conn, Failure> {
        let mut current = self.current.lock().await;
        if let Some(conn) = &*current {
            return Ok(conn.clone());
        }
        let conn = match &self.pool {
            Pool::Single(pool) => Conn::Single(deadpool_redis::Connection::take(
                pool.get().await.map_err(|e| Failure::Pool(e.to_string()))?,
            )),
            Pool::Cluster(pool) => Conn::Cluster(deadpool_redis::cluster::Connection::take(
                pool.get().await.map_err(|e| Failure::Pool(e.to_string()))?,
            )),
        };
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection, unless another call is connecting right now.
    fn broken(&self) {
        if let Ok(mut current) = self.current.try_lock() {
            *current = None;
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_ids_round_trip() {
        let key = CounterKey {
            constraint: "per-user".into(),
            values: vec!["a:b".to_owned(), "{x}\"".to_owned()],
        };
        let id = counter_id(&key);
        assert_eq!(id, r#"["per-user","a:b","{x}\""]"#);
        assert_eq!(parse_counter_id(&id), Some(key));
    }

    #[test]
    fn prefixes_are_hash_tags() {
        let backend = RedisBackend::new(RedisOptions::default()).unwrap();
        assert_eq!(backend.tag(), "{sllmp:limits:}");
        assert_eq!(backend.index_key(), "{sllmp:limits:}i");
        for prefix in ["", "a{b", "a}"] {
            let options = RedisOptions {
                prefix: prefix.to_owned(),
                ..RedisOptions::default()
            };
            assert!(RedisBackend::new(options).is_err(), "{prefix:?}");
        }
    }

    #[test]
    fn bad_urls_are_refused_without_showing_them() {
        for url in [
            "redis://:s3cr3t@127.0.0.1:notaport",
            "http://:s3cr3t@x",
            "s3cr3t",
        ] {
            let options = RedisOptions {
                urls: vec![url.to_owned()],
                ..RedisOptions::default()
            };
            let err = RedisBackend::new(options).unwrap_err();
            assert!(!err.message.contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn weeks_start_on_monday() {
        let (length, offset) = window_args(Window::Week);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_391_910);
        let secs = 1_796_391_910u64;
        assert_eq!(
            (secs - offset) / length * length + offset,
            Window::Week.start(at)
        );
    }
}
