//! Runs the load generator `oha` and reads its JSON (summary) or CSV (every request) output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

/// The `oha` binary, installed by the harness when missing.
pub(crate) struct Oha {
    pub(crate) bin: PathBuf,
}

/// What a fixed-concurrency run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    /// Requests per second over the whole run.
    pub(crate) rps: f64,
    /// Responses received (any status).
    pub(crate) responses: u64,
    /// Responses whose status was not 200.
    pub(crate) non_200: u64,
    /// Requests that got no response (connection errors, timeouts).
    pub(crate) errors: u64,
    /// Latency percentiles, ms.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// One request of a CSV run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) duration_ms: f64,
    pub(crate) status: u16,
}

/// The shell-like spelling of a command line, for the report.
pub(crate) fn shell_words(program: &Path, args: &[String]) -> String {
    let quote = |s: &str| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    ))
    .chain(args.iter().map(|a| quote(a)))
    .collect::<Vec<_>>()
    .join(" ")
}

impl Oha {
    /// The arguments of a POST of `body` to `url`, plus `extra`.
    pub(crate) fn args(url: &str, body: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--no-tui",
            "-m",
            "POST",
            "-H",
            "content-type: application/json",
            "-t",
            "30s",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        args.extend(["-d".to_string(), body.to_string(), url.to_string()]);
        args
    }

    fn output(&self, args: &[String], limit_secs: u64) -> anyhow::Result<String> {
        // `timeout` bounds the run even if oha were to hang.
        let out = Command::new("timeout")
            .arg(limit_secs.to_string())
            .arg(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run oha")?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                shell_words(&self.bin, args),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs with JSON output and reads the summary.
    pub(crate) fn run_json(&self, args: &[String], limit_secs: u64) -> anyhow::Result<Summary> {
        let mut args = args.to_vec();
        args.splice(0..0, ["--output-format".to_string(), "json".to_string()]);
        let text = self.output(&args, limit_secs)?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("oha printed no JSON: {}", text.trim()))?;
        let counts = |key: &str| -> BTreeMap<String, u64> {
            json.get(key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let statuses = counts("statusCodeDistribution");
        let errors = counts("errorDistribution");
        let pct = |key: &str| {
            json.pointer(&format!("/latencyPercentiles/{key}"))
                .and_then(Value::as_f64)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        Ok(Summary {
            rps: json
                .pointer("/summary/requestsPerSec")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN),
            responses: statuses.values().sum(),
            non_200: statuses
                .iter()
                .filter(|(k, _)| k.as_str() != "200")
                .map(|(_, v)| v)
                .sum(),
            errors: errors.values().sum(),
            p50_ms: pct("p50"),
            p99_ms: pct("p99"),
        })
    }

    /// Runs with CSV output: one row per response.
    pub(crate) fn run_csv(&self, args: &[String], limit_secs: u64) -> anyhow::Result<Vec<Row>> {
        let mut args = args.to_vec();
        args.splice(0..0, ["--output-format".to_string(), "csv".to_string()]);
        let text = self.output(&args, limit_secs)?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("oha's CSV has no `{name}` column: {header:?}"))
        };
        let duration = col("request-duration")?;
        let status = col("status")?;
        let mut rows = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            let (Some(d), Some(s)) = (fields.get(duration), fields.get(status)) else {
                continue;
            };
            if let (Ok(d), Ok(s)) = (d.parse::<f64>(), s.parse::<u16>()) {
                rows.push(Row {
                    duration_ms: d * 1000.0,
                    status: s,
                });
            }
        }
        Ok(rows)
    }
}
