//! Runs the criterion micro-benchmarks of `sllmp-bench` and reads their estimates.

use std::path::Path;

use serde_json::Value;

/// The micro-benchmarks, as `(group, function)`: criterion's directory names.
pub(crate) const BENCHES: [(&str, &str, &str); 7] = [
    (
        "request",
        "parse_validate",
        "parse + validate a 2 KB chat request with tools (`ChatRequest::from_slice`, `Validation::check`)",
    ),
    (
        "request",
        "reference_parse_without_path",
        "reference: the same parse without `serde_path_to_error` (`serde_json::from_slice::<ChatRequest>`)",
    ),
    (
        "request",
        "reference_parse_json_value",
        "reference: the same body into a `serde_json::Value`",
    ),
    (
        "request",
        "reference_clone",
        "reference: one `ChatRequest::clone` of it (what an attempt costs when an `on_attempt` hook writes to the request; reads copy nothing)",
    ),
    (
        "sse_reader",
        "openai_transcript",
        "SSE reader over an OpenAI transcript (53 chunks, 1–4 KiB reads)",
    ),
    (
        "chunk_path",
        "parse_assemble_serialize",
        "per chunk: parse JSON into `ChatChunk`, `StreamAssembler::push`, serialize the `data:` frame",
    ),
    (
        "chunk_path",
        "reference_parse_json_value",
        "reference: the same chunks parsed into `serde_json::Value`",
    ),
];

/// One micro-benchmark's result.
#[derive(Debug, Clone)]
pub(crate) struct Micro {
    pub(crate) what: &'static str,
    pub(crate) id: String,
    /// Mean time per iteration, ns, with criterion's 95 % interval.
    pub(crate) mean_ns: f64,
    pub(crate) low_ns: f64,
    pub(crate) high_ns: f64,
    /// `Bytes` or `Elements` per iteration.
    pub(crate) throughput: Option<(String, u64)>,
}

impl Micro {
    /// The throughput, spelled out (`412 MB/s`, `1.2 M chunks/s`).
    pub(crate) fn rate(&self) -> String {
        match &self.throughput {
            Some((kind, n)) if kind == "Bytes" => {
                format!("{:.0} MB/s", *n as f64 / self.mean_ns * 1e9 / 1e6)
            }
            Some((_, n)) => format!(
                "{:.2} M chunks/s ({:.0} ns per chunk)",
                *n as f64 / self.mean_ns * 1e9 / 1e6,
                self.mean_ns / *n as f64
            ),
            None => "-".into(),
        }
    }
}

/// Reads `target/criterion/<group>/<function>/new/{estimates,benchmark}.json`.
pub(crate) fn read(target_dir: &Path) -> Vec<Micro> {
    let mut out = Vec::new();
    for (group, function, what) in BENCHES {
        let dir = target_dir
            .join("criterion")
            .join(group)
            .join(function)
            .join("new");
        let read_json = |name: &str| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
        };
        let (Some(estimates), Some(benchmark)) =
            (read_json("estimates.json"), read_json("benchmark.json"))
        else {
            continue;
        };
        let get = |p: &str| {
            estimates
                .pointer(p)
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let throughput = benchmark
            .get("throughput")
            .and_then(Value::as_object)
            .and_then(|m| m.iter().next())
            .and_then(|(k, v)| v.as_u64().map(|n| (k.clone(), n)));
        out.push(Micro {
            what,
            id: format!("{group}/{function}"),
            mean_ns: get("/mean/point_estimate"),
            low_ns: get("/mean/confidence_interval/lower_bound"),
            high_ns: get("/mean/confidence_interval/upper_bound"),
            throughput,
        });
    }
    out
}
