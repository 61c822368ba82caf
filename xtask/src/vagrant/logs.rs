//! What each VM did, kept when something fails: the serial console (libvirt writes it to
//! `target/vagrant/console/<vm>.log` from the first boot message on) and the journal of the skiff
//! units, saved under `target/vagrant/logs/` and their ends printed, so a CI log alone shows why.

use std::time::Duration;

use super::vms::{self, Settings};
use crate::shell;

/// Lines of each log printed.
const TAIL: usize = 40;

/// Saves and prints the logs of every VM; never fails (it runs while handling a failure).
pub fn collect(settings: &Settings) {
    let dir = vms::log_dir();
    let _ = std::fs::create_dir_all(&dir);
    shell::step("vagrant: logs of the VMs");
    if let Ok(state) = vms::kubectl(&["get", "nodes,pods", "-o", "wide"]) {
        println!("{state}");
    }
    for vm in settings.names() {
        let script = "journalctl --no-pager -o short-precise -u skiff-control -u skiff-node \
                      -u skiff-demo; systemctl --no-pager status skiff-control skiff-node skiff-demo";
        match vms::ssh(&vm, script, Duration::from_secs(90)) {
            Ok(out) => {
                let journal = String::from_utf8_lossy(&out.stdout).into_owned();
                let path = dir.join(format!("{vm}.journal"));
                let _ = std::fs::write(&path, &journal);
                print_tail(&format!("{vm}: journal ({})", path.display()), &journal);
            }
            Err(err) => println!("{vm}: no journal ({err:#})"),
        }
        let console = shell::root()
            .join("target/vagrant/console")
            .join(format!("{vm}.log"));
        match std::fs::read(&console) {
            Ok(bytes) => print_tail(
                &format!("{vm}: serial console ({})", console.display()),
                &String::from_utf8_lossy(&bytes),
            ),
            Err(err) => println!("{vm}: no serial console at {}: {err}", console.display()),
        }
    }
}

fn print_tail(title: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    println!("--- {title}, last {} lines", TAIL.min(lines.len()));
    for line in &lines[lines.len().saturating_sub(TAIL)..] {
        println!("{line}");
    }
}
