//! Every request's path: checked, then answered from the cluster zone or forwarded, then
//! written back with the client's EDNS limits (hickory truncates UDP answers that do not fit
//! and sets TC, and the client asks again over TCP).
//!
//! What is not a plain query is refused or rejected here, never passed on: another opcode is
//! NOTIMP, more or fewer than one question FORMERR, an EDNS version above 0 BADVERS, a class
//! other than IN or a zone transfer REFUSED. Messages that do not parse at all are answered
//! FORMERR (or dropped when not even the header parses) by hickory before they reach us.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

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

    /// The answer to one question, and who gave it.
    pub async fn answer(&self, name: &Name, qtype: RecordType, class: DNSClass) -> (Reply, Source) {
        if class != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return (Reply::new(ResponseCode::Refused), Source::Rejected);
        }
        let local = {
            let index = self.index();
            let answer = if self.zone.contains(name) {
                Some(self.zone.lookup(&index, name, qtype))
            } else {
                self.zone.lookup_reverse(&index, name, qtype)
            };
            answer.map(|answer| {
                let target = match &answer {
                    ZoneAnswer::Alias { target, .. } => Some(target.clone()),
                    _ => None,
                };
                (self.zone_reply(answer, &index), target)
            })
        };
        match local {
            Some((mut reply, Some(target))) => {
                // An ExternalName: the target's records follow the CNAME, as a resolver would
                // fetch them (glibc does not chase a CNAME on its own).
                let (target_reply, _) = Box::pin(self.answer(&target, qtype, class)).await;
                reply.answers.extend(target_reply.answers);
                if target_reply.rcode != ResponseCode::NoError {
                    reply.rcode = target_reply.rcode;
                }
                (reply, Source::Cluster)
            }
            Some((reply, _)) => (reply, Source::Cluster),
            None => match self.forwarder.resolve(name, qtype, class).await {
                Ok(reply) => (reply, Source::Forward),
                Err(crate::forward::ForwardError::Busy) => {
                    (Reply::new(ResponseCode::Refused), Source::Forward)
                }
                Err(_) => (Reply::new(ResponseCode::ServFail), Source::Forward),
            },
        }
    }

    /// The reply to `request` as a whole: its checks, then its one question.
    async fn reply_to(&self, request: &Request) -> (Reply, Source, &'static str) {
        if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            return (Reply::new(ResponseCode::NotImp), Source::Rejected, "other");
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (Reply::new(ResponseCode::BADVERS), Source::Rejected, "other");
        }
        let Ok(info) = request.request_info() else {
            return (Reply::new(ResponseCode::FormErr), Source::Rejected, "other");
        };
        let query = info.query.original();
        let qtype = query.query_type();
        let (reply, source) = self.answer(query.name(), qtype, query.query_class()).await;
        (reply, source, type_label(qtype))
    }
}

/// The response's EDNS: present when the request's was, offering what the client offered
/// (at least 512, at most [`MAX_UDP_PAYLOAD`]) — hickory truncates UDP answers to it.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|theirs| {
        let mut ours = Edns::new();
        ours.set_max_payload(theirs.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        ours
    })
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let (reply, source, qtype) = self.reply_to(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            &reply.answers,
            &reply.authorities,
            std::iter::empty(),
            &reply.additionals,
        );
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
        let proto = request.protocol().to_string().to_ascii_lowercase();
        self.metrics.answered(
            source,
            &proto,
            qtype,
            info.response_code.to_str(),
            started.elapsed().as_secs_f64(),
        );
        info
    }
}
