//! A CPU profile of sllmp under S1 load, with `perf` (software clock event: it works in
//! VMs without hardware counters).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::env::{Env, Target};
use super::oha::Oha;
use super::scenarios::chat_body;

/// What the profile found.
pub(crate) struct Profile {
    /// The `perf record` command line.
    pub(crate) command: String,
    /// Self time per symbol (`perf report --no-children`), top lines.
    pub(crate) self_time: String,
    /// Inclusive time per symbol (`perf report --children`), top lines.
    pub(crate) inclusive: String,
    /// Share of the samples per shared object.
    pub(crate) dsos: String,
    /// `(what, frame, percent of samples)`: where the time goes, by area.
    pub(crate) areas: Vec<(&'static str, &'static str, f64)>,
    /// sllmp's CPU per request by crate.
    pub(crate) sllmp: Breakdown,
    /// The passthrough's CPU per request by crate.
    pub(crate) passthrough: Breakdown,
}

/// Areas of interest: a label and the frame whose inclusive time measures it.
const AREAS: [(&str, &str); 12] = [
    (
        "non-streamed pipeline (`Driver::run_inline`, includes the provider call)",
        "sllmp_pipeline::pipeline::Driver::run_inline",
    ),
    (
        "provider call (`OpenAi::chat`: encode, HTTP client, decode)",
        "<sllmp_providers::openai::OpenAi as sllmp_core::provider::Provider>::chat",
    ),
    (
        "upstream connections (`run_connection`: hyper's HTTP/1 client connection tasks)",
        "sllmp_providers::pool::run_connection",
    ),
    (
        "upstream request body (`UpstreamRequest::to_json`: the client's bytes, routed)",
        "sllmp_core::request::UpstreamRequest::to_json",
    ),
    (
        "request parse (`ChatRequest::from_slice`: the fast reader, serde where it gives up)",
        "sllmp_core::chat::ChatRequest::from_slice",
    ),
    (
        "answer parse (`Completion::from_json`: the fast reader, serde where it gives up)",
        "sllmp_core::completion::Completion::from_json",
    ),
    (
        "`on_complete` of every middleware",
        "sllmp_pipeline::pipeline::Driver::complete",
    ),
    (
        "request log (`RequestLog::on_complete`: the line written directly)",
        "<sllmp_observe::request_log::RequestLog as sllmp_pipeline::middleware::Middleware>::on_complete",
    ),
    (
        "hyper HTTP/1 dispatchers (server and client; includes socket writes)",
        "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch",
    ),
    (
        "`writev` system calls (loopback TCP send, runs the receiver's softirq)",
        "__GI___writev",
    ),
    (
        "`futex` system calls (cross-thread wake-ups)",
        "__x64_sys_futex",
    ),
    (
        "tokio's current-thread loop, all tasks (`--workers 1`)",
        "tokio::runtime::scheduler::current_thread::Context::run_task",
    ),
];

/// Self time of the allocator and of memory copies, as extra areas: symbols by prefix (glibc
/// picks its `memcpy` by CPU: `avx`, `evex`, `avx512`, …; mimalloc's entry points vary with
/// how it is called).
const SELF_AREAS: [(&str, &[&str]); 2] = [
    ("mimalloc (self time)", &["mi_", "_mi_"]),
    (
        "memcpy/memmove (self time)",
        &["__memmove_", "__memcpy_", "__memset_"],
    ),
];

/// Whether `perf record` works here.
pub(crate) fn perf_available() -> bool {
    Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-o",
            "/dev/null",
            "--",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Records `target`'s process with `perf` for `secs` seconds of S1 load; returns the
/// load's requests per second and the `perf record` arguments.
fn record(
    env: &Env,
    oha: &Oha,
    target: Target,
    secs: u64,
    data: &Path,
) -> anyhow::Result<(f64, Vec<String>)> {
    let pid = env
        .proxy_pid(target)
        .context("only a proxy can be profiled")?;
    let body = chat_body(target, false, json!({"latency_ms": 0}));
    let duration = format!("{}s", secs + 3);
    let mut args = Oha::args(
        &env.url(target),
        &body,
        &["-c", "64", "-z", &duration, "-w"],
    );
    args.splice(0..0, ["--output-format".to_string(), "json".to_string()]);
    let load = Command::new("timeout")
        .arg((secs + 60).to_string())
        .arg(&oha.bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start oha")?;
    std::thread::sleep(Duration::from_secs(1));
    let record_args: Vec<String> = [
        "record",
        "-q",
        "-e",
        "cpu-clock",
        "-F",
        "499",
        "--call-graph",
        "dwarf,16384",
        "-p",
        &pid.to_string(),
        "-o",
        &data.display().to_string(),
        "--",
        "sleep",
        &secs.to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    let recorded = Command::new("timeout")
        .arg((secs + 60).to_string())
        .arg("perf")
        .args(&record_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let out = load.wait_with_output().context("oha failed")?;
    anyhow::ensure!(
        recorded.as_ref().is_ok_and(|s| s.success()),
        "perf record failed ({recorded:?})"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("oha printed no JSON")?;
    let rps = json
        .pointer("/summary/requestsPerSec")
        .and_then(serde_json::Value::as_f64)
        .context("oha's JSON has no requestsPerSec")?;
    Ok((rps, record_args))
}

/// CPU time per request by crate (self time), from a recording.
pub(crate) struct Breakdown {
    /// Requests per second during the recording.
    pub(crate) rps: f64,
    /// `(area, µs of CPU per request)`.
    pub(crate) areas: Vec<(&'static str, f64)>,
    /// Total µs of CPU per request.
    pub(crate) total: f64,
}

/// The area of a sample: the crate its symbol belongs to, more or less.
fn area_of(dso: &str, symbol: &str) -> &'static str {
    if dso.contains("kernel") {
        return "kernel (syscalls, loopback TCP, scheduler)";
    }
    if dso.starts_with("libc") {
        return if symbol.contains("mem") && !symbol.contains("malloc") {
            "libc memcpy/memmove/memset"
        } else if [
            "malloc",
            "free",
            "_int_",
            "unlink_chunk",
            "realloc",
            "tcache",
            "calloc",
        ]
        .iter()
        .any(|m| symbol.contains(m))
        {
            "libc malloc/free"
        } else {
            "libc, other"
        };
    }
    const CRATES: [(&str, &str); 17] = [
        ("drop_in_place", "drops (destructors)"),
        ("_mi_", "mimalloc (allocation)"),
        ("mi_free", "mimalloc (allocation)"),
        ("mi_malloc", "mimalloc (allocation)"),
        ("mi_theap", "mimalloc (allocation)"),
        ("mi_realloc", "mimalloc (allocation)"),
        (
            "serde_path_to_error",
            "serde / serde_json (parse, serialize)",
        ),
        ("serde_json", "serde / serde_json (parse, serialize)"),
        ("serde_core", "serde / serde_json (parse, serialize)"),
        ("serde::", "serde / serde_json (parse, serialize)"),
        ("tracing", "tracing (request log)"),
        ("sllmp", "sllmp crates (pipeline, server, providers)"),
        ("hyper", "hyper (HTTP/1 server and client)"),
        ("tower", "tower / tower-http"),
        ("axum", "axum"),
        ("tokio", "tokio (scheduler, I/O driver, channels)"),
        ("uuid", "uuid (request ids)"),
    ];
    CRATES
        .iter()
        .find(|(needle, _)| symbol.contains(needle))
        .map_or("other (std, http, bytes, futures, …)", |(_, area)| area)
}

/// Self time per area of `data`, as µs of CPU per request at `rps` over `secs`.
fn breakdown(data: &Path, rps: f64, secs: u64) -> anyhow::Result<Breakdown> {
    let text = perf_report(
        data,
        &[
            "--no-children",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "0",
        ],
    )?;
    let event_ns: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("# Event count (approx.):"))
        .and_then(|v| v.trim().parse().ok())
        .context("perf report printed no event count")?;
    let requests = (rps * secs as f64).max(1.0);
    let mut areas: Vec<(&'static str, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let Some(pct) = words
            .next()
            .and_then(|w| w.strip_suffix('%'))
            .and_then(|w| w.parse::<f64>().ok())
        else {
            continue;
        };
        let Some(dso) = words.next() else { continue };
        let symbol = line.find("] ").map_or("", |at| line[at + 2..].trim());
        let us = pct / 100.0 * event_ns / 1000.0 / requests;
        let area = area_of(dso, symbol);
        match areas.iter_mut().find(|(a, _)| *a == area) {
            Some((_, total)) => *total += us,
            None => areas.push((area, us)),
        }
    }
    areas.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Breakdown {
        rps,
        total: event_ns / 1000.0 / requests,
        areas,
    })
}

/// Profiles sllmp, then the passthrough, for `secs` seconds of S1 load each.
pub(crate) fn profile(env: &Env, oha: &Oha, secs: u64) -> anyhow::Result<Profile> {
    let data = env.dir.join("perf.data");
    let (rps, record_args) = record(env, oha, Target::Sllmp, secs, &data)?;
    let sllmp = breakdown(&data, rps, secs)?;
    let floor_data = env.dir.join("perf-passthrough.data");
    let (floor_rps, _) = record(env, oha, Target::Passthrough, secs, &floor_data)?;
    let passthrough = breakdown(&floor_data, floor_rps, secs)?;
    let command = format!(
        "perf {}",
        record_args
            .iter()
            .map(|a| if a.contains('/') { short(a) } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let self_time = report(
        &data,
        &[
            "--no-children",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "0.8",
        ],
        40,
    )?;
    let inclusive = report(
        &data,
        &["--children", "--sort", "symbol", "--percent-limit", "4"],
        45,
    )?;
    let dsos = report(&data, &["--no-children", "--sort", "dso"], 8)?;
    let all_children = report(
        &data,
        &["--children", "--sort", "symbol", "--percent-limit", "0.1"],
        100_000,
    )?;
    let all_self = report(
        &data,
        &[
            "--no-children",
            "--sort",
            "symbol",
            "--percent-limit",
            "0.05",
        ],
        100_000,
    )?;
    let mut areas = Vec::new();
    for (what, frame) in AREAS {
        let pct = all_children
            .lines()
            .filter_map(parse_line)
            .filter(|(_, symbol)| {
                symbol
                    .strip_prefix(frame)
                    .is_some_and(|rest| rest.is_empty() || rest == "::{{closure}}")
            })
            .map(|(pct, _)| pct)
            .fold(0.0, f64::max);
        areas.push((what, frame, pct));
    }
    for (what, symbols) in SELF_AREAS {
        let pct: f64 = all_self
            .lines()
            .filter_map(parse_line)
            .filter(|(_, symbol)| symbols.iter().any(|prefix| symbol.starts_with(prefix)))
            .map(|(pct, _)| pct)
            .sum();
        areas.push((what, "(self)", pct));
    }
    std::fs::write(env.dir.join("perf-self.txt"), &self_time)?;
    std::fs::write(env.dir.join("perf-inclusive.txt"), &inclusive)?;
    Ok(Profile {
        command,
        self_time,
        inclusive,
        dsos,
        areas,
        sllmp,
        passthrough,
    })
}

/// `(first percentage, symbol)` of a `perf report` line: `  12.3%  [.] symbol` or
/// `  12.3%  1.0%  [k] symbol`.
fn parse_line(line: &str) -> Option<(f64, String)> {
    let pct = line
        .split_whitespace()
        .next()?
        .strip_suffix('%')?
        .parse()
        .ok()?;
    let at = line.find("] ")?;
    let symbol = line[at + 2..].trim().trim_end_matches(['-', ' ']);
    Some((pct, symbol.to_string()))
}

fn short(path: &str) -> String {
    PathBuf::from(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The text of `perf report --stdio -g none` over `data`, with `extra` options.
fn perf_report(data: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("timeout")
        .arg("600")
        .arg("perf")
        .arg("report")
        .arg("-i")
        .arg(data)
        .args(["--stdio", "-g", "none"])
        .args(extra)
        .stderr(Stdio::null())
        .output()
        .context("cannot run perf report")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn report(data: &Path, extra: &[&str], lines: usize) -> anyhow::Result<String> {
    let text = perf_report(data, extra)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("(inlined)"))
        .take(lines)
        .map(|l| demangle_hashes(l.trim_end_matches([' ', '-'])))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// perf prints Rust symbols demangled but with their `::h0123abcd` hash; drop it.
fn demangle_hashes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("::h") {
        let hash = &rest[at + 3..];
        let hex = hash.chars().take_while(char::is_ascii_hexdigit).count();
        out.push_str(&rest[..at]);
        if hex == 16 {
            rest = &hash[16..];
        } else {
            out.push_str("::h");
            rest = hash;
        }
    }
    out.push_str(rest);
    out
}
