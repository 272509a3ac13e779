//! `cargo xtask bench`: the benchmark harness (direct vs nginx vs sllmp).

/// Runs the benchmarks.
pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark harness is being written")
}
