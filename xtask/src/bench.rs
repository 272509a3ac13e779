//! `cargo xtask bench`: the benchmark harness (direct vs nginx vs sllmp).
//!
//! In one go, on this machine: builds the mock upstream and the production-like proxy
//! (`sllmp-bench-proxy`) in release, installs `oha` and nginx when missing, starts the mock,
//! nginx (a plain `proxy_pass`, the floor a do-nothing proxy reaches) and sllmp in front of
//! the same mock, and runs every scenario against the three in alternation, so that every
//! figure is a ratio or a difference measured in the same run:
//!
//! - S1 throughput: non-streaming, upstream latency 0, concurrency 64 (oha, closed loop);
//! - S2 added latency: non-streaming, upstream latency 50 ms, fixed rate (oha, open loop);
//! - S3 streaming: 20 chunks 5 ms apart, time to first and last byte (a client of our own);
//! - S4 many streams: 1000 concurrent streams of 50 chunks 100 ms apart, sllmp's memory,
//!   plus its idle memory and time to ready.
//!
//! Then the criterion micro-benchmarks and (full run) a `perf` profile of sllmp under S1.
//! Results go to `docs/benchmarks.md` and `docs/benchmarks-latency.svg` (full run) or to
//! `bench-results/` (`--quick`, a one-minute smoke run). Logs, configurations and raw
//! profiles of the last run are in `bench-results/`.
//!
//! Options: `--quick`; `--no-micro` skips the micro-benchmarks; `--profile` / `--no-profile`
//! force the profile on or off (default: on in the full run only); `--out DIR` writes the
//! report elsewhere.

mod env;
mod http;
mod micro;
mod oha;
mod procs;
mod profile;
mod report;
mod scenarios;
mod stats;
mod svg;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use self::env::{Bins, Env, Target};
use self::oha::Oha;

use crate::describe;

/// How much of everything a run does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    /// Alternation rounds of S2 and S3.
    pub(crate) rounds: usize,
    /// Alternation rounds of S1 (more and shorter: single-process nginx's throughput is
    /// bimodal on a busy 2-core VM, and the median of more rounds is steadier).
    pub(crate) s1_rounds: usize,
    pub(crate) s1_concurrency: u32,
    pub(crate) s1_secs: u64,
    /// Warm-up of each S1 target, s.
    pub(crate) s1_warmup_secs: u64,
    pub(crate) s2_rate: u64,
    pub(crate) s2_secs: u64,
    pub(crate) s3_workers: usize,
    pub(crate) s3_secs: u64,
    pub(crate) s4_streams: usize,
    pub(crate) s4_chunks: usize,
    pub(crate) s4_targets: Vec<Target>,
    /// Fresh starts of sllmp for time-to-ready and idle memory.
    pub(crate) startups: usize,
    /// criterion's warm-up and measurement times, s.
    pub(crate) micro_times: (f64, f64),
    /// Seconds of `perf record`, when profiling.
    pub(crate) profile_secs: Option<u64>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                rounds: 1,
                s1_rounds: 1,
                s1_concurrency: 64,
                s1_secs: 3,
                s1_warmup_secs: 1,
                s2_rate: 100,
                s2_secs: 5,
                s3_workers: 4,
                s3_secs: 3,
                s4_streams: 1000,
                s4_chunks: 50,
                s4_targets: vec![Target::Sllmp],
                startups: 2,
                micro_times: (0.2, 0.5),
                profile_secs: None,
            }
        } else {
            Plan {
                quick,
                rounds: 3,
                s1_rounds: 5,
                s1_concurrency: 64,
                s1_secs: 6,
                s1_warmup_secs: 2,
                s2_rate: 200,
                s2_secs: 15,
                s3_workers: 4,
                s3_secs: 12,
                s4_streams: 1000,
                s4_chunks: 50,
                s4_targets: vec![
                    Target::Direct,
                    Target::Nginx,
                    Target::Sllmp,
                    Target::Passthrough,
                ],
                startups: 5,
                micro_times: (1.0, 3.0),
                profile_secs: Some(8),
            }
        }
    }
}

struct Options {
    quick: bool,
    micro: bool,
    /// `Some(true)`: `--profile`; `Some(false)`: `--no-profile`; `None`: the plan's default.
    profile: Option<bool>,
    out: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        micro: true,
        profile: None,
        out: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--no-micro" => options.micro = false,
            "--no-profile" => options.profile = Some(false),
            "--profile" => options.profile = Some(true),
            "--out" => {
                options.out = Some(PathBuf::from(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--out needs a directory"))?,
                ));
            }
            other => bail!(
                "unknown bench option `{other}`; usage: cargo xtask bench [--quick] [--no-micro] [--profile | --no-profile] [--out DIR]"
            ),
        }
    }
    Ok(options)
}

/// Runs the benchmarks.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = parse(args)?;
    let mut plan = Plan::new(options.quick);
    match options.profile {
        Some(false) => plan.profile_secs = None,
        Some(true) => plan.profile_secs = plan.profile_secs.or(Some(8)),
        None => {}
    }
    let root = crate::root();
    let work = root.join("bench-results");
    let out_dir = options.out.clone().unwrap_or_else(|| {
        if plan.quick {
            work.clone()
        } else {
            root.join("docs")
        }
    });

    // Tools.
    let oha = Oha {
        bin: env::ensure_oha()?,
    };
    let nginx = env::ensure_nginx()?;

    // Release builds of the mock and the proxy (and the micro-benchmarks).
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "-j2",
        "-p",
        "sllmp-bench",
        "-p",
        "sllmp-test-support",
        "--bins",
    ]))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let release = target_dir.join("release");

    // A clean work directory for logs and configurations.
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let stat_before = cpu_stat();
    let bins = Bins {
        mock: release.join("sllmp-mock-upstream"),
        proxy: release.join("sllmp-bench-proxy"),
        passthrough: release.join("sllmp-bench-passthrough"),
        nginx: nginx.clone(),
    };
    eprintln!("bench: starting the mock upstream, nginx and sllmp");
    let mut env = Env::start(&work, bins)?;
    eprintln!(
        "bench: mock on {}, nginx on {}, sllmp on {}, passthrough on {}",
        env.mock_addr, env.nginx_addr, env.sllmp_addr, env.passthrough_addr
    );

    let (s1, s1_cmds) = scenarios::s1(&mut env, &oha, &plan)?;
    let (s2, s2_cmds) = scenarios::s2(&mut env, &oha, &plan)?;
    let (s3, s3_cmds) = scenarios::s3(&mut env, &plan)?;
    let profile = match plan.profile_secs {
        Some(secs) if profile::perf_available() => {
            eprintln!("bench: profiling sllmp under S1 load for {secs} s (perf)");
            Some(profile::profile(&env, &oha, secs).map_err(|e| format!("{e:#}")))
        }
        Some(_) => Some(Err(
            "`perf record` does not work on this machine".to_string()
        )),
        None => None,
    };
    let startup = scenarios::startup(&mut env, &plan)?;
    let (s4, s4_cmds) = scenarios::s4(&mut env, &plan)?;
    let stat_after = cpu_stat();
    let totals = proxy_totals(&mut env);
    env.passthrough.stop();
    let nginx_conf = std::fs::read_to_string(work.join("nginx.conf")).unwrap_or_default();
    let sllmp_conf = std::fs::read_to_string(work.join("sllmp.yaml")).unwrap_or_default();
    drop(env);

    let micro = if options.micro {
        let (warm, measure) = plan.micro_times;
        crate::run(crate::cargo().args([
            "bench",
            "-j2",
            "-p",
            "sllmp-bench",
            "--bench",
            "micro",
            "--",
            "--warm-up-time",
            &warm.to_string(),
            "--measurement-time",
            &measure.to_string(),
        ]))?;
        micro::read(&target_dir)
    } else {
        Vec::new()
    };

    let results = report::Results {
        plan,
        machine: report::Machine::probe(&nginx, &oha.bin),
        s1,
        s1_cmds,
        s2,
        s2_cmds,
        s3,
        s3_cmds,
        startup,
        s4,
        s4_cmds,
        micro,
        profile,
        nginx_conf,
        sllmp_conf,
        totals,
        elapsed: started.elapsed(),
        noise: noise(&load_before, stat_before, stat_after),
    };
    std::fs::create_dir_all(&out_dir)?;
    let markdown = out_dir.join("benchmarks.md");
    std::fs::write(&markdown, report::markdown(&results))?;
    std::fs::write(
        out_dir.join("benchmarks-latency.svg"),
        report::plot(&results),
    )?;
    eprintln!(
        "bench: done in {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        markdown.display()
    );
    for line in report::summary_lines(&results) {
        eprintln!("  {line}");
    }
    Ok(())
}

/// Stops sllmp and reads the totals its middleware logged (a check that the traffic went
/// through the whole pipeline).
fn proxy_totals(env: &mut Env) -> Vec<String> {
    env.sllmp.stop();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::read_to_string(env.dir.join("sllmp-requests.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sllmp-bench-proxy stopped"))
        .filter_map(|l| l.split("totals=").nth(1))
        .map(|t| t.trim().trim_matches('"').to_string())
        .collect()
}

/// The `cpu` line of `/proc/stat`: (steal, total) jiffies.
fn cpu_stat() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().sum())
}

/// What else ran on the machine: the load before the run, the CPU time the hypervisor stole
/// during the scenarios, and other builds running at the start.
fn noise(load_before: &str, before: (u64, u64), after: (u64, u64)) -> String {
    let steal = (after.0.saturating_sub(before.0)) as f64
        / (after.1.saturating_sub(before.1)).max(1) as f64
        * 100.0;
    let load = load_before
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "load average before the run {load}; CPU stolen by the hypervisor during the scenarios {steal:.1} %"
    )
}
