//! The four scenarios. Each runs its targets in alternation (direct, nginx, sllmp, rotated
//! every round), so that every ratio or difference compares figures of the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Plan;
use super::env::{Env, Target, model};
use super::http::Conn;
use super::oha::{Oha, Row, shell_words};
use super::procs::{clock_ticks, status_kb, tree_cpu_ticks, tree_rss_kb};
use super::stats::{Samples, median};

/// A realistic small chat request (system + user turn) with the mock's controls.
pub(crate) fn chat_body(target: Target, stream: bool, mock: serde_json::Value) -> String {
    let mut body = json!({
        "model": model(target),
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
            {"role": "user", "content": "Explain in two sentences what a reverse proxy does and why one would put it in front of an LLM API."}
        ],
        "temperature": 0.7,
        "max_tokens": 256,
        "user": "bench-user-1",
        "mock": mock,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}

/// Reply text long enough to be split into `chunks` pieces of a few words.
fn reply_text(chunks: usize) -> String {
    const WORDS: [&str; 6] = [
        "A ",
        "reverse ",
        "proxy ",
        "forwards ",
        "requests ",
        "upstream. ",
    ];
    (0..chunks * 2).map(|i| WORDS[i % WORDS.len()]).collect()
}

/// The commands a scenario ran, one per target (the ports of this run).
#[derive(Debug, Default, Clone)]
pub(crate) struct Commands(pub(crate) Vec<String>);

// ---------------------------------------------------------------------------------------
// S1

/// One S1 run of one target.
#[derive(Debug, Clone)]
pub(crate) struct S1Run {
    pub(crate) target: Target,
    pub(crate) round: usize,
    pub(crate) rps: f64,
    pub(crate) failures: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// CPU time of the proxy (sllmp or nginx's master and worker) per request, µs.
    pub(crate) proxy_cpu_us: Option<f64>,
    /// CPU time of the mock upstream per request, µs.
    pub(crate) mock_cpu_us: f64,
}

/// S1: throughput, non-streaming, upstream latency 0, fixed concurrency.
pub(crate) fn s1(env: &mut Env, oha: &Oha, plan: &Plan) -> anyhow::Result<(Vec<S1Run>, Commands)> {
    let tick_us = 1e6 / clock_ticks() as f64;
    let concurrency = plan.s1_concurrency.to_string();
    let secs = format!("{}s", plan.s1_secs);
    let mut runs = Vec::new();
    let mut commands = Commands::default();
    // Warm-up: connection pools filled, code paged in.
    let warmup = format!("{}s", plan.s1_warmup_secs);
    for target in Target::S1 {
        let body = chat_body(target, false, json!({"latency_ms": 0}));
        let args = Oha::args(
            &env.url(target),
            &body,
            &["-c", &concurrency, "-z", &warmup, "-w"],
        );
        oha.run_json(&args, 60)?;
    }
    for round in 0..plan.s1_rounds {
        for target in Target::s1_order(round) {
            let body = chat_body(target, false, json!({"latency_ms": 0}));
            let args = Oha::args(
                &env.url(target),
                &body,
                &["-c", &concurrency, "-z", &secs, "-w"],
            );
            if round == 0 {
                commands.0.push(format!(
                    "{}: {}",
                    target.name(),
                    shell_words(&oha.bin, &args)
                ));
            }
            let proxy = env.proxy_pid(target);
            let mock_pid = env.mock.pid();
            let proxy_before = proxy.map(tree_cpu_ticks);
            let mock_before = tree_cpu_ticks(mock_pid);
            let summary = oha.run_json(&args, plan.s1_secs + 60)?;
            let proxy_after = proxy.map(tree_cpu_ticks);
            let mock_after = tree_cpu_ticks(mock_pid);
            let n = summary.responses.max(1) as f64;
            let run = S1Run {
                target,
                round,
                rps: summary.rps,
                failures: summary.errors + summary.non_200,
                p50_ms: summary.p50_ms,
                p99_ms: summary.p99_ms,
                proxy_cpu_us: proxy_before
                    .zip(proxy_after)
                    .map(|(b, a)| (a.saturating_sub(b)) as f64 * tick_us / n),
                mock_cpu_us: mock_after.saturating_sub(mock_before) as f64 * tick_us / n,
            };
            eprintln!(
                "bench: S1 round {} {:6}: {:8.0} req/s, p50 {:.2} ms, failures {}, proxy CPU {} µs/req",
                round + 1,
                target.name(),
                run.rps,
                run.p50_ms,
                run.failures,
                run.proxy_cpu_us.map_or("-".into(), |v| format!("{v:.0}"))
            );
            runs.push(run);
            env.check_alive()?;
        }
    }
    Ok((runs, commands))
}

// ---------------------------------------------------------------------------------------
// S2

/// S2 results of one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct S2Target {
    /// Latencies of every round, pooled.
    pub(crate) all: Samples,
    /// Per round: (p50, p99) in ms.
    pub(crate) rounds: Vec<(f64, f64)>,
    /// Requests sent.
    pub(crate) sent: u64,
    /// Requests without a 200 (missing from oha's output, or another status).
    pub(crate) failures: u64,
}

/// S2: added latency, non-streaming, upstream latency 50 ms, fixed rate (open loop).
pub(crate) fn s2(
    env: &mut Env,
    oha: &Oha,
    plan: &Plan,
) -> anyhow::Result<([S2Target; 3], Commands)> {
    let rate = plan.s2_rate.to_string();
    let n = plan.s2_rate * plan.s2_secs;
    let count = n.to_string();
    let mut out: [S2Target; 3] = Default::default();
    let mut raw: [Vec<f64>; 3] = Default::default();
    let mut commands = Commands::default();
    for round in 0..plan.rounds {
        for target in Target::order(round) {
            let body = chat_body(target, false, json!({"latency_ms": 50}));
            let args = Oha::args(
                &env.url(target),
                &body,
                &[
                    "-c",
                    "64",
                    "-q",
                    &rate,
                    "-n",
                    &count,
                    "--latency-correction",
                ],
            );
            if round == 0 {
                commands.0.push(format!(
                    "{}: {}",
                    target.name(),
                    shell_words(&oha.bin, &args)
                ));
            }
            let rows: Vec<Row> = oha.run_csv(&args, plan.s2_secs + 60)?;
            let ok: Vec<f64> = rows
                .iter()
                .filter(|r| r.status == 200)
                .map(|r| r.duration_ms)
                .collect();
            let samples = Samples::from_ms(ok.iter().copied());
            let i = Target::ALL
                .iter()
                .position(|t| *t == target)
                .expect("a target");
            out[i].rounds.push((samples.pct(50.0), samples.pct(99.0)));
            out[i].sent += n;
            out[i].failures += n.saturating_sub(ok.len() as u64);
            eprintln!(
                "bench: S2 round {} {:6}: p50 {:.2} ms, p99 {:.2} ms, {} of {} ok",
                round + 1,
                target.name(),
                samples.pct(50.0),
                samples.pct(99.0),
                ok.len(),
                n
            );
            raw[i].extend(ok);
            env.check_alive()?;
        }
    }
    for (i, values) in raw.into_iter().enumerate() {
        out[i].all = Samples::from_ms(values);
    }
    Ok((out, commands))
}

// ---------------------------------------------------------------------------------------
// S3

/// S3 results of one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct S3Target {
    pub(crate) ttfb: Samples,
    pub(crate) ttlb: Samples,
    /// Median gap between two consecutive events of a stream, per stream, ms.
    pub(crate) gaps: Samples,
    /// Events per stream (median).
    pub(crate) events: f64,
    pub(crate) streams: usize,
    pub(crate) failures: usize,
}

/// S3: streaming, 20 chunks 5 ms apart: added time to first byte and to last byte.
pub(crate) fn s3(env: &mut Env, plan: &Plan) -> anyhow::Result<([S3Target; 3], Commands)> {
    let mock =
        json!({"latency_ms": 0, "chunks": 20, "chunk_interval_ms": 5, "content": reply_text(20)});
    #[derive(Default)]
    struct Pool {
        ttfb: Vec<Duration>,
        ttlb: Vec<Duration>,
        gaps: Vec<f64>,
        events: Vec<f64>,
        failures: usize,
    }
    let mut pooled: [Pool; 3] = Default::default();
    let commands = Commands(
        Target::ALL
            .iter()
            .map(|t| {
                format!(
                    "{}: {} keep-alive connections, each POSTing back to back for {} s per round: {}",
                    t.name(),
                    plan.s3_workers,
                    plan.s3_secs,
                    chat_body(*t, true, mock.clone())
                )
            })
            .collect(),
    );
    for round in 0..plan.rounds {
        for target in Target::order(round) {
            let body = Arc::new(chat_body(target, true, mock.clone()));
            let addr = env.addr(target);
            let deadline = Instant::now() + Duration::from_secs(plan.s3_secs);
            let workers: Vec<_> = (0..plan.s3_workers)
                .map(|_| {
                    let body = Arc::clone(&body);
                    std::thread::spawn(move || {
                        let mut conn = Conn::new(addr);
                        let mut got = Vec::new();
                        let mut failures = 0usize;
                        // Bounded: by time, and by count.
                        for _ in 0..100_000 {
                            if Instant::now() >= deadline {
                                break;
                            }
                            match conn.request(
                                "POST",
                                "/v1/chat/completions",
                                body.as_bytes(),
                                true,
                            ) {
                                Ok(t)
                                    if t.status == 200 && t.tail.ends_with(b"data: [DONE]\n\n") =>
                                {
                                    got.push(t)
                                }
                                _ => failures += 1,
                            }
                        }
                        (got, failures)
                    })
                })
                .collect();
            let i = Target::ALL
                .iter()
                .position(|t| *t == target)
                .expect("a target");
            let mut streams = 0;
            for worker in workers {
                let (got, failures) = worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("an S3 client panicked"))?;
                pooled[i].failures += failures;
                streams += got.len();
                for t in got {
                    pooled[i].ttfb.push(t.ttfb);
                    pooled[i].ttlb.push(t.total);
                    let gaps: Vec<f64> = t
                        .events
                        .windows(2)
                        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
                        .collect();
                    pooled[i].gaps.push(median(&gaps));
                    pooled[i].events.push(t.events.len() as f64);
                }
            }
            eprintln!(
                "bench: S3 round {} {:6}: {} streams",
                round + 1,
                target.name(),
                streams
            );
            env.check_alive()?;
        }
    }
    let mut out: [S3Target; 3] = Default::default();
    for (i, pool) in pooled.into_iter().enumerate() {
        out[i] = S3Target {
            streams: pool.ttfb.len(),
            ttfb: Samples::from_durations(pool.ttfb),
            ttlb: Samples::from_durations(pool.ttlb),
            gaps: Samples::from_ms(pool.gaps),
            events: median(&pool.events),
            failures: pool.failures,
        };
    }
    Ok((out, commands))
}

// ---------------------------------------------------------------------------------------
// S4

/// One S4 run.
#[derive(Debug, Clone)]
pub(crate) struct S4Run {
    pub(crate) target: Target,
    pub(crate) streams: usize,
    pub(crate) completed: usize,
    pub(crate) errors: usize,
    pub(crate) error_examples: Vec<String>,
    /// Most streams open at the same time (headers received, body not finished).
    pub(crate) max_open: usize,
    pub(crate) wall: Duration,
    /// The proxy's peak RSS (kB): VmHWM of sllmp (a fresh process); the highest sampled
    /// RSS of nginx's master plus worker.
    pub(crate) peak_rss_kb: Option<u64>,
    /// The highest RSS sampled every 50 ms (kB).
    pub(crate) sampled_rss_kb: Option<u64>,
    pub(crate) events_per_stream: f64,
}

/// Startup figures of sllmp.
#[derive(Debug, Clone, Default)]
pub(crate) struct Startup {
    /// Spawn to first successful `/health`, ms, per start.
    pub(crate) ready_ms: Vec<f64>,
    /// VmRSS 500 ms after ready, kB, per start.
    pub(crate) idle_rss_kb: Vec<u64>,
}

/// Starts sllmp afresh `plan.startups` times: time to ready and idle RSS.
pub(crate) fn startup(env: &mut Env, plan: &Plan) -> anyhow::Result<Startup> {
    let mut out = Startup::default();
    for _ in 0..plan.startups {
        let ready = env.restart_sllmp()?;
        std::thread::sleep(Duration::from_millis(500));
        out.ready_ms.push(ready.as_secs_f64() * 1000.0);
        out.idle_rss_kb
            .push(status_kb(env.sllmp.pid(), "VmRSS").unwrap_or(0));
    }
    eprintln!(
        "bench: startup: ready {:?} ms, idle RSS {:?} kB",
        out.ready_ms, out.idle_rss_kb
    );
    Ok(out)
}

/// S4: many concurrent streams, 50 chunks 100 ms apart: errors and the proxy's memory.
pub(crate) fn s4(env: &mut Env, plan: &Plan) -> anyhow::Result<(Vec<S4Run>, Commands)> {
    let mock = json!({"latency_ms": 0, "chunks": plan.s4_chunks, "chunk_interval_ms": 100, "content": reply_text(plan.s4_chunks)});
    let mut runs = Vec::new();
    let mut commands = Commands::default();
    for target in plan.s4_targets.iter().copied() {
        if target == Target::Sllmp {
            // A fresh process: its high-water mark is this scenario's.
            env.restart_sllmp()?;
        }
        let body = Arc::new(chat_body(target, true, mock.clone()));
        commands.0.push(format!(
            "{}: {} connections opened at once, each POSTing (Connection: close) {}",
            target.name(),
            plan.s4_streams,
            body
        ));
        let addr = env.addr(target);
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut threads = Vec::new();
        for _ in 0..plan.s4_streams {
            let body = Arc::clone(&body);
            let open = Arc::clone(&open);
            let max_open = Arc::clone(&max_open);
            let thread = std::thread::Builder::new().stack_size(256 * 1024).spawn(
                move || -> Result<usize, String> {
                    let mut conn = Conn::new(addr);
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    max_open.fetch_max(now, Ordering::SeqCst);
                    let result =
                        conn.request("POST", "/v1/chat/completions", body.as_bytes(), false);
                    open.fetch_sub(1, Ordering::SeqCst);
                    match result {
                        Ok(t) if t.status == 200 && t.tail.ends_with(b"data: [DONE]\n\n") => {
                            Ok(t.events.len())
                        }
                        Ok(t) => Err(format!(
                            "status {}, ended with {:?}",
                            t.status,
                            String::from_utf8_lossy(&t.tail)
                        )),
                        Err(err) => Err(err.to_string()),
                    }
                },
            )?;
            threads.push(thread);
        }
        // Sample the proxy's memory while the streams run.
        let pid = env.proxy_pid(target);
        let mut sampled: Option<u64> = None;
        let limit = started + Duration::from_secs(120);
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < limit {
            if let Some(pid) = pid {
                let rss = tree_rss_kb(pid);
                sampled = Some(sampled.map_or(rss, |s| s.max(rss)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut completed = 0;
        let mut errors = 0;
        let mut examples = Vec::new();
        let mut events = Vec::new();
        for thread in threads {
            match thread.join() {
                Ok(Ok(n)) => {
                    completed += 1;
                    events.push(n as f64);
                }
                Ok(Err(err)) => {
                    errors += 1;
                    if examples.len() < 3 {
                        examples.push(err);
                    }
                }
                Err(_) => errors += 1,
            }
        }
        let wall = started.elapsed();
        let peak = match target {
            Target::Sllmp => status_kb(env.sllmp.pid(), "VmHWM"),
            Target::Nginx | Target::Passthrough => sampled,
            Target::Direct => None,
        };
        let run = S4Run {
            target,
            streams: plan.s4_streams,
            completed,
            errors,
            error_examples: examples,
            max_open: max_open.load(Ordering::SeqCst),
            wall,
            peak_rss_kb: peak,
            sampled_rss_kb: sampled,
            events_per_stream: median(&events),
        };
        eprintln!(
            "bench: S4 {:6}: {} of {} streams complete, {} errors, {} open at once, peak RSS {} kB, {:.1} s",
            target.name(),
            run.completed,
            run.streams,
            run.errors,
            run.max_open,
            run.peak_rss_kb.map_or("-".into(), |v| v.to_string()),
            wall.as_secs_f64()
        );
        runs.push(run);
        env.check_alive()?;
    }
    Ok((runs, commands))
}
