//! `sllmp-bench-proxy`: the production SLLMP server with a pipeline like production's, for
//! the load benchmark (`cargo xtask bench`).
//!
//! ```text
//! sllmp-bench-proxy --config FILE --listen ADDR --log-file PATH [--workers N]
//! ```
//!
//! The pipeline: validation (always first), the configuration's middleware (feature
//! selection, request log, retry), then [`sllmp_bench::production_hooks`], a closure on every
//! hook. Logs go at info level to `--log-file` through tracing-appender's non-blocking
//! writer, as `sllmp serve --log-file` does. It prints one line once listening and serves
//! until SIGTERM or Ctrl-C, then logs the totals its middleware counted.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use sllmp::config::{Config, Gateway};
use sllmp::observe::{LogFormat, init_logging};
use sllmp::providers::{HttpSettings, http_client};
use sllmp::{Pipeline, Server};
use sllmp_bench::{Totals, production_hooks};

// The same allocator as the `sllmp` binary.
#[global_allocator]
static ALLOCATOR: sllmp_alloc::MiMalloc = sllmp_alloc::MiMalloc;

const USAGE: &str =
    "usage: sllmp-bench-proxy --config FILE --listen ADDR --log-file PATH [--workers N]";

struct Args {
    config: PathBuf,
    listen: SocketAddr,
    log_file: PathBuf,
    workers: Option<NonZeroUsize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut config = None;
    let mut listen = None;
    let mut log_file = None;
    let mut workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--listen" => {
                let text = value()?;
                listen = Some(
                    text.parse()
                        .with_context(|| format!("invalid --listen address `{text}`"))?,
                );
            }
            "--log-file" => log_file = Some(PathBuf::from(value()?)),
            "--workers" => {
                let text = value()?;
                workers = Some(
                    text.parse()
                        .with_context(|| format!("invalid --workers `{text}`: a number from 1"))?,
                );
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Args {
        config: config.context(USAGE)?,
        listen: listen.context(USAGE)?,
        log_file: log_file.context(USAGE)?,
        workers,
    })
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = parse_args()?;
    let runtime = sllmp::server::runtime(args.workers).context("cannot start the async runtime")?;
    runtime.block_on(serve(args, started))
}

async fn serve(args: Args, started: Instant) -> anyhow::Result<()> {
    // The production logging setup: info level, written in the background in batches.
    let _log_guard = init_logging(Some(&args.log_file), LogFormat::Text)
        .with_context(|| format!("cannot open the log file {}", args.log_file.display()))?;

    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Gateway::build(config, &http_client(&HttpSettings::default()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let totals = Arc::new(Totals::default());
    let hook_totals = Arc::clone(&totals);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let server = Server::from_shared(gateway.providers())
        .models(gateway.models())
        .pipeline(move |pipeline: &mut Pipeline| {
            gateway.add_to(pipeline);
            pipeline.add(production_hooks(Arc::clone(&hook_totals)));
        });
    // Before the ready line: whoever reads it may send SIGTERM at once.
    let shutdown = sllmp::server::shutdown_signal();
    tracing::info!(%addr, ready_ms = started.elapsed().as_secs_f64() * 1000.0, "sllmp-bench-proxy is ready");
    println!("sllmp-bench-proxy listening on http://{addr}");
    let served = server
        .serve_on(listener, shutdown)
        .await
        .context("the server failed");
    tracing::info!(
        totals = totals.summary().as_str(),
        "sllmp-bench-proxy stopped"
    );
    served
}
