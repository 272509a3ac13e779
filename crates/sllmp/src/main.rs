//! The `sllmp` binary: `sllmp serve [--config FILE] [--listen ADDR]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sllmp::config::{Config, Gateway};
use sllmp::observe::{LogFormat, init_logging};
use sllmp::providers::{HttpSettings, http_client};
use sllmp::{Server, ServerSettings};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: sllmp_alloc::MiMalloc = sllmp_alloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sllmp",
    version,
    about = "SLLMP, the Simple LLM Proxy: an OpenAI-compatible LLM gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API.
    Serve(ServeArgs),
    /// Check a configuration file and exit (0 when it is valid).
    Check {
        /// The configuration file.
        #[arg(long, short, env = "SLLMP_CONFIG")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The YAML configuration; without it, the built-in default (mock provider, and openai
    /// when OPENAI_API_KEY is set).
    #[arg(long, short, env = "SLLMP_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, short, env = "SLLMP_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Append logs to this file instead of stderr (written in the background, never blocking requests).
    #[arg(long, env = "SLLMP_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SLLMP_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    body_limit: usize,
    /// Seconds in-flight requests may run after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Threads serving requests (default: one per core). With 1, a single-threaded runtime:
    /// the least CPU per request, for small machines and one-core containers.
    #[arg(long, env = "SLLMP_WORKERS")]
    workers: Option<std::num::NonZeroUsize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let gateway = load_gateway(Some(&config));
            println!(
                "{}: valid; features: {}",
                gateway.config().origin(),
                gateway
                    .config()
                    .features()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Serve(args) => {
            let runtime =
                sllmp::server::runtime(args.workers).context("cannot start the async runtime")?;
            runtime.block_on(serve(args))
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let format = if args.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    let _log_guard = init_logging(args.log_file.as_deref(), format).with_context(|| {
        format!(
            "cannot open the log file {}",
            args.log_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })?;
    let gateway = load_gateway(args.config.as_deref());
    let origin = gateway.config().origin().to_string();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let settings = ServerSettings {
        body_limit: args.body_limit,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
        ..ServerSettings::default()
    };
    let server = Server::from_gateway(gateway).settings(settings);
    // Before the ready line: whoever reads it may send SIGTERM at once.
    let shutdown = sllmp::server::shutdown_signal();
    tracing::info!(%addr, config = origin.as_str(), ready_ms = started.elapsed().as_secs_f64() * 1000.0, "sllmp is ready");
    println!("sllmp listening on http://{addr} (config: {origin})");
    server
        .serve_on(listener, shutdown)
        .await
        .context("the server failed")
}

/// Loads and builds the configuration, or prints every problem and exits with status 2.
fn load_gateway(path: Option<&std::path::Path>) -> Gateway {
    let config = match path {
        Some(path) => Config::load(path),
        None => Config::from_yaml(sllmp::DEFAULT_CONFIG, "<built-in default config>"),
    };
    // Outbound proxies from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY.
    let http = match HttpSettings::from_env() {
        Ok(http) => http,
        Err(err) => {
            eprintln!("{err}; correct the variable or unset it");
            std::process::exit(2);
        }
    };
    for (scheme, proxy) in [("https", &http.proxies.https), ("http", &http.proxies.http)] {
        if let Some(proxy) = proxy {
            tracing::info!(%proxy, "{scheme}:// upstreams go through an outbound proxy");
        }
    }
    let built = config.and_then(|config| Gateway::build(config, &http_client(&http)));
    match built {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    }
}
