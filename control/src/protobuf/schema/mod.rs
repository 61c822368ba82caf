//! Kubernetes messages described as data: for each message, its fields' numbers (from the
//! `generated.proto` files), JSON names (from the Go types' `json` tags, which the `.proto`
//! field names repeat) and how Go's `encoding/json` would write them.
//!
//! The "how" matters because protobuf and JSON disagree about absence. Go's generated marshal
//! code writes every non-pointer field, so an empty `workingDir` arrives as `""` on the wire,
//! while the JSON that kubectl would have sent omits it (`omitempty`). Each field therefore says
//! what its Go field is: a value with `omitempty` ([`Emit::NonZero`]), a value without it or a
//! struct ([`Emit::Always`]), a pointer ([`Emit::Present`]), or a slice or map
//! ([`Emit::NonEmpty`]).

use std::fmt;

mod apps;
mod container;
mod meta;
mod objects;
mod pod;
mod probe;

pub use apps::*;
pub use container::*;
pub use meta::*;
pub use objects::*;
pub use pod::*;
pub use probe::*;

/// One protobuf message: its Go type name and its fields.
pub struct MessageDesc {
    /// The Go type name, used in error messages (`PodSpec`).
    pub name: &'static str,
    /// Every field the `.proto` file declares, in declaration (and Go struct) order.
    pub fields: &'static [FieldDesc],
}

impl fmt::Debug for MessageDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageDesc")
            .field("name", &self.name)
            .field("fields", &self.fields.len())
            .finish()
    }
}

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct FieldDesc {
    /// The protobuf field number.
    pub number: u32,
    /// The JSON name (empty for an inlined struct).
    pub json: &'static str,
    /// What the field holds.
    pub kind: Kind,
    /// When Go's JSON encoder writes it.
    pub emit: Emit,
}

/// What a field holds, and so how its wire bytes become JSON.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `string`: a JSON string (invalid UTF-8 becomes U+FFFD, as in Go).
    String,
    /// `bool`: a JSON boolean.
    Bool,
    /// `int32`: a JSON number.
    Int32,
    /// `int64`: a JSON number.
    Int64,
    /// `bytes`: a base64 JSON string, as Go writes `[]byte`.
    Bytes,
    /// A nested message: a JSON object.
    Message(&'static MessageDesc),
    /// An embedded struct (`json:",inline"`): its fields join the parent's object.
    Inline(&'static MessageDesc),
    /// `metav1.Time {seconds, nanos}`: RFC 3339 with whole seconds; the zero time is omitted.
    Time,
    /// `metav1.MicroTime {seconds, nanos}`: RFC 3339 with six fractional digits.
    MicroTime,
    /// `metav1.Duration {duration}` (nanoseconds): a Go duration string such as `1m0s`.
    Duration,
    /// `resource.Quantity {string}`: the quantity's string.
    Quantity,
    /// `intstr.IntOrString {type, intVal, strVal}`: a JSON number or string.
    IntOrString,
    /// `runtime.RawExtension` or `metav1.FieldsV1` `{raw}`: the embedded JSON itself.
    RawJson,
    /// `map<string, V>`: a JSON object.
    Map(MapValue),
    /// A field this server cannot decode yet; receiving it is an error that asks for JSON.
    Unsupported,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::String => f.write_str("String"),
            Kind::Bool => f.write_str("Bool"),
            Kind::Int32 => f.write_str("Int32"),
            Kind::Int64 => f.write_str("Int64"),
            Kind::Bytes => f.write_str("Bytes"),
            Kind::Message(desc) => write!(f, "Message({})", desc.name),
            Kind::Inline(desc) => write!(f, "Inline({})", desc.name),
            Kind::Time => f.write_str("Time"),
            Kind::MicroTime => f.write_str("MicroTime"),
            Kind::Duration => f.write_str("Duration"),
            Kind::Quantity => f.write_str("Quantity"),
            Kind::IntOrString => f.write_str("IntOrString"),
            Kind::RawJson => f.write_str("RawJson"),
            Kind::Map(value) => write!(f, "Map({value:?})"),
            Kind::Unsupported => f.write_str("Unsupported"),
        }
    }
}

/// The value type of a `map<string, V>` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapValue {
    /// `map<string, string>` (labels, selectors, `data`).
    String,
    /// `map<string, bytes>` (Secret `data`): base64 strings.
    Bytes,
    /// `map<string, Quantity>` (`ResourceList`).
    Quantity,
}

/// When Go's JSON encoder writes a field, given the Go field's type and `json` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// A value field with `omitempty`: written unless it is `""`, `0` or `false`.
    NonZero,
    /// A value field without `omitempty`, or a struct: always written, as its zero value when
    /// absent from the wire.
    Always,
    /// A pointer field: written when present on the wire, whatever its value.
    Present,
    /// A slice or map: written when it has elements (Go would write `null` for an empty one
    /// without `omitempty`, which every reader treats as absent).
    NonEmpty,
}

/// A message described by its name and fields.
pub(crate) const fn message(name: &'static str, fields: &'static [FieldDesc]) -> MessageDesc {
    MessageDesc { name, fields }
}

/// A value field with `omitempty`.
pub(crate) const fn opt(number: u32, json: &'static str, kind: Kind) -> FieldDesc {
    FieldDesc {
        number,
        json,
        kind,
        emit: Emit::NonZero,
    }
}

/// A value field without `omitempty`, or a struct.
pub(crate) const fn req(number: u32, json: &'static str, kind: Kind) -> FieldDesc {
    FieldDesc {
        number,
        json,
        kind,
        emit: Emit::Always,
    }
}

/// A pointer field.
pub(crate) const fn ptr(number: u32, json: &'static str, kind: Kind) -> FieldDesc {
    FieldDesc {
        number,
        json,
        kind,
        emit: Emit::Present,
    }
}

/// A repeated field (a Go slice).
pub(crate) const fn rep(number: u32, json: &'static str, kind: Kind) -> FieldDesc {
    FieldDesc {
        number,
        json,
        kind,
        emit: Emit::NonEmpty,
    }
}

/// A `map<string, V>` field.
pub(crate) const fn map(number: u32, json: &'static str, value: MapValue) -> FieldDesc {
    FieldDesc {
        number,
        json,
        kind: Kind::Map(value),
        emit: Emit::NonEmpty,
    }
}

/// An embedded struct whose fields are inlined into the parent's JSON object.
pub(crate) const fn inline(number: u32, desc: &'static MessageDesc) -> FieldDesc {
    FieldDesc {
        number,
        json: "",
        kind: Kind::Inline(desc),
        emit: Emit::Always,
    }
}

/// A field that exists in Kubernetes but that this server does not decode from protobuf.
pub(crate) const fn unsupported(number: u32, json: &'static str) -> FieldDesc {
    FieldDesc {
        number,
        json,
        kind: Kind::Unsupported,
        emit: Emit::Present,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every top-level message described here, served kinds' or not yet.
    pub(crate) const ROOTS: [&MessageDesc; 8] = [
        &NAMESPACE,
        &SERVICE,
        &POD,
        &CONFIG_MAP,
        &SECRET,
        &SERVICE_ACCOUNT,
        &DEPLOYMENT,
        &REPLICA_SET,
    ];

    /// Walks every message reachable from the roots, calling `check` once per message.
    fn walk(
        desc: &'static MessageDesc,
        seen: &mut Vec<&'static str>,
        check: &mut dyn FnMut(&MessageDesc),
    ) {
        if seen.contains(&desc.name) {
            return;
        }
        seen.push(desc.name);
        check(desc);
        for field in desc.fields {
            if let Kind::Message(child) | Kind::Inline(child) = field.kind {
                walk(child, seen, check);
            }
        }
    }

    #[test]
    fn every_message_has_unique_numbers_and_names() {
        let mut seen = Vec::new();
        for root in ROOTS {
            walk(root, &mut seen, &mut |desc| {
                for (i, a) in desc.fields.iter().enumerate() {
                    for b in &desc.fields[i + 1..] {
                        assert_ne!(a.number, b.number, "{} repeats a field number", desc.name);
                        if !a.json.is_empty() {
                            assert_ne!(a.json, b.json, "{} repeats a JSON name", desc.name);
                        }
                    }
                    assert!(a.number > 0);
                    let inline = matches!(a.kind, Kind::Inline(_));
                    assert_eq!(
                        a.json.is_empty(),
                        inline,
                        "{} field {}",
                        desc.name,
                        a.number
                    );
                    if inline {
                        assert_eq!(a.emit, Emit::Always, "{} field {}", desc.name, a.number);
                    }
                }
            });
        }
        assert!(seen.len() > 80, "only {} messages reachable", seen.len());
    }
}
