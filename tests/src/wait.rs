//! Talking to servers under test: one HTTP GET, one UDP exchange, and bounded waits for either.
//!
//! The client is a few lines of HTTP/1.1 over a `TcpStream` rather than a library: tests need
//! the status and body of a `Connection: close` reply, nothing more, and every step has a timeout.
//! Outside a namespace this sandbox accepts any TCP connect, so callers assert on *what* answered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Netns;

/// A parsed HTTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// One `GET path` to `addr` from the calling thread's namespace, each step bounded by `timeout`.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: skiff-harness\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the reply from {addr}"))?;
    parse_reply(&raw).with_context(|| format!("reply from {addr}"))
}

fn parse_reply(raw: &[u8]) -> Result<HttpReply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status_line = head.lines().next().context("empty reply")?;
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        bail!("not an HTTP reply: {status_line:?}");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    Ok(HttpReply {
        status,
        body: body.to_owned(),
    })
}

/// One UDP datagram to `addr` and its answer, from the calling thread's namespace.
pub fn udp_exchange(addr: SocketAddr, payload: &str, timeout: Duration) -> Result<String> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect(addr)?;
    socket.send(payload.as_bytes())?;
    let mut buf = [0u8; 2048];
    let n = socket
        .recv(&mut buf)
        .with_context(|| format!("no UDP answer from {addr}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Retries `attempt` every 50 ms until it succeeds or `timeout` passes; returns the last error.
pub fn retry<T>(timeout: Duration, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => {
                return Err(err.context(format!("still failing after {timeout:?}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits until `GET path` on `addr`, sent from inside `from` (or from here when `None`), answers
/// 200; returns that reply.
pub fn wait_for_http(
    from: Option<&Netns>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpReply> {
    let path = path.to_owned();
    let attempt_timeout = Duration::from_secs(2).min(timeout);
    let wait = move || {
        retry(timeout, || {
            let reply = http_get(addr, &path, attempt_timeout)?;
            anyhow::ensure!(
                reply.status == 200,
                "status {}: {}",
                reply.status,
                reply.body
            );
            Ok(reply)
        })
    };
    match from {
        Some(ns) => ns.run(wait),
        None => wait(),
    }
}

/// Waits until a TCP connect to `addr` from inside `from` (or from here) succeeds.
pub fn wait_for_tcp(from: Option<&Netns>, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let wait = move || {
        retry(timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map(drop)
                .with_context(|| format!("cannot connect to {addr}"))
        })
    };
    match from {
        Some(ns) => ns.run(wait),
        None => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_into_status_and_body() {
        let reply =
            parse_reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n").unwrap();
        assert_eq!(
            reply,
            HttpReply {
                status: 404,
                body: "no\n".into()
            }
        );
        assert!(parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn retry_gives_up_with_the_last_error_after_its_bound() {
        let started = Instant::now();
        let mut calls = 0;
        let err = retry::<()>(Duration::from_millis(200), || {
            calls += 1;
            bail!("attempt {calls}")
        })
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(calls >= 2 && format!("{err:#}").contains(&format!("attempt {calls}")));
    }
}
