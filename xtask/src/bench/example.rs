//! Benchmarks whose measuring runs in a release build of an example of a workspace crate
//! (control/examples, proxy/examples), which prints its figures as one JSON array on its last
//! line.

use anyhow::{Context, Result};

use super::Figure;
use crate::shell;

/// Builds and runs `control/examples/<example>` in release; returns the figures it printed.
pub fn run(example: &str) -> Result<Vec<Figure>> {
    run_in("skiff-control", example)
}

/// Builds and runs example `example` of `package` in release; returns the figures it printed.
pub fn run_in(package: &str, example: &str) -> Result<Vec<Figure>> {
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        package,
        "--example",
        example,
    ]))?;
    let binary = shell::root().join("target/release/examples").join(example);
    let out = std::process::Command::new(&binary)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed ({})",
        binary.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .context("the benchmark printed nothing")?;
    let figures: Vec<serde_json::Value> = serde_json::from_str(last)
        .with_context(|| format!("unexpected benchmark output {last:?}"))?;
    figures
        .into_iter()
        .map(|f| {
            Ok(Figure {
                name: f["name"]
                    .as_str()
                    .context("figure without a name")?
                    .to_owned(),
                unit: f["unit"].as_str().unwrap_or("").to_owned(),
                value: f["value"].as_f64().context("figure without a value")?,
                baseline: f["baseline"].as_f64(),
                note: f["note"].as_str().unwrap_or("").to_owned(),
            })
        })
        .collect()
}
