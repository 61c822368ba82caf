//! Readiness and liveness probes, as kubelet runs them: `httpGet` (2xx/3xx), `tcpSocket`
//! (a connect) and `exec` (exit 0), each within `timeoutSeconds`, every `periodSeconds` after
//! `initialDelaySeconds`, flipping after `successThreshold` / `failureThreshold` results in a
//! row. HTTP and TCP probes go from the node to the Pod's address, as kubelet's do.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a probe checks, resolved against the container.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// GET `path` on `host:port`; 200–399 passes.
    Http {
        /// The address (the Pod's unless the probe names a host).
        host: Option<Ipv4Addr>,
        /// The port.
        port: u16,
        /// The path with query.
        path: String,
    },
    /// A TCP connect.
    Tcp {
        /// The port.
        port: u16,
    },
    /// A command in the Pod; exit 0 passes.
    Exec {
        /// The command.
        argv: Vec<String>,
    },
    /// A probe this agent cannot run (gRPC, HTTPS); always fails, saying why.
    Unsupported(String),
}

/// A probe's settings, with Kubernetes' defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// What to check.
    pub check: Check,
    /// Wait this long after the container starts.
    pub initial_delay: Duration,
    /// Between probes (default 10 s).
    pub period: Duration,
    /// Per probe (default 1 s).
    pub timeout: Duration,
    /// Passes in a row to succeed (default 1).
    pub success_threshold: u32,
    /// Failures in a row to fail (default 3).
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64))
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

impl ProbeSpec {
    /// Reads `probe` of `container`.
    pub fn of(probe: &Probe, container: &Container) -> ProbeSpec {
        let check = if let Some(http) = &probe.http_get {
            match (port_of(&http.port, container), http.scheme.as_deref()) {
                (Err(e), _) => Check::Unsupported(e),
                (Ok(_), Some(scheme)) if !scheme.eq_ignore_ascii_case("HTTP") => {
                    Check::Unsupported(format!("httpGet scheme {scheme} is not supported"))
                }
                (Ok(port), _) => Check::Http {
                    host: http.host.as_deref().and_then(|h| h.parse().ok()),
                    port,
                    path: http.path.clone().unwrap_or_else(|| "/".to_owned()),
                },
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            match port_of(&tcp.port, container) {
                Ok(port) => Check::Tcp { port },
                Err(e) => Check::Unsupported(e),
            }
        } else if let Some(exec) = &probe.exec {
            Check::Exec {
                argv: exec.command.clone().unwrap_or_default(),
            }
        } else {
            Check::Unsupported("only httpGet, tcpSocket and exec probes are supported".into())
        };
        ProbeSpec {
            check,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// A probe's running tally for one run of a container.
#[derive(Clone, Debug)]
pub struct ProbeState {
    /// The settings.
    pub spec: ProbeSpec,
    /// The current verdict.
    pub passing: bool,
    successes: u32,
    failures: u32,
    next: Option<Instant>,
    /// The last failure's message.
    pub last_failure: Option<String>,
}

impl ProbeState {
    /// A new tally; `passing` is where it starts (readiness: false, liveness: true).
    pub fn new(spec: ProbeSpec, passing: bool) -> Self {
        ProbeState {
            spec,
            passing,
            successes: 0,
            failures: 0,
            next: None,
            last_failure: None,
        }
    }

    /// Whether a probe is due for a container that started at `started`.
    pub fn due(&mut self, started: Instant, now: Instant) -> bool {
        let next = *self.next.get_or_insert(started + self.spec.initial_delay);
        next <= now
    }

    /// Records one result; true when the verdict changed.
    pub fn record(&mut self, result: Result<(), String>, now: Instant) -> bool {
        self.next = Some(now + self.spec.period);
        let before = self.passing;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.spec.success_threshold {
                    self.passing = true;
                }
            }
            Err(message) => {
                self.successes = 0;
                self.failures += 1;
                self.last_failure = Some(message);
                if self.failures >= self.spec.failure_threshold {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }
}

/// Runs an HTTP or TCP check against `pod_ip`; exec checks are the runtime's.
pub async fn network_check(
    check: &Check,
    pod_ip: Ipv4Addr,
    timeout: Duration,
) -> Result<(), String> {
    match check {
        Check::Http { host, port, path } => {
            let addr = SocketAddr::from((host.unwrap_or(pod_ip), *port));
            tokio::time::timeout(timeout, http_get(addr, path))
                .await
                .map_err(|_| format!("Get \"http://{addr}{path}\": timeout after {timeout:?}"))?
        }
        Check::Tcp { port } => {
            let addr = SocketAddr::from((pod_ip, *port));
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                Err(_) => Err(format!("dial tcp {addr}: timeout after {timeout:?}")),
            }
        }
        Check::Exec { .. } => Err("exec checks run in the runtime".into()),
        Check::Unsupported(why) => Err(why.clone()),
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream
            .read(&mut head[filled..])
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let line = String::from_utf8_lossy(&head[..filled]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": not an HTTP answer"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_named_ports() {
        let probe: Probe =
            serde_json::from_value(json!({"httpGet": {"port": "http", "path": "/healthz"}}))
                .unwrap();
        let spec = ProbeSpec::of(&probe, &container());
        assert_eq!(
            spec.check,
            Check::Http {
                host: None,
                port: 8080,
                path: "/healthz".into()
            }
        );
        assert_eq!(
            (spec.period, spec.timeout),
            (Duration::from_secs(10), Duration::from_secs(1))
        );
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
        let bad: Probe = serde_json::from_value(json!({"tcpSocket": {"port": "nope"}})).unwrap();
        assert_eq!(
            ProbeSpec::of(&bad, &container()).check,
            Check::Unsupported("no container port named \"nope\"".into())
        );
    }

    #[test]
    fn thresholds_flip_the_verdict() {
        let probe: Probe = serde_json::from_value(json!({"exec": {"command": ["true"]},
            "failureThreshold": 2, "successThreshold": 2, "initialDelaySeconds": 5}))
        .unwrap();
        let mut state = ProbeState::new(ProbeSpec::of(&probe, &container()), false);
        let t0 = Instant::now();
        assert!(!state.due(t0, t0), "waits the initial delay");
        assert!(state.due(t0, t0 + Duration::from_secs(5)));
        assert!(!state.record(Ok(()), t0), "one success of two");
        assert!(state.record(Ok(()), t0), "two: passing");
        assert!(!state.record(Err("x".into()), t0));
        assert!(state.record(Err("y".into()), t0), "two failures: failing");
        assert_eq!(state.last_failure.as_deref(), Some("y"));
    }

    #[tokio::test]
    async fn http_checks_read_the_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 503 Unavailable\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let check = Check::Http {
            host: None,
            port,
            path: "/".into(),
        };
        let ip = Ipv4Addr::LOCALHOST;
        assert_eq!(
            network_check(&check, ip, Duration::from_secs(2)).await,
            Ok(())
        );
        assert_eq!(
            network_check(&check, ip, Duration::from_secs(2)).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
    }
}
