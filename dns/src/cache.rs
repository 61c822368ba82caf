//! The forwarder's cache: upstream answers kept for their TTL, as CoreDNS's `cache` plugin
//! keeps them.
//!
//! Bounded three ways, so that a flood of unique names (the classic NXDOMAIN attack) cannot
//! grow it: by entries (when full, expired entries go first, then the eighth that expire
//! soonest, which keeps eviction amortised O(1) per insert), by time (a positive answer lives
//! at most `max_ttl`, a negative one — NXDOMAIN or NODATA, timed by the SOA's minimum as RFC
//! 2308 says — at most `max_negative_ttl`), and by content (errors such as SERVFAIL are never
//! kept, nor answers with a TTL of 0). A hit is served with its TTLs lowered by its age.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

use crate::reply::Reply;

/// What a cached answer is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The name, lower case.
    pub name: LowerName,
    /// The type asked.
    pub qtype: RecordType,
    /// The class asked.
    pub class: DNSClass,
}

/// How long answers may be kept, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// At most this many answers.
    pub capacity: usize,
    /// A positive answer at most this long (seconds).
    pub max_ttl: u32,
    /// A negative answer at most this long (seconds).
    pub max_negative_ttl: u32,
}

impl Default for CacheLimits {
    /// CoreDNS's `cache` defaults: 9,984 entries, 3,600 s, 1,800 s.
    fn default() -> Self {
        CacheLimits {
            capacity: 10_000,
            max_ttl: 3600,
            max_negative_ttl: 1800,
        }
    }
}

#[derive(Debug)]
struct Entry {
    reply: Reply,
    stored: Instant,
    expires: Instant,
}

/// Upstream answers by question.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<CacheKey, Entry>,
    limits: CacheLimits,
}

/// How long `reply` may be kept, in seconds; `None` when it must not be.
fn lifetime(reply: &Reply, limits: &CacheLimits) -> Option<u32> {
    let negative = || {
        reply.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum).min(limits.max_negative_ttl)),
            _ => None,
        })
    };
    let ttl = match reply.rcode {
        ResponseCode::NoError if !reply.answers.is_empty() => reply
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .map(|ttl| ttl.min(limits.max_ttl)),
        ResponseCode::NoError | ResponseCode::NXDomain => negative(),
        _ => None,
    }?;
    (ttl > 0).then_some(ttl)
}

/// `records` with `age` seconds taken off each TTL.
fn aged(records: &[Record], age: u32) -> Vec<Record> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.saturating_sub(age);
            r
        })
        .collect()
}

impl Cache {
    /// An empty cache.
    pub fn new(limits: CacheLimits) -> Self {
        Cache {
            entries: HashMap::new(),
            limits,
        }
    }

    /// How many answers it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The answer for `key` as of `now`, its TTLs lowered by its age; an expired one is dropped.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Reply> {
        let entry = self.entries.get(key)?;
        if entry.expires <= now {
            self.entries.remove(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let reply = &entry.reply;
        Some(Reply {
            rcode: reply.rcode,
            authoritative: false,
            answers: aged(&reply.answers, age),
            authorities: aged(&reply.authorities, age),
            additionals: aged(&reply.additionals, age),
        })
    }

    /// Keeps `reply` for `key` if it may be kept; returns whether it was.
    pub fn insert(&mut self, key: CacheKey, reply: &Reply, now: Instant) -> bool {
        let Some(ttl) = lifetime(reply, &self.limits) else {
            return false;
        };
        if self.limits.capacity == 0 {
            return false;
        }
        if self.entries.len() >= self.limits.capacity && !self.entries.contains_key(&key) {
            self.evict(now);
        }
        let entry = Entry {
            reply: Reply {
                authoritative: false,
                ..reply.clone()
            },
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        };
        self.entries.insert(key, entry);
        true
    }

    /// Makes room: the expired go, and if that is not enough, the eighth expiring soonest.
    fn evict(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        if self.entries.len() < self.limits.capacity {
            return;
        }
        let mut expiries: Vec<Instant> = self.entries.values().map(|e| e.expires).collect();
        let cut = (expiries.len() / 8).max(1);
        let (_, threshold, _) = expiries.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut removed = 0;
        self.entries.retain(|_, e| {
            let drop = e.expires <= threshold && removed < cut;
            removed += usize::from(drop);
            !drop
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::rdata::{A, SOA};
    use hickory_server::proto::rr::{Name, RData};

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: LowerName::new(&Name::from_ascii(name).unwrap()),
            qtype: RecordType::A,
            class: DNSClass::IN,
        }
    }

    fn answer(ttl: u32) -> Reply {
        let record = Record::from_rdata(
            Name::from_ascii("www.example.com.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        );
        Reply {
            answers: vec![record],
            ..Reply::new(ResponseCode::NoError)
        }
    }

    fn negative(rcode: ResponseCode, ttl: u32, minimum: u32) -> Reply {
        let name = Name::from_ascii("example.com.").unwrap();
        let soa = SOA::new(name.clone(), name.clone(), 1, 1, 1, 1, minimum);
        Reply {
            authorities: vec![Record::from_rdata(name, ttl, RData::SOA(soa))],
            ..Reply::new(rcode)
        }
    }

    fn limits(capacity: usize) -> CacheLimits {
        CacheLimits {
            capacity,
            ..CacheLimits::default()
        }
    }

    #[test]
    fn an_answer_is_served_with_its_age_taken_off_until_it_expires() {
        let mut cache = Cache::new(limits(10));
        let now = Instant::now();
        assert!(cache.insert(key("www.example.com."), &answer(30), now));
        let hit = cache
            .get(&key("WWW.example.com."), now + Duration::from_secs(10))
            .unwrap();
        assert_eq!(hit.answers[0].ttl, 20);
        assert!(
            cache
                .get(&key("www.example.com."), now + Duration::from_secs(30))
                .is_none()
        );
        assert!(cache.is_empty(), "an expired entry is dropped when met");
    }

    #[test]
    fn ttls_are_capped_and_negative_answers_live_by_the_soa_minimum() {
        let mut cache = Cache::new(CacheLimits {
            capacity: 10,
            max_ttl: 60,
            max_negative_ttl: 10,
        });
        let now = Instant::now();
        cache.insert(key("a."), &answer(86_400), now);
        assert!(
            cache
                .get(&key("a."), now + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            cache
                .get(&key("a."), now + Duration::from_secs(60))
                .is_none()
        );
        // NXDOMAIN: the smaller of the SOA's TTL and minimum (RFC 2308), capped.
        cache.insert(key("b."), &negative(ResponseCode::NXDomain, 300, 5), now);
        assert!(
            cache
                .get(&key("b."), now + Duration::from_secs(4))
                .is_some()
        );
        assert!(
            cache
                .get(&key("b."), now + Duration::from_secs(5))
                .is_none()
        );
        cache.insert(key("c."), &negative(ResponseCode::NoError, 300, 300), now);
        assert!(
            cache
                .get(&key("c."), now + Duration::from_secs(10))
                .is_none()
        );
    }

    #[test]
    fn errors_zero_ttls_and_soa_less_negatives_are_not_kept() {
        let mut cache = Cache::new(limits(10));
        let now = Instant::now();
        assert!(!cache.insert(key("a."), &Reply::new(ResponseCode::ServFail), now));
        assert!(!cache.insert(key("b."), &answer(0), now));
        assert!(!cache.insert(key("c."), &Reply::new(ResponseCode::NXDomain), now));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_flood_of_names_never_grows_it_past_its_capacity() {
        let mut cache = Cache::new(limits(64));
        let now = Instant::now();
        for i in 0..10_000u32 {
            let ttl = 1 + i % 100;
            let at = now + Duration::from_millis(u64::from(i));
            cache.insert(
                key(&format!("n{i}.example.")),
                &negative(ResponseCode::NXDomain, ttl, ttl),
                at,
            );
            assert!(cache.len() <= 64);
        }
        // The newest is there: eviction took others.
        assert!(
            cache
                .get(&key("n9999.example."), now + Duration::from_secs(10))
                .is_some()
        );
    }
}
