//! The official Python `kubernetes` client (from PyPI) against the real skiff-control binary:
//! it lists, creates and watches Services, and its watch ends when its timeout runs out.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use skiff_tests::{binaries, cmd, wait};

#[test]
fn the_python_client_lists_creates_and_watches_services() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("skiff-py-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port()?;
    let mut server = Command::new(binaries::binary("skiff-control")?)
        .args([
            "--data-dir",
            &dir.to_string_lossy(),
            "--bind-address",
            "127.0.0.1",
        ])
        .args(["--secure-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> Result<Value> {
        wait::wait_for_tcp(None, ([127, 0, 0, 1], port).into(), Duration::from_secs(10))?;
        let kubeconfig = dir.join("admin.kubeconfig");
        wait::retry(Duration::from_secs(10), || {
            anyhow::ensure!(kubeconfig.exists(), "no kubeconfig yet");
            Ok(())
        })?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/list_watch_services.py");
        let out = cmd::run(
            Command::new(binaries::python()?).args([
                script,
                &kubeconfig.to_string_lossy(),
                "default",
            ]),
            Duration::from_secs(60),
        )?;
        serde_json::from_str(out.trim()).with_context(|| format!("python printed {out:?}"))
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let seen = result?;
    assert_eq!(
        seen["listed_before"],
        serde_json::json!(["kubernetes"]),
        "{seen}"
    );
    assert_eq!(
        seen["created_type"], "ClusterIP",
        "defaults applied: {seen}"
    );
    assert_eq!(seen["created_target_port"], 8080, "{seen}");
    assert_eq!(
        seen["watched"],
        serde_json::json!([["ADDED", "py-svc"]]),
        "{seen}"
    );
    assert_eq!(
        seen["watch_ended"], true,
        "the watch must end at its timeout: {seen}"
    );
    assert!(seen["watch_seconds"].as_f64().unwrap() < 10.0, "{seen}");
    assert_eq!(
        seen["listed_after"],
        serde_json::json!(["py-svc"]),
        "{seen}"
    );
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
