//! `cargo xtask prices [--source FILE] [--check]`: the embedded price table of `sllmp-limit`.
//!
//! Converts litellm's public price list (`../shared/data/model_prices_and_context_window.json`
//! beside the workspace, USD per token) into `crates/sllmp-limit/data/prices.tsv` (USD per
//! million tokens, one line per model of the providers SLLMP prices), and copies the list's MIT
//! licence to `crates/sllmp-limit/data/PRICES-LICENSE`. `--check` converts in memory and fails
//! when the committed files differ.
//!
//! What is kept: entries whose `litellm_provider` is one of [`PROVIDERS`], whose `mode` is
//! chat, completion, responses or embedding (or absent), and that have an input and an output
//! cost, not both zero (litellm writes 0 for prices it does not know; a zero in the table
//! would charge nothing, so such models are left to the unknown-price policy). Keys lose
//! their `provider/` prefix; `ft:` entries and keys with a `/` left are skipped (fine-tune
//! and image-size paths), except for providers whose model ids are namespaced
//! ([`NAMESPACED`]: Groq serves `openai/gpt-oss-120b`). When two keys name the same model
//! (`deepseek-chat` and `deepseek/deepseek-chat`), the prefixed key wins.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::root;

/// The version of the table's format and contents; bump it when either changes meaning.
const VERSION: &str = "v1";

/// What the committed table was converted from (update with the source file).
const SOURCE: &str = "litellm 1.108.7 model_prices_and_context_window.json";

/// litellm's provider names and SLLMP's, for the providers the table covers.
const PROVIDERS: &[(&str, &str)] = &[
    ("anthropic", "anthropic"),
    ("deepseek", "deepseek"),
    ("gemini", "gemini"),
    ("groq", "groq"),
    ("mistral", "mistral"),
    ("openai", "openai"),
    ("xai", "xai"),
];

/// Providers (SLLMP names) whose model ids contain a `/` of their own.
const NAMESPACED: &[&str] = &["groq"];

/// The modes priced per token of a chat, completion, responses or embeddings call.
const MODES: &[&str] = &["chat", "completion", "responses", "embedding"];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut source = None;
    let mut check = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--source" => {
                let file = args.next().context("--source needs a file")?;
                source = Some(PathBuf::from(file));
            }
            other => bail!(
                "unknown argument {other:?}: usage: cargo xtask prices [--source FILE] [--check]"
            ),
        }
    }
    let source = source
        .unwrap_or_else(|| root().join("../shared/data/model_prices_and_context_window.json"));
    let licence_source = source
        .parent()
        .unwrap_or(Path::new("."))
        .join("model_prices.LICENSE");

    let json = std::fs::read_to_string(&source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let licence = std::fs::read_to_string(&licence_source).with_context(|| {
        format!(
            "cannot read {} (the licence beside the source)",
            licence_source.display()
        )
    })?;
    let list: Value =
        serde_json::from_str(&json).with_context(|| format!("{} is not JSON", source.display()))?;
    let (table, counts) = convert(&list)?;
    let licence = licence_file(&licence);

    let data = root().join("crates/sllmp-limit/data");
    let files = [
        (data.join("prices.tsv"), table),
        (data.join("PRICES-LICENSE"), licence),
    ];
    let summary = counts
        .iter()
        .map(|(provider, n)| format!("{provider} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let total: usize = counts.values().sum();

    if check {
        let mut stale = Vec::new();
        for (path, generated) in &files {
            let committed = std::fs::read_to_string(path).unwrap_or_default();
            if committed != *generated {
                stale.push(format!(
                    "{}: {}",
                    path.display(),
                    diff_summary(&committed, generated)
                ));
            }
        }
        if !stale.is_empty() {
            bail!(
                "the price table is out of date; run `cargo xtask prices`:\n  {}",
                stale.join("\n  ")
            );
        }
        eprintln!("prices: up to date ({total} models: {summary})");
        return Ok(());
    }

    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "prices: wrote {} ({total} models: {summary})",
        files[0].0.display()
    );
    Ok(())
}

/// One model's prices, USD per million tokens, as exact decimal strings.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    input: String,
    cached_input: Option<String>,
    cache_write: Option<String>,
    output: String,
}

/// The table's text, and the number of models per provider.
fn convert(list: &Value) -> anyhow::Result<(String, BTreeMap<&'static str, usize>)> {
    let entries = list
        .as_object()
        .context("the price list is not a JSON object")?;
    // (provider, model) → (whether the key had the provider prefix, row)
    let mut rows: BTreeMap<(&'static str, String), (bool, Row)> = BTreeMap::new();
    for (key, entry) in entries {
        if key == "sample_spec" || key.starts_with("ft:") {
            continue;
        }
        let Some(litellm) = entry.get("litellm_provider").and_then(Value::as_str) else {
            continue;
        };
        let Some(&(_, provider)) = PROVIDERS.iter().find(|(name, _)| *name == litellm) else {
            continue;
        };
        let mode = entry.get("mode").and_then(Value::as_str);
        if mode.is_some_and(|mode| !MODES.contains(&mode)) {
            continue;
        }
        let (prefixed, model) = match key
            .strip_prefix(litellm)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(model) => (true, model),
            None => (false, key.as_str()),
        };
        if model.is_empty() || (model.contains('/') && !NAMESPACED.contains(&provider)) {
            continue;
        }
        if model.contains(char::is_whitespace) {
            bail!("{key}: a model name with whitespace cannot be a table key");
        }
        let cost = |field: &str| -> anyhow::Result<Option<f64>> {
            match entry.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => match value.as_f64() {
                    Some(cost) if cost >= 0.0 && cost.is_finite() => Ok(Some(cost)),
                    _ => bail!("{key}: {field} is not a non-negative number: {value}"),
                },
            }
        };
        let (Some(input), Some(output)) = (
            cost("input_cost_per_token")?,
            cost("output_cost_per_token")?,
        ) else {
            continue;
        };
        if input == 0.0 && output == 0.0 {
            continue; // an unknown price, not a free model
        }
        let row = Row {
            input: per_million(input),
            cached_input: cost("cache_read_input_token_cost")?.map(per_million),
            cache_write: cost("cache_creation_input_token_cost")?.map(per_million),
            output: per_million(output),
        };
        match rows.get(&(provider, model.to_owned())) {
            Some((true, _)) if !prefixed => {}
            _ => {
                rows.insert((provider, model.to_owned()), (prefixed, row));
            }
        }
    }

    let mut text = String::new();
    writeln!(text, "# SLLMP price table, version {VERSION}").unwrap();
    writeln!(text, "# version: {VERSION}").unwrap();
    writeln!(text, "# source: {SOURCE} (MIT, see PRICES-LICENSE)").unwrap();
    writeln!(
        text,
        "# generated by `cargo xtask prices`; do not edit by hand (override prices in the configuration's `prices:`)"
    )
    .unwrap();
    writeln!(
        text,
        "# columns (tab-separated): provider, model, input, cached_input, cache_write, output"
    )
    .unwrap();
    writeln!(
        text,
        "# prices in USD per million tokens; cached_input is a cache read, cache_write a cache creation;"
    )
    .unwrap();
    writeln!(
        text,
        "# `-` means the source gives no such price: those tokens are charged the input price"
    )
    .unwrap();
    let mut counts = BTreeMap::new();
    for ((provider, model), (_, row)) in &rows {
        *counts.entry(*provider).or_default() += 1;
        writeln!(
            text,
            "{provider}\t{model}\t{}\t{}\t{}\t{}",
            row.input,
            row.cached_input.as_deref().unwrap_or("-"),
            row.cache_write.as_deref().unwrap_or("-"),
            row.output
        )
        .unwrap();
    }
    Ok((text, counts))
}

/// The committed licence: what it covers, then litellm's notice as it came.
fn licence_file(licence: &str) -> String {
    format!(
        "This licence covers prices.tsv beside it, converted from {SOURCE} (the litellm Python package, by Berri AI).\n\n{licence}"
    )
}

/// A per-token cost in USD as the shortest exact decimal string of USD per million tokens.
///
/// Rust prints an `f64` as the shortest decimal that reads back as the same number, without
/// an exponent; moving that decimal's point six places is exact, where multiplying by 1e6
/// is not (`2.5e-6 * 1e6` is `2.4999999999999996`).
fn per_million(cost: f64) -> String {
    let decimal = format!("{cost}");
    let (int, frac) = decimal.split_once('.').unwrap_or((&decimal, ""));
    let mut frac = frac.to_owned();
    while frac.len() < 6 {
        frac.push('0');
    }
    let (moved, rest) = frac.split_at(6);
    let int = format!("{int}{moved}");
    let int = int.trim_start_matches('0');
    let rest = rest.trim_end_matches('0');
    match (int.is_empty(), rest.is_empty()) {
        (true, true) => "0".to_owned(),
        (true, false) => format!("0.{rest}"),
        (false, true) => int.to_owned(),
        (false, false) => format!("{int}.{rest}"),
    }
}

/// Which lines differ between the committed and the generated text.
fn diff_summary(committed: &str, generated: &str) -> String {
    if committed.is_empty() {
        return "missing".to_owned();
    }
    let old: std::collections::BTreeSet<&str> = committed.lines().collect();
    let new: std::collections::BTreeSet<&str> = generated.lines().collect();
    let removed: Vec<&str> = old.difference(&new).copied().collect();
    let added: Vec<&str> = new.difference(&old).copied().collect();
    if removed.is_empty() && added.is_empty() {
        return "the same lines in another order".to_owned();
    }
    let mut summary = format!(
        "{} lines only committed, {} only generated",
        removed.len(),
        added.len()
    );
    for line in removed.iter().take(5) {
        write!(summary, "\n    - {line}").unwrap();
    }
    for line in added.iter().take(5) {
        write!(summary, "\n    + {line}").unwrap();
    }
    summary
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn per_million_is_exact() {
        assert_eq!(per_million(2.5e-06), "2.5");
        assert_eq!(per_million(1.25e-07), "0.125");
        assert_eq!(per_million(1e-05), "10");
        assert_eq!(per_million(6e-09), "0.006");
        assert_eq!(per_million(3.75e-08), "0.0375");
        assert_eq!(per_million(0.0), "0");
        assert_eq!(per_million(1.0), "1000000");
        assert_eq!(per_million(7.5e-05), "75");
        assert_eq!(per_million(2.19e-06), "2.19");
    }

    #[test]
    fn converts_filters_and_deduplicates() {
        let list = json!({
            "sample_spec": {"litellm_provider": "openai", "input_cost_per_token": 0.0},
            "gpt-4o": {"litellm_provider": "openai", "mode": "chat",
                "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                "cache_read_input_token_cost": 1.25e-06},
            "ft:gpt-4o": {"litellm_provider": "openai", "mode": "chat",
                "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation",
                "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding",
                "input_cost_per_token": 2e-08, "output_cost_per_token": 0.0},
            "gemini/gemini-2.5-pro": {"litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05},
            "gemini/gemini-exp": {"litellm_provider": "gemini", "mode": "chat",
                "input_cost_per_token": 0, "output_cost_per_token": 0},
            "mistral/ft/x": {"litellm_provider": "mistral",
                "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "groq/openai/gpt-oss-20b": {"litellm_provider": "groq", "mode": "chat",
                "input_cost_per_token": 7.5e-08, "output_cost_per_token": 3e-07},
            "deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat",
                "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "deepseek/deepseek-chat": {"litellm_provider": "deepseek", "mode": "chat",
                "input_cost_per_token": 2.8e-07, "output_cost_per_token": 4.2e-07,
                "cache_creation_input_token_cost": 0.0},
            "bedrock/claude": {"litellm_provider": "bedrock", "mode": "chat",
                "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "no-output": {"litellm_provider": "openai", "mode": "chat",
                "input_cost_per_token": 1e-06},
        });
        let (text, counts) = convert(&list).unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            rows,
            [
                "deepseek\tdeepseek-chat\t0.28\t-\t0\t0.42",
                "gemini\tgemini-2.5-pro\t1.25\t-\t-\t10",
                "groq\topenai/gpt-oss-20b\t0.075\t-\t-\t0.3",
                "openai\tgpt-4o\t2.5\t1.25\t-\t10",
                "openai\ttext-embedding-3-small\t0.02\t-\t-\t0",
            ]
        );
        assert_eq!(counts["openai"], 2);
        assert!(text.contains("# version: v1\n"));
    }
}
