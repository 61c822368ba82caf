//! Running helper commands (`ip`, `sysctl`, `curl`, ...) with a bound on time.
//!
//! A test that hangs is worse than one that fails, so every external command runs with a
//! deadline and is killed when it passes; failures carry the command line and its stderr.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a plain configuration command (`ip link add ...`) may take.
pub const CONFIG_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` to completion within `timeout`, capturing stdout and stderr.
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = describe(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    collect(child, timeout).with_context(|| format!("`{line}`"))
}

/// Waits for `child` (started with piped stdout and stderr) within `timeout`, collecting both.
pub fn collect(mut child: Child, timeout: Duration) -> Result<Output> {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, timeout)?;
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `cmd` and fails unless it exits 0; returns its stdout as text.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let line = describe(cmd);
    let out = output(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS...` and fails unless it succeeds.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args), CONFIG_TIMEOUT)
}

/// Waits for `child` to exit, killing it when `timeout` passes.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let started = Instant::now();
        let err = output(Command::new("sleep").arg("5"), Duration::from_millis(200)).unwrap_err();
        assert!(format!("{err:#}").contains("timed out"), "{err:#}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let err = run(
            Command::new("sh").args(["-c", "echo broken >&2; exit 3"]),
            CONFIG_TIMEOUT,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("broken") && msg.contains("sh -c"), "{msg}");
    }
}
