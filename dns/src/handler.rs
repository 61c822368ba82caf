//! Every request's path: checked, then answered from the cluster zone or forwarded, then
//! written back with the client's EDNS limits (hickory truncates UDP answers that do not fit
//! and sets TC, and the client asks again over TCP).
//!
//! What is not a plain query is refused or rejected here, never passed on: another opcode is
//! NOTIMP, more or fewer than one question FORMERR, an EDNS version above 0 BADVERS, a class
//! other than IN or a zone transfer REFUSED. Messages that do not parse at all are answered
//! FORMERR (or dropped when not even the header parses) by hickory before they reach us.

use std::iter::Empty;
use std::slice::Iter;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use crate::forward::Forwarder;
use crate::index::Index;
use crate::metrics::{Metrics, Source};
use crate::reply::Reply;
use crate::zone::{ClusterZone, ZoneAnswer};

/// The largest UDP answer we write, whatever the client offers (RFC 6891 allows up to 4096).
const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers DNS requests.
#[derive(Debug)]
pub struct DnsHandler {
    zone: ClusterZone,
    index: Arc<RwLock<Index>>,
    forwarder: Forwarder,
    metrics: Arc<Metrics>,
}

/// Query types with a label of their own in the metrics; others count as `other`, so a flood
/// of odd types cannot grow the label set.
fn type_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::TXT => "TXT",
        RecordType::MX => "MX",
        RecordType::NS => "NS",
        RecordType::SOA => "SOA",
        RecordType::ANY => "ANY",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

impl DnsHandler {
    /// A handler answering `zone` from `index` and forwarding the rest.
    pub fn new(
        zone: ClusterZone,
        index: Arc<RwLock<Index>>,
        forwarder: Forwarder,
        metrics: Arc<Metrics>,
    ) -> Self {
        DnsHandler {
            zone,
            index,
            forwarder,
            metrics,
        }
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A writer that panicked left a whole index behind (each change is one call).
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A zone answer as a reply: negative ones carry the SOA, with the negative TTL.
    fn zone_reply(&self, answer: ZoneAnswer, index: &Index) -> Reply {
        let negative = |rcode| Reply {
            authoritative: true,
            authorities: vec![self.zone.soa(index.revision())],
            ..Reply::new(rcode)
        };
        match answer {
            ZoneAnswer::Found {
                answers,
                additionals,
            } => Reply {
                authoritative: true,
                answers,
                additionals,
                ..Reply::new(ResponseCode::NoError)
            },
            ZoneAnswer::NoData => negative(ResponseCode::NoError),
            ZoneAnswer::NxDomain => negative(ResponseCode::NXDomain),
            ZoneAnswer::Alias { cname, .. } => Reply {
                authoritative: true,
                answers: vec![*cname],
                ..Reply::new(ResponseCode::NoError)
            },
        }
    }

    /// What the zone alone says of one question: an answer, an ExternalName to chase, or
    /// nothing (forward it).
    fn local(&self, name: &Name, qtype: RecordType, class: DNSClass) -> Local {
        if class != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Local::Done(Reply::new(ResponseCode::Refused), Source::Rejected);
        }
        let index = self.index();
        let answer = if self.zone.contains(name) {
            Some(self.zone.lookup(&index, name, qtype))
        } else {
            self.zone.lookup_reverse(&index, name, qtype)
        };
        match answer {
            Some(ZoneAnswer::Alias { cname, target }) => Local::Chase(
                self.zone_reply(
                    ZoneAnswer::Alias {
                        cname,
                        target: target.clone(),
                    },
                    &index,
                ),
                target,
            ),
            Some(answer) => Local::Done(self.zone_reply(answer, &index), Source::Cluster),
            None => Local::Forward,
        }
    }

    /// The answer to one question, and who gave it.
    pub async fn answer(&self, name: &Name, qtype: RecordType, class: DNSClass) -> (Reply, Source) {
        match self.local(name, qtype, class) {
            Local::Done(reply, source) => (reply, source),
            Local::Chase(mut reply, target) => {
                // An ExternalName: the target's records follow the CNAME, as a resolver would
                // fetch them (glibc does not chase a CNAME on its own).
                let (target_reply, _) = Box::pin(self.answer(&target, qtype, class)).await;
                reply.answers.extend(target_reply.answers);
                if target_reply.rcode != ResponseCode::NoError {
                    reply.rcode = target_reply.rcode;
                }
                (reply, Source::Cluster)
            }
            Local::Forward => match self.forwarder.resolve(name, qtype, class).await {
                Ok(reply) => (reply, Source::Forward),
                Err(crate::forward::ForwardError::Busy) => {
                    (Reply::new(ResponseCode::Refused), Source::Forward)
                }
                Err(_) => (Reply::new(ResponseCode::ServFail), Source::Forward),
            },
        }
    }

    /// The request's one question, or the reply that refuses it.
    fn question(request: &Request) -> Result<&Query, Answered> {
        let rejected = |rcode| Err((Reply::new(rcode), Source::Rejected, "other"));
        if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            return rejected(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return rejected(ResponseCode::BADVERS);
        }
        match request.request_info() {
            Ok(info) => Ok(info.query.original()),
            Err(_) => rejected(ResponseCode::FormErr),
        }
    }

    /// The reply to `request` if it needs no waiting (no upstream, no ExternalName to chase):
    /// the UDP path answers these in line.
    pub fn reply_now(&self, request: &Request) -> Option<Answered> {
        let query = match Self::question(request) {
            Ok(query) => query,
            Err(refused) => return Some(refused),
        };
        let qtype = query.query_type();
        match self.local(query.name(), qtype, query.query_class()) {
            Local::Done(reply, source) => Some((reply, source, type_label(qtype))),
            Local::Chase(..) | Local::Forward => None,
        }
    }

    /// The reply to `request` as a whole: its checks, then its one question.
    pub async fn reply_to(&self, request: &Request) -> Answered {
        let query = match Self::question(request) {
            Ok(query) => query,
            Err(refused) => return refused,
        };
        let qtype = query.query_type();
        let (reply, source) = self.answer(query.name(), qtype, query.query_class()).await;
        (reply, source, type_label(qtype))
    }

    /// Counts one answered request.
    pub fn record(
        &self,
        request: &Request,
        answered: &Answered,
        rcode: ResponseCode,
        started: Instant,
    ) {
        let proto = match request.protocol() {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            _ => "other",
        };
        self.metrics.answered(
            answered.1,
            proto,
            answered.2,
            rcode.to_str(),
            started.elapsed().as_secs_f64(),
        );
    }
}

/// A reply, who gave it and the query type's metrics label.
pub type Answered = (Reply, Source, &'static str);

/// What the zone alone makes of a question.
enum Local {
    /// The reply.
    Done(Reply, Source),
    /// An ExternalName's CNAME, and its target to resolve on.
    Chase(Reply, Name),
    /// Not the cluster's: ask upstream.
    Forward,
}

/// The response's EDNS: present when the request's was, offering what the client offered
/// (at least 512, at most [`MAX_UDP_PAYLOAD`]) — UDP answers are truncated to it.
pub fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|theirs| {
        let mut ours = Edns::new();
        ours.set_max_payload(theirs.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        ours
    })
}

/// The response header for `reply` to `request`.
pub fn response_metadata(request: &Request, reply: &Reply) -> Metadata {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = reply.rcode;
    metadata.authoritative = reply.authoritative;
    metadata.recursion_available = true;
    metadata
}

/// The response to `request` that carries `reply`, ready to be written.
fn response<'q>(
    request: &'q Request,
    reply: &'q Reply,
    metadata: Metadata,
    edns: Option<&'q Edns>,
) -> MessageResponse<'q, 'q, Iter<'q, Record>, Iter<'q, Record>, Empty<&'q Record>, Iter<'q, Record>>
{
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    builder.build(
        metadata,
        &reply.answers,
        &reply.authorities,
        std::iter::empty(),
        &reply.additionals,
    )
}

/// `reply` to `request` over UDP as bytes, truncated (TC set) to what the client accepts:
/// 512 bytes, or its EDNS size.
pub fn udp_response(request: &Request, reply: &Reply) -> Vec<u8> {
    let edns = response_edns(request);
    let metadata = response_metadata(request, reply);
    let response = response(request, reply, metadata, edns.as_ref());
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(edns.as_ref().map_or(512, Edns::max_payload));
    if response.destructive_emit(&mut encoder).is_ok() {
        return bytes;
    }
    // Not even a truncated answer could be written: SERVFAIL, as hickory does.
    let mut failed = metadata;
    failed.response_code = ResponseCode::ServFail;
    let mut message = Message::new(failed.id, MessageType::Response, failed.op_code);
    message.metadata = failed;
    message.to_vec().unwrap_or_default()
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let answered = self.reply_to(request).await;
        let reply = &answered.0;
        let metadata = response_metadata(request, reply);
        let edns = response_edns(request);
        let response = response(request, reply, metadata, edns.as_ref());
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(error = %err, src = %request.src(), "cannot send a response");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        };
        self.record(request, &answered, info.response_code, started);
        info
    }
}
