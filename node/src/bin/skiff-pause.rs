//! skiff-pause: the process a CRI runtime runs as a Pod's sandbox (the "pause" container).
//!
//! It holds the Pod's namespaces open for as long as the sandbox lives, does nothing else, ends
//! at once on SIGTERM or SIGINT, and reaps any child handed to it when the Pod shares its PID
//! namespace (it is PID 1 there). Built into the sandbox image, so no image has to be fetched
//! from the internet.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

fn main() {
    if std::process::id() != 1 {
        eprintln!("skiff-pause: warning: not running as PID 1");
    }
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        signals.add(signal);
    }
    if let Err(err) = signals.thread_block() {
        eprintln!("skiff-pause: cannot block signals: {err}");
        std::process::exit(1);
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(_) => std::process::exit(0),
            Err(err) => {
                eprintln!("skiff-pause: sigwait: {err}");
                std::process::exit(1);
            }
        }
    }
}

/// Collects every child that has ended.
fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
