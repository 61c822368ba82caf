//! A response's content before it is written: the code, whether it is authoritative, and the
//! three record sections. The zone, the forwarder and the cache all speak it.

use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::Record;

/// What to answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The response code.
    pub rcode: ResponseCode,
    /// Whether this server owns the name (the AA bit).
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (a negative answer's SOA).
    pub authorities: Vec<Record>,
    /// The additional section (without EDNS, which each hop writes for itself).
    pub additionals: Vec<Record>,
}

impl Reply {
    /// An answer with `rcode` and no records.
    pub fn new(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    /// An upstream server's response, as this server will pass it on.
    pub fn from_upstream(message: Message) -> Self {
        Reply {
            rcode: message.metadata.response_code,
            authoritative: false,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        }
    }
}
