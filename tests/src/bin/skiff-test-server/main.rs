//! skiff-test-server: what test Pods run (Kubernetes' agnhost `netexec`, cut to what skiff needs).
//!
//! Every answer names the Pod that gave it and the client address it saw, so a test proves *which*
//! backend answered and whether the source address survived (no SNAT) — a bare successful connect
//! proves nothing in this sandbox. HTTP and UDP answer alike; `/exit` ends the process on request
//! for churn tests.
//!
//! ```text
//! skiff-test-server [--name NAME] [--http-port 8080] [--udp-port 8081] [--bind 0.0.0.0]
//!                   [--shutdown-delay SECONDS]
//! ```
//! `--shutdown-delay` keeps serving that long after SIGTERM (agnhost's `--delay-shutdown`): a
//! deleted Pod's endpoint stays *serving* while *terminating*, as a draining server's does.
//! NAME defaults to `$POD_NAME`, then `$HOSTNAME` (a container's hostname is its Pod's name;
//! skiff's process runtime sets the variable), then the host name.

mod http;
mod udp;

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

/// What the server was asked to be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    name: String,
    bind: IpAddr,
    http_port: u16,
    udp_port: u16,
    /// Seconds to keep serving after SIGTERM (0: SIGTERM ends the process at once).
    shutdown_delay: u64,
}

const USAGE: &str =
    "usage: skiff-test-server [--name NAME] [--http-port PORT] [--udp-port PORT] [--bind ADDR]
                         [--shutdown-delay SECONDS]
  HTTP: GET / -> \"NAME CLIENT\", /hostname, /clientip, /healthz, /echo?msg=X, /exit?code=N
  UDP:  \"hostname\", \"clientip\", \"echo X\"; anything else -> \"NAME CLIENT\"";

fn parse_args(args: &[String], env_name: Option<String>, host: String) -> Result<Config, String> {
    let mut config = Config {
        name: env_name.filter(|n| !n.is_empty()).unwrap_or(host),
        bind: IpAddr::from([0, 0, 0, 0]),
        http_port: 8080,
        udp_port: 8081,
        shutdown_delay: 0,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs {what}"))
        };
        match flag.as_str() {
            "--name" => config.name = value("a name")?,
            "--bind" => {
                config.bind = value("an address")?
                    .parse()
                    .map_err(|e| format!("--bind: {e}"))?;
            }
            "--http-port" => config.http_port = port(&value("a port")?)?,
            "--udp-port" => config.udp_port = port(&value("a port")?)?,
            "--shutdown-delay" => {
                let text = value("seconds")?;
                config.shutdown_delay = text
                    .parse()
                    .map_err(|_| format!("not a number of seconds: {text:?}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(config)
}

fn port(text: &str) -> Result<u16, String> {
    text.parse().map_err(|_| format!("not a port: {text:?}"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default_name = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|n| !n.is_empty());
    let config = match parse_args(&args, default_name, host_name()) {
        Ok(config) => Arc::new(config),
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    // Always our own handler: as a container's PID 1 the kernel ignores a signal whose
    // disposition is the default, so SIGTERM would otherwise wait out the grace period.
    if let Err(err) = exit_after_sigterm(std::time::Duration::from_secs(config.shutdown_delay)) {
        eprintln!("cannot take over SIGTERM: {err}");
        return ExitCode::from(1);
    }
    let listener = match std::net::TcpListener::bind((config.bind, config.http_port)) {
        Ok(l) => l,
        Err(err) => {
            eprintln!(
                "cannot listen on tcp {}:{}: {err}",
                config.bind, config.http_port
            );
            return ExitCode::from(1);
        }
    };
    let socket = match std::net::UdpSocket::bind((config.bind, config.udp_port)) {
        Ok(s) => s,
        Err(err) => {
            eprintln!(
                "cannot listen on udp {}:{}: {err}",
                config.bind, config.udp_port
            );
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "skiff-test-server {} listening on http {}:{} and udp {}:{}",
        config.name, config.bind, config.http_port, config.bind, config.udp_port
    );
    let udp_config = Arc::clone(&config);
    std::thread::spawn(move || udp::serve(&socket, &udp_config));
    http::serve(&listener, &config);
    ExitCode::SUCCESS
}

/// Blocks SIGTERM in this thread (and so in every thread started after) and ends the process
/// `delay` after one arrives: at once with 143, as the default disposition would, or after
/// serving on with 0.
fn exit_after_sigterm(delay: std::time::Duration) -> nix::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.thread_block()?;
    std::thread::spawn(move || {
        if term.wait().is_ok() {
            if delay.is_zero() {
                std::process::exit(128 + Signal::SIGTERM as i32);
            }
            eprintln!("SIGTERM: serving {} s more", delay.as_secs());
            std::thread::sleep(delay);
            std::process::exit(0);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn name_comes_from_flag_then_env_then_host() {
        let c = parse_args(&args(&[]), Some("web-1".into()), "host".into()).unwrap();
        assert_eq!(c.name, "web-1");
        let c = parse_args(&args(&[]), Some(String::new()), "host".into()).unwrap();
        assert_eq!(c.name, "host");
        let c = parse_args(&args(&["--name", "x"]), Some("web-1".into()), "h".into()).unwrap();
        assert_eq!(c.name, "x");
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let err = parse_args(&args(&["--http-port", "99999"]), None, "h".into()).unwrap_err();
        assert!(err.contains("not a port"), "{err}");
        let err = parse_args(&args(&["--bogus"]), None, "h".into()).unwrap_err();
        assert!(err.contains("unknown argument"), "{err}");
        let err = parse_args(&args(&["--name"]), None, "h".into()).unwrap_err();
        assert!(err.contains("needs a name"), "{err}");
    }
}
