//! Tidy tests: the architecture rules of `ARCHITECTURE.md`, checked on every `cargo test`.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::process::Command;

    use serde_json::Value;

    use crate::root;

    /// Workspace crates each crate may depend on (normal dependencies). Anything else is an
    /// architecture change: update ARCHITECTURE.md and this table together.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("sllmp-core", &[]),
        ("sllmp-pipeline", &["sllmp-core"]),
        ("sllmp-providers", &["sllmp-core"]),
        ("sllmp-limit", &["sllmp-core", "sllmp-pipeline"]),
        ("sllmp-observe", &["sllmp-core", "sllmp-pipeline"]),
        (
            "sllmp-config",
            &[
                "sllmp-core",
                "sllmp-pipeline",
                "sllmp-providers",
                "sllmp-observe",
                "sllmp-limit",
            ],
        ),
        ("sllmp-server", &["sllmp-core", "sllmp-pipeline"]),
        ("sllmp-alloc", &[]),
        (
            "sllmp",
            &[
                "sllmp-core",
                "sllmp-pipeline",
                "sllmp-providers",
                "sllmp-limit",
                "sllmp-observe",
                "sllmp-config",
                "sllmp-server",
                "sllmp-alloc",
            ],
        ),
        ("sllmp-test-support", &[]),
        (
            "sllmp-bench",
            &["sllmp", "sllmp-test-support", "sllmp-alloc"],
        ),
        ("sllmp-integration", &["sllmp", "sllmp-test-support"]),
        ("example-custom-middleware", &["sllmp"]),
        ("xtask", &[]),
    ];

    /// The only crates allowed to depend on axum: the server, and test/bench tooling.
    const AXUM_USERS: &[&str] = &["sllmp-server", "sllmp-test-support", "sllmp-bench"];

    struct Package {
        name: String,
        description: Option<String>,
        manifest_dir: std::path::PathBuf,
        normal_deps: BTreeSet<String>,
        has_lib: bool,
    }

    fn workspace() -> Vec<Package> {
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .current_dir(root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
        metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|package| Package {
                name: package["name"].as_str().unwrap().to_string(),
                description: package["description"].as_str().map(str::to_string),
                manifest_dir: std::path::Path::new(package["manifest_path"].as_str().unwrap())
                    .parent()
                    .unwrap()
                    .to_path_buf(),
                normal_deps: package["dependencies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["kind"].is_null())
                    .map(|d| d["name"].as_str().unwrap().to_string())
                    .collect(),
                has_lib: package["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "lib")),
            })
            .collect()
    }

    #[test]
    fn the_crate_graph_follows_architecture_md() {
        let packages = workspace();
        let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
        let mut problems = Vec::new();
        for package in &packages {
            let Some(allowed) = allowed.get(package.name.as_str()) else {
                problems.push(format!("{} is not in the tidy table", package.name));
                continue;
            };
            for dep in &package.normal_deps {
                if names.contains(dep.as_str()) && !allowed.contains(&dep.as_str()) {
                    problems.push(format!("{} must not depend on {dep}", package.name));
                }
            }
            if package.normal_deps.contains("axum") && !AXUM_USERS.contains(&package.name.as_str())
            {
                problems.push(format!(
                    "{} must not depend on axum: only sllmp-server knows HTTP",
                    package.name
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "architecture violations:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn every_crate_is_described_documented_and_in_architecture_md() {
        let architecture =
            std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
        let mut problems = Vec::new();
        for package in workspace() {
            if package.description.as_deref().unwrap_or("").is_empty() {
                problems.push(format!("{} has no description in Cargo.toml", package.name));
            }
            let named = [
                format!("`{}`", package.name),
                format!("`crates/{}`", package.name),
            ]
            .iter()
            .any(|form| architecture.contains(form.as_str()));
            if !named {
                problems.push(format!("{} is not named in ARCHITECTURE.md", package.name));
            }
            if package.has_lib {
                let lib = std::fs::read_to_string(package.manifest_dir.join("src/lib.rs"))
                    .unwrap_or_default();
                if !lib.starts_with("//!") {
                    problems.push(format!(
                        "{}/src/lib.rs does not start with crate docs (//!)",
                        package.name
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn no_placeholders_or_debug_macros_in_library_code() {
        let mut problems = Vec::new();
        let mut stack = vec![root().join("crates")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    if name != "tests" && name != "benches" && name != "target" {
                        stack.push(path);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (number, line) in text.lines().enumerate() {
                        // Spelled in pieces so that this file does not match its own rule.
                        for banned in [
                            concat!("todo", "!("),
                            concat!("unimplemented", "!("),
                            concat!("dbg", "!("),
                        ] {
                            if line.contains(banned) && !line.trim_start().starts_with("//") {
                                problems.push(format!(
                                    "{}:{}: {banned}",
                                    path.display(),
                                    number + 1
                                ));
                            }
                        }
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
