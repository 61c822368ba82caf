//! scheduler: Pods bound per second by the scheduler (first create to last binding seen) with
//! 100 and 1000 Nodes, against the same Pods bound directly through the binding API. The
//! measuring runs in a release build of the `scheduler-bench` example (control/examples),
//! which prints its figures as JSON.

use anyhow::{Context, Result};

use super::Figure;
use crate::shell;

pub fn run() -> Result<Vec<Figure>> {
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        "skiff-control",
        "--example",
        "scheduler-bench",
    ]))?;
    let binary = shell::root().join("target/release/examples/scheduler-bench");
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
            })
        })
        .collect()
}
