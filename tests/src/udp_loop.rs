//! A UDP client that keeps sending to a Service from inside a Pod, for checks that a
//! connected socket follows its Service when the backend behind it changes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Client;

/// A Python client on a connected UDP socket: sends "hostname" every 50 ms for N seconds and
/// prints each answer (or error) as a line. Like a real client (a DNS resolver), it opens a
/// fresh socket to the Service when its socket fails — as the eBPF proxy's ending of a
/// socket whose backend left makes it do — but not on a mere timeout, which it waits out on
/// the same socket (so iptables mode must still clear its stale conntrack entry).
const UDP_LOOP: &str = r#"
import socket, sys, time
ip, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    s.connect((ip, port))
    return s
s = None
start = time.monotonic()
while time.monotonic() - start < secs:
    try:
        s = s or connect()
        s.send(b"hostname")
        print(s.recv(512).decode().strip(), flush=True)
    except OSError as e:
        print("error", e, flush=True)
        if s and not isinstance(e, socket.timeout):
            s.close()
            s = None
    time.sleep(0.05)
"#;

/// The answers of a running [`UDP_LOOP`], each with when it arrived.
#[derive(Debug)]
pub struct UdpLoop {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
}

impl UdpLoop {
    /// Starts the loop in `from`, sending to `target` for `secs` seconds.
    pub fn start(from: &Client, target: SocketAddr, secs: u32) -> Result<Self> {
        let (ip, port) = (target.ip().to_string(), target.port().to_string());
        let secs = secs.to_string();
        let mut child = from
            .command(&["python3", "-c", UDP_LOOP, &ip, &port, &secs])?
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot run python3")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(UdpLoop { child, lines })
    }

    /// Waits until `until` answers, at most `limit`; returns when it did.
    pub fn until(&self, until: &str, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line == until => return Ok(at),
                Ok((_, line)) => last = line,
                Err(_) => break,
            }
        }
        bail!("no answer from {until} within {limit:?} (last: {last:?})")
    }
}

impl Drop for UdpLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
