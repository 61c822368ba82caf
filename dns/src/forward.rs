//! Names outside the cluster go to the node's resolvers (CoreDNS's `forward . /etc/resolv.conf`
//! with its `cache`).
//!
//! Each question is sent from a fresh UDP socket with a random ID (both unpredictable to an
//! off-path spoofer) and asked again over TCP when the answer comes back truncated. Upstreams
//! are tried in turn, starting from a rotating one so load spreads; a question no upstream
//! answers in time is SERVFAIL. At most `max_concurrent` questions are out at once — beyond
//! that the answer is REFUSED at once, as CoreDNS's `max_concurrent` does, so a flood of
//! unique names costs bounded memory and sockets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Edns, Message, Query};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::cache::{Cache, CacheKey, CacheLimits};
use crate::metrics::Metrics;
use crate::reply::Reply;

/// The EDNS buffer size asked of upstreams (the DNS flag day's 1232 bytes: no fragments).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// How the forwarder behaves.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// The upstream servers, tried in turn.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer.
    pub timeout: Duration,
    /// At most this many questions out at once.
    pub max_concurrent: usize,
    /// The cache's bounds.
    pub cache: CacheLimits,
}

/// Why a question got no upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Too many questions are out already.
    #[error("too many questions in flight")]
    Busy,
    /// No upstream answered.
    #[error("no upstream answered: {0}")]
    Unanswered(#[source] io::Error),
}

/// Asks upstream servers, through a cache.
#[derive(Debug)]
pub struct Forwarder {
    config: ForwardConfig,
    cache: Mutex<Cache>,
    in_flight: Semaphore,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// A forwarder to `config.upstreams`.
    pub fn new(config: ForwardConfig, metrics: Arc<Metrics>) -> Self {
        Forwarder {
            cache: Mutex::new(Cache::new(config.cache)),
            in_flight: Semaphore::new(config.max_concurrent),
            next: AtomicUsize::new(0),
            config,
            metrics,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding it leaves only cached answers behind: still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer to `name`/`qtype`/`class`, from the cache or an upstream.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        class: DNSClass,
    ) -> Result<Reply, ForwardError> {
        let key = CacheKey {
            name: LowerName::new(name),
            qtype,
            class,
        };
        if let Some(hit) = self.cache().get(&key, Instant::now()) {
            self.metrics.cache_hits.inc();
            return Ok(hit);
        }
        self.metrics.cache_misses.inc();
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.metrics.forward_failed("busy");
            return Err(ForwardError::Busy);
        };
        let upstreams = &self.config.upstreams;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream servers");
        for i in 0..upstreams.len() {
            let upstream = upstreams[(start + i) % upstreams.len()];
            self.metrics.forwarded.inc();
            match exchange(upstream, name, qtype, class, self.config.timeout).await {
                Ok(message) => {
                    let reply = Reply::from_upstream(message);
                    let mut cache = self.cache();
                    cache.insert(key, &reply, Instant::now());
                    self.metrics.cache_entries.set(cache.len() as i64);
                    return Ok(reply);
                }
                Err(err) => {
                    tracing::debug!(%upstream, %name, error = %err, "upstream did not answer");
                    last = err;
                }
            }
        }
        self.metrics.forward_failed("unanswered");
        Err(ForwardError::Unanswered(last))
    }
}

/// The question as a query message with a random ID.
fn query_message(name: &Name, qtype: RecordType, class: DNSClass) -> Message {
    let mut query = Query::query(name.clone(), qtype);
    query.set_query_class(class);
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    message.set_edns(edns);
    message
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

/// Whether `answer` answers `asked` (same ID and question; a spoofed or stale one does not).
fn answers(asked: &Message, answer: &Message) -> bool {
    answer.metadata.id == asked.metadata.id && answer.queries == asked.queries
}

/// One question to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(
    upstream: SocketAddr,
    name: &Name,
    qtype: RecordType,
    class: DNSClass,
    timeout: Duration,
) -> io::Result<Message> {
    let asked = query_message(name, qtype, class);
    let bytes = asked.to_vec().map_err(invalid)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let answer = tokio::time::timeout_at(deadline, udp_exchange(upstream, &asked, &bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer over UDP"))??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout_at(deadline, tcp_exchange(upstream, &asked, &bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer over TCP"))?
}

async fn udp_exchange(upstream: SocketAddr, asked: &Message, bytes: &[u8]) -> io::Result<Message> {
    let local: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Not ours (a late answer to someone else, or junk): keep waiting for ours.
        if let Ok(answer) = Message::from_vec(&buf[..n])
            && answers(asked, &answer)
        {
            return Ok(answer);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, asked: &Message, bytes: &[u8]) -> io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(invalid)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    let answer = Message::from_vec(&buf).map_err(invalid)?;
    if answers(asked, &answer) {
        Ok(answer)
    } else {
        Err(invalid("the TCP answer is not for the question asked"))
    }
}

/// The `nameserver` lines of resolv.conf text, on port 53.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_read_on_port_53() {
        let text = "# x\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\noptions ndots:5\n";
        assert_eq!(
            resolv_conf_servers(text),
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn only_an_answer_to_the_question_asked_counts() {
        let name = Name::from_ascii("www.example.com.").unwrap();
        let asked = query_message(&name, RecordType::A, DNSClass::IN);
        let mut answer = asked.clone();
        assert!(answers(&asked, &answer));
        answer.metadata.id = asked.metadata.id.wrapping_add(1);
        assert!(!answers(&asked, &answer));
        let other = query_message(
            &Name::from_ascii("evil.example.").unwrap(),
            RecordType::A,
            DNSClass::IN,
        );
        let mut spoofed = other;
        spoofed.metadata.id = asked.metadata.id;
        assert!(!answers(&asked, &spoofed));
    }
}
