//! Where requests come in: UDP on a loop of our own per core, TCP through hickory-server.
//!
//! Measured (`cargo xtask bench dns`), hickory's UDP path costs about twice NSD's CPU per query
//! before any lookup: one task receives, every request is a task of its own, and the answer goes
//! back through a channel before it is sent. Cluster names need none of that — their answer is
//! a synchronous read of the index — so each core gets a socket of its own on the same address
//! (`SO_REUSEPORT`: the kernel spreads clients over them) and a loop that receives, answers and
//! sends in line; only a question that must wait (forwarded, or an ExternalName to chase) is
//! spawned. The receive buffer is raised so a burst is queued, not dropped. TCP (truncated
//! answers asked again, zone-sized replies) stays on hickory's listener, with the same handler.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

use crate::handler::{DnsHandler, udp_response};

/// How long a TCP connection may sit idle between requests.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The receive buffer asked for each UDP socket (the kernel caps it at `rmem_max`).
const RECEIVE_BUFFER: usize = 4 << 20;

/// The server, running.
pub struct Serving {
    tcp: Server<Shared>,
    listen: SocketAddr,
    udp: JoinSet<io::Result<()>>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

impl Serving {
    /// Serves `handler` on `listen` (UDP and TCP) with `udp_loops` UDP sockets; port 0 takes
    /// one port the kernel picks for all of them.
    pub async fn start(
        listen: SocketAddr,
        handler: Arc<DnsHandler>,
        udp_loops: usize,
    ) -> io::Result<Serving> {
        let mut listen = listen;
        let mut udp = JoinSet::new();
        for _ in 0..udp_loops.max(1) {
            let socket = Arc::new(udp_socket(listen)?);
            listen = socket.local_addr()?;
            udp.spawn(udp_loop(socket, Arc::clone(&handler)));
        }
        let mut tcp = Server::new(Shared(handler));
        tcp.register_listener(TcpListener::bind(listen).await?, TCP_IDLE, 64);
        Ok(Serving { tcp, listen, udp })
    }

    /// Where it answers.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Runs until a listener fails.
    pub async fn block_until_done(&mut self) -> io::Result<()> {
        tokio::select! {
            done = self.tcp.block_until_done() => done.map_err(io::Error::other),
            Some(done) = self.udp.join_next() => done.map_err(io::Error::other)?,
        }
    }
}

/// A UDP socket on `listen` that shares the address with the other loops' sockets.
fn udp_socket(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    // Best effort: a smaller buffer only drops more of a burst.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives, answers what can be answered at once, spawns the rest.
async fn udp_loop(socket: Arc<UdpSocket>, handler: Arc<DnsHandler>) -> io::Result<()> {
    let mut buf = vec![0; usize::from(u16::MAX)];
    let mut waiting = JoinSet::new();
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // An ICMP error from an earlier send (a client gone) surfaces here: not ours.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(err) => return Err(err),
        };
        let started = Instant::now();
        let request = match Request::from_bytes(buf[..n].to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(_) => {
                if let Some(answer) = format_error(&buf[..n]) {
                    let _ = socket.send_to(&answer, src).await;
                }
                continue;
            }
        };
        if let Some(answered) = handler.reply_now(&request) {
            let bytes = udp_response(&request, &answered.0);
            let _ = socket.send_to(&bytes, src).await;
            handler.record(&request, &answered, answered.0.rcode, started);
            continue;
        }
        let (socket, handler) = (Arc::clone(&socket), Arc::clone(&handler));
        waiting.spawn(async move {
            let answered = handler.reply_to(&request).await;
            let bytes = udp_response(&request, &answered.0);
            let _ = socket.send_to(&bytes, src).await;
            handler.record(&request, &answered, answered.0.rcode, started);
        });
        while waiting.try_join_next().is_some() {}
    }
}

/// FORMERR for a message whose header parses but whose body does not; nothing for one that
/// has not even a header (there is no ID to answer to), as hickory does.
fn format_error(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    if header.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut answer = Message::error_msg(
        header.metadata.id,
        header.metadata.op_code,
        ResponseCode::FormErr,
    );
    answer.metadata.recursion_desired = header.metadata.recursion_desired;
    answer.to_vec().ok()
}

/// The handler, shared between the UDP loops and hickory's TCP listener.
struct Shared(Arc<DnsHandler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}
