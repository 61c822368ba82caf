//! skiff-dns end to end on loopback: the real hickory server with our handler, asked over UDP
//! and TCP, forwarding to a scripted upstream; then a fuzz of its request path.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus_client::registry::Registry;
use serde_json::json;
use skiff_common::rng::SmallRng;
use skiff_dns::cache::CacheLimits;
use skiff_dns::forward::{ForwardConfig, Forwarder};
use skiff_dns::handler::DnsHandler;
use skiff_dns::index::Index;
use skiff_dns::metrics::Metrics;
use skiff_dns::serve::Serving;
use skiff_dns::zone::ClusterZone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const WAIT: Duration = Duration::from_secs(5);

/// A scripted upstream: `www.example.com` A, `big.example.com` 100 TXT records (truncated
/// over UDP, whole over TCP), NXDOMAIN with an SOA for anything else. Counts questions.
struct Upstream {
    addr: SocketAddr,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

fn upstream_answer(query: &Message) -> Message {
    let mut answer = Message::response(query.metadata.id, OpCode::Query);
    answer.metadata.recursion_available = true;
    answer.add_queries(query.queries.clone());
    let q = &query.queries[0];
    let name = q.name().to_ascii().to_ascii_lowercase();
    match name.as_str() {
        "www.example.com." => {
            answer.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
            ));
        }
        "big.example.com." => {
            for i in 0..100 {
                answer.add_answer(Record::from_rdata(
                    q.name().clone(),
                    60,
                    RData::TXT(TXT::new(vec![format!("{i:03} {}", "x".repeat(40))])),
                ));
            }
        }
        _ => {
            let apex = Name::from_ascii("example.com.").unwrap();
            let soa = SOA::new(apex.clone(), apex.clone(), 1, 60, 60, 60, 30);
            answer.metadata.response_code = ResponseCode::NXDomain;
            answer.add_authority(Record::from_rdata(apex, 30, RData::SOA(soa)));
        }
    }
    answer
}

impl Upstream {
    async fn start() -> Upstream {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let count = Arc::clone(&asked);
        tokio::spawn(async move {
            let mut buf = vec![0; 65535];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let name = query.queries[0].name().to_ascii().to_ascii_lowercase();
                *count.lock().unwrap().entry(name).or_default() += 1;
                let mut answer = upstream_answer(&query);
                if answer.to_vec().unwrap().len() > 512 {
                    answer = answer.truncate();
                }
                let _ = udp.send_to(&answer.to_vec().unwrap(), from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let len = stream.read_u16().await.unwrap();
                let mut buf = vec![0; usize::from(len)];
                stream.read_exact(&mut buf).await.unwrap();
                let answer = upstream_answer(&Message::from_vec(&buf).unwrap())
                    .to_vec()
                    .unwrap();
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend(answer);
                stream.write_all(&framed).await.unwrap();
            }
        });
        Upstream { addr, asked }
    }

    fn asked(&self, name: &str) -> usize {
        self.asked.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

struct Dns {
    addr: SocketAddr,
    index: Arc<RwLock<Index>>,
    metrics: Arc<Metrics>,
    upstream: Upstream,
    _server: Serving,
}

async fn start(cache: CacheLimits) -> Dns {
    start_with(cache, true).await
}

/// A server forwarding to the scripted upstream, or (`forwarding` false) to none at all.
async fn start_with(cache: CacheLimits, forwarding: bool) -> Dns {
    let upstream = Upstream::start().await;
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let index = Arc::new(RwLock::new(Index::new()));
    let forwarder = Forwarder::new(
        ForwardConfig {
            upstreams: if forwarding {
                vec![upstream.addr]
            } else {
                Vec::new()
            },
            timeout: Duration::from_secs(2),
            max_concurrent: 100,
            cache,
        },
        Arc::clone(&metrics),
    );
    let zone = ClusterZone::new("cluster.local", 5).unwrap();
    let handler = DnsHandler::new(zone, Arc::clone(&index), forwarder, Arc::clone(&metrics));
    // Two UDP loops on one port, as on a 2-core node.
    let server = Serving::start("127.0.0.1:0".parse().unwrap(), Arc::new(handler), 2)
        .await
        .unwrap();
    Dns {
        addr: server.addr(),
        index,
        metrics,
        upstream,
        _server: server,
    }
}

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    let mut object = json!({"metadata": {"name": name, "namespace": ns}});
    object["spec"] = spec;
    serde_json::from_value(object).unwrap()
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message
}

async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0; 65535];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(buf[..n].to_vec())
}

async fn udp(server: SocketAddr, message: &Message) -> Message {
    let bytes = udp_raw(server, &message.to_vec().unwrap())
        .await
        .expect("an answer over UDP");
    Message::from_vec(&bytes).unwrap()
}

async fn tcp(server: SocketAddr, message: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = message.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend(bytes);
    stream.write_all(&framed).await.unwrap();
    let len = tokio::time::timeout(WAIT, stream.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn a_records(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn cluster_names_are_answered_authoritatively_and_a_new_service_at_once() {
    let dns = start(CacheLimits::default()).await;
    let name = "web.default.svc.cluster.local.";
    let answer = udp(dns.addr, &query(name, RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.metadata.authoritative);
    assert!(
        matches!(
            answer.authorities.first().map(|r| &r.data),
            Some(RData::SOA(_))
        ),
        "a negative answer carries the SOA: {answer:?}"
    );
    dns.index.write().unwrap().apply_service(&service(
        "default",
        "web",
        json!({"clusterIP": "10.96.0.20"}),
    ));
    let answer = udp(dns.addr, &query(name, RecordType::A, Some(1232))).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&answer), ["10.96.0.20"]);
    assert_eq!(answer.answers[0].ttl, 5);
    assert!(answer.edns.is_some(), "EDNS is answered with EDNS");
    let answer = tcp(dns.addr, &query(name, RecordType::A, None)).await;
    assert_eq!(a_records(&answer), ["10.96.0.20"]);
    assert_eq!(
        dns.upstream.asked(name),
        0,
        "cluster names are never forwarded"
    );
}

#[tokio::test]
async fn without_upstreams_the_cluster_still_resolves_and_other_names_fail_at_once() {
    let dns = start_with(CacheLimits::default(), false).await;
    dns.index.write().unwrap().apply_service(&service(
        "default",
        "web",
        json!({"clusterIP": "10.96.0.20"}),
    ));
    let inside = query("web.default.svc.cluster.local.", RecordType::A, None);
    assert_eq!(a_records(&udp(dns.addr, &inside).await), ["10.96.0.20"]);
    let outside = query("www.example.com.", RecordType::A, None);
    assert_eq!(
        udp(dns.addr, &outside).await.metadata.response_code,
        ResponseCode::ServFail
    );
}

#[tokio::test]
async fn a_big_headless_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let dns = start(CacheLimits::default()).await;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": (1..=100).map(|i| json!({"addresses": [format!("10.244.1.{i}")]}))
            .collect::<Vec<_>>(),
    }))
    .unwrap();
    {
        let mut index = dns.index.write().unwrap();
        index.apply_service(&service("default", "db", json!({"clusterIP": "None"})));
        index.apply_slice(&slice);
    }
    let name = "db.default.svc.cluster.local.";
    let small = udp(dns.addr, &query(name, RecordType::A, None)).await;
    assert!(small.metadata.truncation, "100 A records exceed 512 bytes");
    let whole = tcp(dns.addr, &query(name, RecordType::A, None)).await;
    assert!(!whole.metadata.truncation);
    assert_eq!(a_records(&whole).len(), 100);
    let edns = udp(dns.addr, &query(name, RecordType::A, Some(4096))).await;
    assert!(!edns.metadata.truncation, "EDNS lets 100 records fit");
    assert_eq!(a_records(&edns).len(), 100);
}

#[tokio::test]
async fn other_names_are_forwarded_cached_and_truncated_answers_fetched_over_tcp() {
    let dns = start(CacheLimits::default()).await;
    for _ in 0..3 {
        let answer = udp(dns.addr, &query("www.example.com.", RecordType::A, None)).await;
        assert_eq!(a_records(&answer), ["192.0.2.80"]);
        assert!(!answer.metadata.authoritative);
        assert!(answer.metadata.recursion_available);
    }
    assert_eq!(
        dns.upstream.asked("www.example.com."),
        1,
        "cached after one"
    );
    for _ in 0..2 {
        let answer = udp(dns.addr, &query("nope.example.com.", RecordType::A, None)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(
        dns.upstream.asked("nope.example.com."),
        1,
        "negative caching"
    );
    assert_eq!(dns.metrics.cache_hits.get(), 3);
    // Over 512 bytes upstream: the forwarder asks again over TCP and passes it all on (TCP).
    let big = tcp(dns.addr, &query("big.example.com.", RecordType::TXT, None)).await;
    assert_eq!(big.answers.len(), 100);
}

#[tokio::test]
async fn requests_that_are_not_plain_queries_are_refused_or_rejected() {
    let dns = start(CacheLimits::default()).await;
    let mut update = query("web.default.svc.cluster.local.", RecordType::A, None);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(
        udp(dns.addr, &update).await.metadata.response_code,
        ResponseCode::NotImp
    );
    let mut two = query("a.example.com.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_ascii("b.example.com.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        udp(dns.addr, &two).await.metadata.response_code,
        ResponseCode::FormErr
    );
    let mut chaos = query("version.bind.", RecordType::TXT, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        udp(dns.addr, &chaos).await.metadata.response_code,
        ResponseCode::Refused
    );
    let axfr = query("cluster.local.", RecordType::AXFR, None);
    assert_eq!(
        tcp(dns.addr, &axfr).await.metadata.response_code,
        ResponseCode::Refused
    );
    let mut v1 = query("cluster.local.", RecordType::SOA, Some(1232));
    v1.edns.as_mut().unwrap().set_version(1);
    // BADVERS is 16, its high bits in the EDNS record.
    assert_eq!(
        u16::from(udp(dns.addr, &v1).await.metadata.response_code),
        u16::from(ResponseCode::BADVERS)
    );
    assert_eq!(dns.upstream.asked("a.example.com."), 0);
}

/// Random bytes, and valid queries with random bytes changed, thrown at the server: every
/// answer parses and is a response, nothing is forwarded that should not be, the server keeps
/// answering, and a flood of unique names never grows the cache past its bound.
#[tokio::test]
async fn fuzzed_requests_and_a_flood_of_unique_names_are_survived_with_bounded_memory() {
    let dns = start(CacheLimits {
        capacity: 100,
        ..CacheLimits::default()
    })
    .await;
    dns.index.write().unwrap().apply_service(&service(
        "default",
        "web",
        json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
    ));
    let mut rng = SmallRng::seeded(0x5eed_d115);
    let seeds: Vec<Vec<u8>> = [
        query("web.default.svc.cluster.local.", RecordType::A, Some(1232)),
        query(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            None,
        ),
        query("20.0.96.10.in-addr.arpa.", RecordType::PTR, None),
        query("www.example.com.", RecordType::A, None),
    ]
    .iter()
    .map(|m| m.to_vec().unwrap())
    .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut answered = 0;
    for round in 0..3000 {
        let bytes: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect()
        } else {
            let mut bytes = rng.pick(&seeds).clone();
            for _ in 0..=rng.below(4) {
                let at = rng.index(bytes.len());
                bytes[at] = rng.next_u64() as u8;
            }
            if rng.one_in(5) {
                bytes.truncate(rng.index(bytes.len()));
            }
            bytes
        };
        socket.send_to(&bytes, dns.addr).await.unwrap();
        let mut buf = vec![0; 65535];
        // A message without a whole header is dropped unanswered; wait briefly for others.
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(25), socket.recv(&mut buf)).await
        {
            let response = Message::from_vec(&buf[..n]).expect("every answer parses");
            assert_eq!(response.metadata.message_type, MessageType::Response);
            answered += 1;
        }
    }
    eprintln!("{answered} of 3000 answered");
    assert!(answered > 1000, "only {answered} of 3000 answered");
    // A flood of unique names outside the cluster (NXDOMAIN upstream), and inside it.
    for i in 0..500 {
        let outside = query(&format!("n{i}.example.com."), RecordType::A, None);
        assert_eq!(
            udp(dns.addr, &outside).await.metadata.response_code,
            ResponseCode::NXDomain
        );
        let inside = query(
            &format!("n{i}.default.svc.cluster.local."),
            RecordType::A,
            None,
        );
        assert_eq!(
            udp(dns.addr, &inside).await.metadata.response_code,
            ResponseCode::NXDomain
        );
    }
    assert!(
        dns.metrics.cache_entries.get() <= 100,
        "cache holds {}",
        dns.metrics.cache_entries.get()
    );
    let still = udp(
        dns.addr,
        &query("web.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(a_records(&still), ["10.96.0.20"]);
    assert_eq!(dns.upstream.asked("web.default.svc.cluster.local."), 0);
}
