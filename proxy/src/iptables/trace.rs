//! A packet tracer over a parsed ruleset: where would the kernel send this packet?
//!
//! kube-proxy's `tracePacket` idea: golden text shows *what* we wrote, a trace shows what it
//! *does* — for a source, destination and protocol: the DNAT target(s) with the probability of
//! each, whether the packet is masqueraded, and whether it is accepted, rejected or dropped. It
//! understands exactly the matches and targets skiff writes and fails on anything else, so a new
//! kind of rule cannot slip past the tests untraced. `skiff-proxy explain` runs it over the
//! node's `iptables-save`.
//!
//! Simplifications, all on the safe side for our rules: every connection is NEW; a probabilistic
//! DNAT splits the trace (later rules see the remaining probability); marks are shared by all
//! branches; filter runs once, on the first branch's destination.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

use super::render::{Ruleset, hooks};
use crate::model::Protocol;
use skiff_iptables::{Table, jumps_to, split_words};

/// Why a trace could not be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A rule uses a match or target the tracer does not know.
    #[error("cannot trace rule in {chain}: {rule} ({why})")]
    Unsupported {
        /// The chain.
        chain: String,
        /// The rule.
        rule: String,
        /// What was not understood.
        why: String,
    },
    /// A jump to a chain that does not exist.
    #[error("rule in {chain} jumps to missing chain {target}")]
    MissingChain {
        /// The chain holding the rule.
        chain: String,
        /// The missing chain.
        target: String,
    },
    /// Chains jump into each other too deep (a loop).
    #[error("chains nest deeper than 32 levels at {0}")]
    TooDeep(String),
}

/// A new connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub dport: u16,
    /// Sent by a process on the node itself (nat OUTPUT) rather than arriving (PREROUTING)?
    pub from_node: bool,
}

/// What happens to the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It goes on (to an endpoint or its original destination).
    Accept,
    /// It is rejected (the sender hears at once).
    Reject,
    /// It is dropped silently.
    Drop,
}

/// One possible DNAT outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The endpoint.
    pub endpoint: SocketAddrV4,
    /// The chance of this outcome.
    pub probability: f64,
    /// The affinity list that would record the client, if any.
    pub records: Option<String>,
}

/// The outcome of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// DNAT outcomes; empty when the packet keeps its destination.
    pub choices: Vec<Choice>,
    /// Is the source rewritten (masquerade)?
    pub masquerade: bool,
    /// Accepted, rejected or dropped.
    pub verdict: Verdict,
    /// Chains entered, in order (`table/chain`).
    pub path: Vec<String>,
    /// Comments of the rules that matched, in order.
    pub comments: Vec<String>,
}

impl Trace {
    /// The endpoints the packet may go to.
    pub fn endpoints(&self) -> Vec<SocketAddrV4> {
        self.choices.iter().map(|c| c.endpoint).collect()
    }
}

type Rule = Vec<String>;

/// Parsed tables: table → chain → rules (as words).
#[derive(Clone, Debug, Default)]
pub struct Tables {
    tables: BTreeMap<Table, BTreeMap<String, Vec<Rule>>>,
    /// Addresses `-m addrtype LOCAL` matches (127.0.0.0/8 always does).
    pub local_addrs: BTreeSet<Ipv4Addr>,
    /// Affinity records: (list name, client address).
    pub recent: BTreeSet<(String, Ipv4Addr)>,
}

impl Tables {
    /// Parses restore or save text (any number of `*table` sections).
    pub fn parse(text: &str) -> Self {
        let mut tables = Tables::default();
        for (table, chains) in skiff_iptables::Tables::parse(text).iter() {
            let parsed = tables.tables.entry(table).or_default();
            for (name, rules) in chains {
                parsed.insert(name.clone(), rules.iter().map(|r| split_words(r)).collect());
            }
        }
        tables
    }

    /// Our ruleset with its hooks in otherwise empty built-in chains.
    pub fn from_ruleset(ruleset: &Ruleset) -> Self {
        let mut tables = Tables::default();
        for (table, chains) in &ruleset.tables {
            let parsed = tables.tables.entry(*table).or_default();
            for (name, rules) in chains {
                parsed.insert(name.clone(), rules.iter().map(|r| split_words(r)).collect());
            }
        }
        for (table, chain, rule) in hooks() {
            let parsed = tables.tables.entry(table).or_default();
            parsed
                .entry(chain.to_owned())
                .or_default()
                .push(split_words(&rule));
        }
        tables
    }

    /// Marks `addrs` as the node's own (for `-m addrtype`).
    pub fn with_local(mut self, addrs: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        self.local_addrs.extend(addrs);
        self
    }

    fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip.is_loopback() || self.local_addrs.contains(&ip)
    }

    /// Traces `packet` through nat, filter and nat POSTROUTING.
    pub fn trace(&self, packet: &Packet) -> Result<Trace, TraceError> {
        let mut state = State {
            packet: *packet,
            mark: 0,
            reach: 1.0,
            dnat: false,
            trace: Trace {
                choices: Vec::new(),
                masquerade: false,
                verdict: Verdict::Accept,
                path: Vec::new(),
                comments: Vec::new(),
            },
        };
        let nat_hook = if packet.from_node {
            "OUTPUT"
        } else {
            "PREROUTING"
        };
        self.walk(Table::Nat, nat_hook, &mut state, 0)?;
        state.dnat = !state.trace.choices.is_empty();
        if let Some(first) = state.trace.choices.first() {
            state.packet.dst = *first.endpoint.ip();
            state.packet.dport = first.endpoint.port();
        }
        let filter_hook = if packet.from_node {
            "OUTPUT"
        } else if self.is_local(state.packet.dst) {
            "INPUT"
        } else {
            "FORWARD"
        };
        self.walk(Table::Filter, filter_hook, &mut state, 0)?;
        let leaves = packet.from_node || filter_hook == "FORWARD" || state.dnat;
        if state.trace.verdict == Verdict::Accept && leaves && !self.is_local(state.packet.dst) {
            self.walk(Table::Nat, "POSTROUTING", &mut state, 0)?;
        }
        Ok(state.trace)
    }

    fn walk(
        &self,
        table: Table,
        chain: &str,
        state: &mut State,
        depth: usize,
    ) -> Result<Flow, TraceError> {
        if depth > 32 {
            return Err(TraceError::TooDeep(chain.to_owned()));
        }
        let Some(rules) = self.tables.get(&table).and_then(|t| t.get(chain)) else {
            return Ok(Flow::Next);
        };
        state.trace.path.push(format!("{}/{chain}", table.as_str()));
        for rule in rules {
            let unsupported = |why: &str| TraceError::Unsupported {
                chain: chain.to_owned(),
                rule: rule.join(" "),
                why: why.to_owned(),
            };
            let Some(odds) = self.matches(rule, state).map_err(|w| unsupported(&w))? else {
                continue;
            };
            if let Some(comment) = option_value(rule, "--comment") {
                state.trace.comments.push(comment.to_owned());
            }
            let target = jumps_to(&rule.join(" ")).unwrap_or_default().to_owned();
            match target.as_str() {
                "" => {}
                "RETURN" => return Ok(Flow::Next),
                "ACCEPT" => return Ok(Flow::Stop),
                "DROP" | "REJECT" => {
                    state.trace.verdict = if target == "DROP" {
                        Verdict::Drop
                    } else {
                        Verdict::Reject
                    };
                    return Ok(Flow::Stop);
                }
                "MARK" => {
                    let bits = |opt| option_value(rule, opt).and_then(parse_hex);
                    if let Some(or) = bits("--or-mark") {
                        state.mark |= or;
                    } else if let Some(xor) = bits("--xor-mark") {
                        state.mark ^= xor;
                    } else if let Some((value, mask)) =
                        option_value(rule, "--set-xmark").and_then(|v| v.split_once('/'))
                    {
                        // iptables-save spells --or-mark V as V/V and --xor-mark V as V/0x0.
                        let (value, mask) = (parse_hex(value), parse_hex(mask));
                        let (Some(value), Some(mask)) = (value, mask) else {
                            return Err(unsupported("bad --set-xmark"));
                        };
                        state.mark = (state.mark & !mask) ^ value;
                    } else {
                        return Err(unsupported(
                            "MARK without --or-mark, --xor-mark or --set-xmark",
                        ));
                    }
                }
                "MASQUERADE" => {
                    state.trace.masquerade = true;
                    return Ok(Flow::Stop);
                }
                "DNAT" => {
                    let to = option_value(rule, "--to-destination")
                        .and_then(|t| t.parse::<SocketAddrV4>().ok())
                        .ok_or_else(|| unsupported("DNAT without --to-destination ip:port"))?;
                    let records = recent_set(rule);
                    state.trace.choices.push(Choice {
                        endpoint: to,
                        probability: state.reach * odds,
                        records,
                    });
                    state.reach *= 1.0 - odds;
                    if state.reach <= f64::EPSILON {
                        return Ok(Flow::Stop);
                    }
                }
                chain_name => {
                    if odds < 1.0 {
                        return Err(unsupported("a probabilistic jump"));
                    }
                    let exists = self
                        .tables
                        .get(&table)
                        .is_some_and(|t| t.contains_key(chain_name));
                    if !exists {
                        return Err(TraceError::MissingChain {
                            chain: chain.to_owned(),
                            target: chain_name.to_owned(),
                        });
                    }
                    if self.walk(table, chain_name, state, depth + 1)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
            }
        }
        Ok(Flow::Next)
    }

    /// `None`: no match; `Some(p)`: matches with probability `p`.
    fn matches(&self, rule: &[String], state: &State) -> Result<Option<f64>, String> {
        let p = &state.packet;
        let mut odds = 1.0;
        let mut negate = false;
        let mut i = 0;
        let arg = |i: usize| rule.get(i + 1).map(String::as_str).ok_or("missing value");
        while i < rule.len() {
            let word = rule[i].as_str();
            let ok = match word {
                "!" => {
                    negate = true;
                    i += 1;
                    continue;
                }
                "-s" | "-d" => {
                    let net: Ipv4Net = parse_net(arg(i)?)?;
                    net.contains(if word == "-s" { &p.src } else { &p.dst })
                }
                "-p" => arg(i)? == p.protocol.as_str(),
                "--dport" => arg(i)?.parse::<u16>().map_err(|e| e.to_string())? == p.dport,
                "-m" => match arg(i)? {
                    "tcp" | "udp" | "sctp" | "comment" | "addrtype" | "mark" | "statistic"
                    | "recent" | "conntrack" => true,
                    other => return Err(format!("match module {other}")),
                },
                "--comment" | "--mode" | "--name" | "--mask" | "--seconds" => true,
                "--rsource" | "--reap" | "--set" => {
                    i += 1;
                    negate = false;
                    continue;
                }
                "--update" | "--rcheck" => {
                    let list = option_value(rule, "--name").ok_or("recent without --name")?;
                    let hit = state_recent(self, list, p.src);
                    i += 1;
                    if !hit {
                        return Ok(None);
                    }
                    continue;
                }
                "--dst-type" | "--src-type" => {
                    if arg(i)? != "LOCAL" {
                        return Err(format!("addrtype {}", arg(i)?));
                    }
                    self.is_local(if word == "--dst-type" { p.dst } else { p.src })
                }
                "--mark" => {
                    let (value, mask) = arg(i)?.split_once('/').ok_or("mark without mask")?;
                    let (value, mask) = (
                        parse_hex(value).ok_or("bad mark")?,
                        parse_hex(mask).ok_or("bad mask")?,
                    );
                    state.mark & mask == value
                }
                "--probability" => {
                    odds = arg(i)?.parse::<f64>().map_err(|e| e.to_string())?;
                    true
                }
                "--ctstate" => {
                    let states: Vec<&str> = arg(i)?.split(',').collect();
                    states.contains(&"NEW") || (state.dnat && states.contains(&"DNAT"))
                }
                "-j" => break,
                other => return Err(format!("option {other}")),
            };
            if ok == negate {
                return Ok(None);
            }
            negate = false;
            i += 2;
        }
        Ok(Some(odds))
    }
}

fn state_recent(tables: &Tables, list: &str, src: Ipv4Addr) -> bool {
    tables.recent.contains(&(list.to_owned(), src))
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Next,
    Stop,
}

#[derive(Debug)]
struct State {
    packet: Packet,
    mark: u32,
    reach: f64,
    dnat: bool,
    trace: Trace,
}

fn option_value<'a>(rule: &'a [String], option: &str) -> Option<&'a str> {
    let i = rule.iter().position(|w| w == option)?;
    rule.get(i + 1).map(String::as_str)
}

fn recent_set(rule: &[String]) -> Option<String> {
    rule.iter()
        .any(|w| w == "--set")
        .then(|| option_value(rule, "--name").map(str::to_owned))?
}

fn parse_hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text.strip_prefix("0x").unwrap_or(text), 16).ok()
}

fn parse_net(text: &str) -> Result<Ipv4Net, String> {
    if text.contains('/') {
        text.parse()
            .map_err(|e: ipnet::AddrParseError| e.to_string())
    } else {
        let ip: Ipv4Addr = text
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?;
        Ok(Ipv4Net::from(ip))
    }
}
