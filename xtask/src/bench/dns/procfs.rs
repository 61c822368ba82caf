//! What /proc says of the servers: memory (VmRSS, or PSS summed over a process group whose
//! members share pages) and CPU time.

use anyhow::{Context, Result, ensure};

/// A process's VmRSS (kB).
pub(super) fn vm_rss_kb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_kb(&status, "VmRSS:").with_context(|| format!("no VmRSS for pid {pid}"))
}

/// The processes of group `pgid`.
fn group_pids(pgid: u32) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_field(&stat, 5) == Some(u64::from(pgid)) {
            pids.push(pid);
        }
    }
    ensure!(!pids.is_empty(), "no process in group {pgid}");
    Ok(pids)
}

/// Field `n` (from 1, as proc(5) counts) of a `/proc/<pid>/stat` line, past the command name.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// The PSS (kB) summed over the processes of group `pgid` (shared pages counted once), and
/// how many there are.
pub(super) fn group_pss_kb(pgid: u32) -> Result<(f64, usize)> {
    let pids = group_pids(pgid)?;
    let mut total = 0.0;
    for pid in &pids {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        total += status_kb(&rollup, "Pss:").context("no Pss")?;
    }
    Ok((total, pids.len()))
}

/// CPU time (s, user + system) used so far by the processes of group `pgid`.
pub(super) fn group_cpu_seconds(pgid: u32) -> Result<f64> {
    /// Linux's USER_HZ, fixed in its ABI.
    const TICKS_PER_SECOND: f64 = 100.0;
    let mut ticks = 0;
    for pid in group_pids(pgid)? {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        ticks += stat_field(&stat, 14).unwrap_or(0) + stat_field(&stat, 15).unwrap_or(0);
    }
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// The kB figure on the line starting with `label`.
fn status_kb(text: &str, label: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}
