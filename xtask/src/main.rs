//! Project automation for SLLMP, run as `cargo xtask <command>`.
//!
//! - `serve [ARGS]`: run the `sllmp` server (built-in mock config unless `--config` is given)
//!   and print ready-to-paste curl commands.
//! - `test`: the whole test suite (what the README and CI run).
//! - `lint`: `cargo fmt --check`, `cargo clippy -D warnings`, `cargo doc -D warnings`.
//! - `ci`: `lint` then `test`.
//! - `bench [--quick]`: the benchmark harness (see `docs/benchmarks.md`).
//! - `prices [--source FILE] [--check]`: regenerate `sllmp-limit`'s embedded price table
//!   (`crates/sllmp-limit/data/prices.tsv`) from litellm's public price list in
//!   `../shared/data/`; `--check` fails when the committed table is out of date.

mod bench;
mod prices;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("ci") => lint().and_then(|()| test(&[])),
        Some("bench") => bench::run(&args[1..]),
        Some("prices") => prices::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <serve [sllmp serve args] | test [cargo test args] | lint | ci | bench [--quick] | prices [--source FILE] [--check]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing when it fails.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["build", "--quiet", "-p", "sllmp", "--features", "cli"]))?;
    let listen = args
        .iter()
        .position(|a| a == "--listen" || a == "-l")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let url = format!("http://{listen}");
    println!("Starting sllmp on {url}. Try, from another terminal:\n");
    println!(
        "  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n    -d '{{\"model\": \"mock:echo\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n"
    );
    println!(
        "  curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n    -d '{{\"model\": \"mock:echo\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}], \"stream\": true}}'\n"
    );
    let binary = root().join("target/debug/sllmp");
    let mut cmd = Command::new(binary);
    cmd.arg("serve").args(args);
    if !args.iter().any(|a| a == "--listen" || a == "-l") {
        cmd.args(["--listen", &listen]);
    }
    run(&mut cmd)
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    // Unit, integration and doc tests of every crate, two jobs at a time (2-core machines).
    run(cargo()
        .args(["test", "--workspace", "--all-features", "-j2"])
        .args(extra))
}

fn lint() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "-j2",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps", "--all-features", "-j2"])
        .env("RUSTDOCFLAGS", "-D warnings"))
}
