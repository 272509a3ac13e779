//! [`InMemory`]: counters in this process, exact under any concurrency.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{
    Actual, Admission, BackendError, CounterKey, CounterView, LimitBackend, LimitKind, RateState,
    Rejection, Ticket,
};

/// The sliding window of rate limits.
const MINUTE: Duration = Duration::from_secs(60);

/// Sweep idle counters every this many reservations, so memory stays bounded by the
/// counters in use.
const SWEEP_EVERY: u64 = 1024;

/// Counters in this process's memory: one lock around all of them, so a ticket is reserved
/// on all its counters or none, exactly, whatever the concurrency. Rate limits count the
/// requests (and tokens) admitted in the last 60 seconds; budgets the spend in the current
/// fixed UTC window plus what running requests reserved. Counters with nothing live are
/// dropped as requests come, so memory is bounded by the counters in use.
#[derive(Debug, Default)]
pub struct InMemory {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<CounterKey, Counter>,
    reservations: u64,
}

#[derive(Debug, Default)]
struct Counter {
    /// The constraint counted, from the first reservation (for the views).
    constraint: Option<std::sync::Arc<crate::Constraint>>,
    /// Admitted requests of the last minute: when, and which ticket.
    requests: VecDeque<(Instant, u64)>,
    /// Admitted tokens of the last minute: when, which ticket, how many.
    tokens: VecDeque<(Instant, u64, u64)>,
    token_sum: u64,
    budget: Option<Budget>,
}

#[derive(Debug)]
struct Budget {
    /// The Unix second the current window started.
    window_start: u64,
    /// The Unix second it ends.
    window_end: u64,
    spent: u64,
    /// What running tickets reserved: ticket id → nano-USD.
    reserved: HashMap<u64, u64>,
}

impl Budget {
    fn reserved_total(&self) -> u64 {
        self.reserved
            .values()
            .fold(0, |sum, r| sum.saturating_add(*r))
    }
}

impl Counter {
    fn prune(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= MINUTE)
        {
            self.requests.pop_front();
        }
        while let Some((at, _, tokens)) = self.tokens.front() {
            if now.duration_since(*at) < MINUTE {
                break;
            }
            self.token_sum -= tokens;
            self.tokens.pop_front();
        }
    }

    fn budget(&mut self, window: crate::Window, wall: SystemTime) -> &mut Budget {
        let window_start = window.start(wall);
        let window_end = window_start + window.length().as_secs();
        let budget = self.budget.get_or_insert_with(|| Budget {
            window_start,
            window_end,
            spent: 0,
            reserved: HashMap::new(),
        });
        if budget.window_start != window_start {
            // A new window: spend starts over; running reservations carry on.
            budget.window_start = window_start;
            budget.window_end = window_end;
            budget.spent = 0;
        }
        budget
    }

    /// Nothing live: no request or token in the last minute (pruned first), no running
    /// reservation, no spend in a window still open.
    fn is_idle(&self, wall: SystemTime) -> bool {
        self.requests.is_empty()
            && self.tokens.is_empty()
            && self.budget.as_ref().is_none_or(|b| {
                b.reserved.is_empty() && (b.spent == 0 || b.window_end <= unix(wall))
            })
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl InMemory {
    /// An empty store.
    pub fn new() -> InMemory {
        InMemory::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`LimitBackend::reserve`] at a given time (tests move the clock).
    pub fn reserve_at(
        &self,
        ticket: &Ticket,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Admission, Rejection> {
        let mut state = self.lock();
        state.reservations += 1;
        if state.reservations.is_multiple_of(SWEEP_EVERY) {
            sweep(&mut state.counters, now, wall);
        }
        // Check every claim first: a ticket refused by one counter consumes nothing.
        for claim in &ticket.claims {
            let counter = state.counters.entry(claim.key.clone()).or_default();
            counter.prune(now);
            if counter.constraint.is_none() {
                counter.constraint = Some(claim.constraint.clone());
            }
            let constraint = &claim.constraint;
            let refuse = |kind, usage, limit, asked, retry_after| Rejection {
                constraint: claim.constraint.clone(),
                key: claim.key.clone(),
                kind,
                usage,
                limit,
                asked,
                retry_after,
            };
            if let Some(rate) = &constraint.rate {
                if let Some(per_minute) = rate.per_minute {
                    let used = counter.requests.len() as u64;
                    if used + 1 > u64::from(per_minute) {
                        let oldest = counter.requests.front().map_or(now, |(at, _)| *at);
                        let retry = (oldest + MINUTE).saturating_duration_since(now);
                        return Err(refuse(
                            LimitKind::Requests,
                            used,
                            u64::from(per_minute),
                            1,
                            retry,
                        ));
                    }
                }
                if let Some(limit) = rate.tokens_per_minute
                    && counter.token_sum + ticket.tokens > limit
                {
                    let retry = tokens_back(counter, ticket.tokens, limit, now);
                    return Err(refuse(
                        LimitKind::Tokens,
                        counter.token_sum,
                        limit,
                        ticket.tokens,
                        retry,
                    ));
                }
            }
            if let Some(budget_limit) = &constraint.budget {
                let budget = counter.budget(budget_limit.window, wall);
                let used = budget.spent.saturating_add(budget.reserved_total());
                if used.saturating_add(ticket.cost_nanos) > budget_limit.limit_nanos {
                    let retry =
                        Duration::from_secs(budget.window_end.saturating_sub(unix(wall)).max(1));
                    return Err(refuse(
                        LimitKind::Budget,
                        used,
                        budget_limit.limit_nanos,
                        ticket.cost_nanos,
                        retry,
                    ));
                }
            }
        }
        let mut admission = Admission::default();
        for claim in &ticket.claims {
            let counter = state
                .counters
                .get_mut(&claim.key)
                .expect("checked above, under the same lock");
            if let Some(rate) = &claim.constraint.rate {
                if let Some(per_minute) = rate.per_minute {
                    counter.requests.push_back((now, ticket.id));
                    let limit = u64::from(per_minute);
                    let state = RateState {
                        limit,
                        remaining: limit - counter.requests.len() as u64,
                        reset: MINUTE,
                    };
                    keep_tightest(&mut admission.requests, state);
                }
                if let Some(limit) = rate.tokens_per_minute {
                    counter.tokens.push_back((now, ticket.id, ticket.tokens));
                    counter.token_sum += ticket.tokens;
                    let state = RateState {
                        limit,
                        remaining: limit - counter.token_sum,
                        reset: MINUTE,
                    };
                    keep_tightest(&mut admission.tokens, state);
                }
            }
            if let Some(budget_limit) = &claim.constraint.budget {
                let budget = counter.budget(budget_limit.window, wall);
                budget.reserved.insert(ticket.id, ticket.cost_nanos);
            }
        }
        Ok(admission)
    }

    /// [`LimitBackend::settle`] at a given time.
    pub fn settle_at(&self, ticket: &Ticket, actual: Actual, wall: SystemTime) {
        let mut state = self.lock();
        for claim in &ticket.claims {
            let Some(counter) = state.counters.get_mut(&claim.key) else {
                continue; // reset meanwhile
            };
            if let Some(entry) = counter
                .tokens
                .iter_mut()
                .find(|(_, id, _)| *id == ticket.id)
            {
                counter.token_sum = counter.token_sum - entry.2 + actual.tokens;
                entry.2 = actual.tokens;
            }
            if let Some(budget_limit) = &claim.constraint.budget {
                let budget = counter.budget(budget_limit.window, wall);
                budget.reserved.remove(&ticket.id);
                budget.spent = budget.spent.saturating_add(actual.cost_nanos);
            }
        }
    }

    /// [`LimitBackend::counters`] at a given time.
    pub fn counters_at(&self, now: Instant, wall: SystemTime) -> Vec<CounterView> {
        let mut state = self.lock();
        let mut views = Vec::new();
        for (key, counter) in state.counters.iter_mut() {
            counter.prune(now);
            let Some(constraint) = counter.constraint.clone() else {
                continue;
            };
            let rate = constraint.rate.unwrap_or_default();
            let back = |newest: Option<Instant>| {
                newest.map_or(Duration::ZERO, |at| {
                    (at + MINUTE).saturating_duration_since(now)
                })
            };
            if let Some(limit) = rate.per_minute {
                views.push(CounterView {
                    key: key.clone(),
                    kind: LimitKind::Requests,
                    usage: counter.requests.len() as u64,
                    reserved: 0,
                    limit: u64::from(limit),
                    resets_in: back(counter.requests.back().map(|(at, _)| *at)),
                });
            }
            if let Some(limit) = rate.tokens_per_minute {
                views.push(CounterView {
                    key: key.clone(),
                    kind: LimitKind::Tokens,
                    usage: counter.token_sum,
                    reserved: 0,
                    limit,
                    resets_in: back(counter.tokens.back().map(|(at, _, _)| *at)),
                });
            }
            if let Some(budget_limit) = constraint.budget {
                let budget = counter.budget(budget_limit.window, wall);
                views.push(CounterView {
                    key: key.clone(),
                    kind: LimitKind::Budget,
                    usage: budget.spent.saturating_add(budget.reserved_total()),
                    reserved: budget.reserved_total(),
                    limit: budget_limit.limit_nanos,
                    resets_in: Duration::from_secs(budget.window_end.saturating_sub(unix(wall))),
                });
            }
        }
        views.sort_by(|a, b| (&a.key, a.kind as u8).cmp(&(&b.key, b.kind as u8)));
        views
    }
}

/// The wait until `tokens` more fit under `limit`, as the oldest entries leave the window.
fn tokens_back(counter: &Counter, tokens: u64, limit: u64, now: Instant) -> Duration {
    if tokens > limit {
        return MINUTE; // never fits: say a minute, the rejection message says why
    }
    let mut sum = counter.token_sum;
    for (at, _, entry) in &counter.tokens {
        sum -= entry;
        if sum + tokens <= limit {
            return (*at + MINUTE).saturating_duration_since(now);
        }
    }
    MINUTE
}

fn keep_tightest(slot: &mut Option<RateState>, state: RateState) {
    if slot.is_none_or(|current| state.remaining < current.remaining) {
        *slot = Some(state);
    }
}

/// Drops counters with nothing live ([`Counter::is_idle`]).
fn sweep(counters: &mut HashMap<CounterKey, Counter>, now: Instant, wall: SystemTime) {
    counters.retain(|_, counter| {
        counter.prune(now);
        !counter.is_idle(wall)
    });
}

#[async_trait::async_trait]
impl LimitBackend for InMemory {
    async fn reserve(&self, ticket: &Ticket) -> Result<Result<Admission, Rejection>, BackendError> {
        Ok(self.reserve_at(ticket, Instant::now(), SystemTime::now()))
    }

    async fn settle(&self, ticket: &Ticket, actual: Actual) -> Result<(), BackendError> {
        self.settle_at(ticket, actual, SystemTime::now());
        Ok(())
    }

    async fn counters(&self) -> Result<Vec<CounterView>, BackendError> {
        Ok(self.counters_at(Instant::now(), SystemTime::now()))
    }

    async fn reset(&self, constraint: &str) -> Result<usize, BackendError> {
        let mut state = self.lock();
        let before = state.counters.len();
        state
            .counters
            .retain(|key, _| key.constraint.as_ref() != constraint);
        Ok(before - state.counters.len())
    }
}
