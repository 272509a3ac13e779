//! `sllmp-mock-upstream`: the mock OpenAI upstream as a standalone server,
//! for benchmarks.
//!
//! ```text
//! sllmp-mock-upstream [--listen 127.0.0.1:9000]
//! ```
//!
//! Once bound it prints exactly one line, `sllmp-mock-upstream listening on
//! http://ADDR`, then serves until killed (or interrupted with Ctrl-C).
//! Requests are not recorded, so memory stays flat however long it runs.
//! Each request is steered by the `"mock"` object of its body; see the
//! `sllmp_test_support` crate docs.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use sllmp_test_support::{MockOptions, MockUpstream};

/// Address used without `--listen`.
const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

const USAGE: &str = "usage: sllmp-mock-upstream [--listen ADDR]   (default 127.0.0.1:9000)";

#[tokio::main]
async fn main() -> ExitCode {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(Some(listen)) => listen,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("sllmp-mock-upstream: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let options = MockOptions::new().record_requests(false);
    let mock = match MockUpstream::start_with(listen, options).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("sllmp-mock-upstream: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };

    {
        // The harness waits for this line: print it whole and flush it.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "sllmp-mock-upstream listening on http://{}",
            mock.addr()
        );
        let _ = stdout.flush();
    }

    if let Err(err) = tokio::signal::ctrl_c().await {
        // No signal handling available: serve until killed.
        eprintln!("sllmp-mock-upstream: cannot wait for Ctrl-C ({err}); serving until killed");
        std::future::pending::<()>().await;
    }
    drop(mock);
    ExitCode::SUCCESS
}

/// The listen address from the arguments; `None` when help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<SocketAddr>, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| "--listen needs an address".to_owned())?;
            }
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unknown argument `{other}`")),
            },
        }
    }
    listen
        .parse()
        .map(Some)
        .map_err(|err| format!("invalid --listen address `{listen}`: {err}"))
}
