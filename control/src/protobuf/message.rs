//! Turns one message's wire bytes into the JSON object Go would write for the same struct,
//! guided by its [`MessageDesc`].
//!
//! Two passes per message: first every wire field lands in its slot (later scalars replace
//! earlier ones, repeated fields append, and the pieces of a nested message are kept so that a
//! message sent in parts is merged, as protobuf requires); then the slots are written out in
//! declaration order under Go's `encoding/json` rules (see [`Emit`]). Anything the schema does
//! not name is an error, never dropped: a client must not believe it stored a field we lost.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::format;
use super::schema::{Emit, FieldDesc, Kind, MapValue, MessageDesc};
use super::wire::{Reader, WireValue};
use super::{MAX_DEPTH, ProtobufError};

/// Where a value sits, for error messages: the message and the field within it.
#[derive(Debug, Clone, Copy)]
struct At {
    message: &'static str,
    field: u64,
}

impl At {
    fn wrong_wire_type(self, value: &WireValue<'_>, expected: &'static str) -> ProtobufError {
        ProtobufError::WrongWireType {
            message: self.message,
            field: self.field,
            found: value.wire_name(),
            expected,
        }
    }

    fn invalid(self, reason: String) -> ProtobufError {
        ProtobufError::InvalidValue {
            message: self.message,
            field: self.field,
            reason,
        }
    }

    fn varint(self, value: WireValue<'_>) -> Result<u64, ProtobufError> {
        match value {
            WireValue::Varint(v) => Ok(v),
            other => Err(self.wrong_wire_type(&other, "varint")),
        }
    }

    fn bytes<'a>(self, value: WireValue<'a>) -> Result<&'a [u8], ProtobufError> {
        match value {
            WireValue::Bytes(b) => Ok(b),
            other => Err(self.wrong_wire_type(&other, "length-delimited")),
        }
    }
}

/// What has arrived for one field so far.
enum Slot<'a> {
    Absent,
    /// A scalar; a later occurrence replaces it.
    Value(Value),
    /// The pieces of a singular message, merged by decoding them as one.
    Chunks(Vec<&'a [u8]>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

impl<'a> Slot<'a> {
    fn list(&mut self) -> &mut Vec<Value> {
        if !matches!(self, Slot::List(_)) {
            *self = Slot::List(Vec::new());
        }
        match self {
            Slot::List(list) => list,
            _ => unreachable!("just set to a list"),
        }
    }

    fn map(&mut self) -> &mut Map<String, Value> {
        if !matches!(self, Slot::Map(_)) {
            *self = Slot::Map(Map::new());
        }
        match self {
            Slot::Map(map) => map,
            _ => unreachable!("just set to a map"),
        }
    }

    fn chunks(&mut self) -> &mut Vec<&'a [u8]> {
        if !matches!(self, Slot::Chunks(_)) {
            *self = Slot::Chunks(Vec::new());
        }
        match self {
            Slot::Chunks(chunks) => chunks,
            _ => unreachable!("just set to chunks"),
        }
    }
}

/// The JSON object for `bytes`, a `desc` message found `depth` messages deep.
pub(crate) fn decode_message(
    desc: &'static MessageDesc,
    bytes: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep { message: desc.name });
    }
    let mut slots: Vec<Slot<'_>> = desc.fields.iter().map(|_| Slot::Absent).collect();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = next(&mut reader, desc.name)? {
        let Some(index) = desc
            .fields
            .iter()
            .position(|f| u64::from(f.number) == number)
        else {
            return Err(ProtobufError::UnsupportedField {
                message: desc.name,
                field: number,
                name: None,
            });
        };
        let at = At {
            message: desc.name,
            field: number,
        };
        read_field(at, &desc.fields[index], value, &mut slots[index], depth)?;
    }
    let mut out = Map::new();
    for (field, slot) in desc.fields.iter().zip(slots) {
        let at = At {
            message: desc.name,
            field: u64::from(field.number),
        };
        write_field(at, field, slot, depth, &mut out)?;
    }
    Ok(out)
}

fn next<'a>(
    reader: &mut Reader<'a>,
    message: &'static str,
) -> Result<Option<(u64, WireValue<'a>)>, ProtobufError> {
    reader
        .next_field()
        .map_err(|source| ProtobufError::Malformed { message, source })
}

/// Files one wire occurrence of `field` into its slot.
fn read_field<'a>(
    at: At,
    field: &FieldDesc,
    value: WireValue<'a>,
    slot: &mut Slot<'a>,
    depth: usize,
) -> Result<(), ProtobufError> {
    match field.kind {
        Kind::Unsupported => Err(ProtobufError::UnsupportedField {
            message: at.message,
            field: at.field,
            name: Some(field.json),
        }),
        Kind::Map(value_kind) => {
            let (key, value) = map_entry(at, value_kind, at.bytes(value)?)?;
            slot.map().insert(key, value);
            Ok(())
        }
        kind if field.emit == Emit::NonEmpty => {
            let list = slot.list();
            match (kind, value) {
                // Repeated numbers may also arrive packed into one length-delimited run.
                (Kind::Int32 | Kind::Int64 | Kind::Bool, WireValue::Bytes(packed)) => {
                    let mut reader = Reader::new(packed);
                    while !reader.is_empty() {
                        let v = reader.varint().map_err(|source| ProtobufError::Malformed {
                            message: at.message,
                            source,
                        })?;
                        list.push(scalar(at, kind, WireValue::Varint(v))?);
                    }
                }
                (Kind::String | Kind::Int32 | Kind::Int64 | Kind::Bool | Kind::Bytes, value) => {
                    list.push(scalar(at, kind, value)?);
                }
                (_, value) => {
                    list.push(finish(at, kind, at.bytes(value)?, depth)?.unwrap_or(Value::Null))
                }
            }
            Ok(())
        }
        Kind::String | Kind::Int32 | Kind::Int64 | Kind::Bool | Kind::Bytes => {
            *slot = Slot::Value(scalar(at, field.kind, value)?);
            Ok(())
        }
        _ => {
            let bytes = at.bytes(value)?;
            slot.chunks().push(bytes);
            Ok(())
        }
    }
}

/// Writes `field` into `out` as Go's JSON encoder would, from what arrived in `slot`.
fn write_field(
    at: At,
    field: &FieldDesc,
    slot: Slot<'_>,
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtobufError> {
    if let Kind::Inline(desc) = field.kind {
        let bytes = match slot {
            Slot::Chunks(chunks) => join(&chunks),
            _ => Cow::Borrowed(&[][..]),
        };
        out.extend(decode_message(desc, &bytes, depth + 1)?);
        return Ok(());
    }
    let value = match (field.emit, slot) {
        (Emit::NonEmpty, Slot::List(list)) if !list.is_empty() => Some(Value::Array(list)),
        (Emit::NonEmpty, Slot::Map(map)) if !map.is_empty() => Some(Value::Object(map)),
        (Emit::NonEmpty, _) => None,
        (_, Slot::Value(value)) => Some(value),
        (_, Slot::Chunks(chunks)) => finish(at, field.kind, &join(&chunks), depth)?,
        (Emit::Always, _) => zero(at, field.kind, depth)?,
        (_, _) => None,
    };
    match value {
        Some(value) if !(field.emit == Emit::NonZero && is_zero(&value)) => {
            out.insert(field.json.to_owned(), value);
        }
        _ => {}
    }
    Ok(())
}

/// The pieces of a message sent in parts, as one message.
fn join<'a>(chunks: &[&'a [u8]]) -> Cow<'a, [u8]> {
    match chunks {
        [one] => Cow::Borrowed(*one),
        _ => Cow::Owned(chunks.concat()),
    }
}

/// The JSON Go writes for a field's zero value, or `None` where it writes nothing (or `null`).
fn zero(at: At, kind: Kind, depth: usize) -> Result<Option<Value>, ProtobufError> {
    Ok(match kind {
        Kind::String => Some(Value::String(String::new())),
        Kind::Int32 | Kind::Int64 => Some(Value::from(0)),
        Kind::Bool => Some(Value::Bool(false)),
        Kind::Bytes | Kind::Map(_) | Kind::Unsupported | Kind::Inline(_) => None,
        other => finish(at, other, &[], depth)?,
    })
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// A scalar field's JSON value.
fn scalar(at: At, kind: Kind, value: WireValue<'_>) -> Result<Value, ProtobufError> {
    Ok(match kind {
        // Go reads an int32 varint by truncating it, as the wire carries negatives in 64 bits.
        Kind::Int32 => Value::from(at.varint(value)? as i64 as i32),
        Kind::Int64 => Value::from(at.varint(value)? as i64),
        Kind::Bool => Value::Bool(at.varint(value)? != 0),
        Kind::String => Value::String(String::from_utf8_lossy(at.bytes(value)?).into_owned()),
        Kind::Bytes => Value::String(format::base64(at.bytes(value)?)),
        other => unreachable!("{other:?} is not a scalar"),
    })
}

/// A message-valued field's JSON, or `None` where Go writes nothing for it (a zero time, an
/// empty raw extension).
fn finish(at: At, kind: Kind, bytes: &[u8], depth: usize) -> Result<Option<Value>, ProtobufError> {
    match kind {
        Kind::Message(desc) | Kind::Inline(desc) => {
            Ok(Some(Value::Object(decode_message(desc, bytes, depth + 1)?)))
        }
        Kind::Time => time(at, bytes),
        Kind::MicroTime => micro_time(at, bytes),
        Kind::Duration => {
            let [nanos] = leaf_fields("Duration", bytes)?;
            Ok(Some(Value::String(format::go_duration(
                nanos.varint()? as i64
            ))))
        }
        Kind::Quantity => match leaf_fields("Quantity", bytes)? {
            [field] if field.value.is_none() => Ok(Some(Value::String("0".to_owned()))),
            [field] => match field.bytes()? {
                [] => Err(at.invalid("an empty string is not a quantity".to_owned())),
                text => Ok(Some(Value::String(
                    String::from_utf8_lossy(text).into_owned(),
                ))),
            },
        },
        Kind::IntOrString => int_or_string(at, bytes),
        Kind::RawJson => {
            let [raw] = leaf_fields("RawExtension", bytes)?;
            let raw = raw.bytes()?;
            if raw.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(raw)
                .map(Some)
                .map_err(|e| at.invalid(format!("embedded object is not JSON: {e}")))
        }
        other => unreachable!("{other:?} is not message-valued"),
    }
}

/// `metav1.Time`: Go keeps whole seconds only, and writes its zero time as `null`.
fn time(at: At, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let (seconds, _nanos) = timestamp("Time", bytes)?;
    if bytes.is_empty() || seconds == format::GO_ZERO_TIME {
        return Ok(None);
    }
    format::rfc3339(seconds)
        .map(|t| Some(Value::String(t)))
        .map_err(|e| at.invalid(e))
}

/// `metav1.MicroTime`: nanoseconds truncated to microseconds, as Go does.
fn micro_time(at: At, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let (seconds, nanos) = timestamp("MicroTime", bytes)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let nanos = i64::from(nanos);
    let truncated = nanos - nanos % 1_000;
    let seconds = seconds
        .checked_add(truncated.div_euclid(1_000_000_000))
        .ok_or_else(|| at.invalid("time overflows".to_owned()))?;
    let micros = (truncated.rem_euclid(1_000_000_000) / 1_000) as u32;
    if seconds == format::GO_ZERO_TIME && micros == 0 {
        return Ok(None);
    }
    format::rfc3339_micro(seconds, micros)
        .map(|t| Some(Value::String(t)))
        .map_err(|e| at.invalid(e))
}

/// The `{seconds = 1, nanos = 2}` pair behind both time types.
fn timestamp(name: &'static str, bytes: &[u8]) -> Result<(i64, i32), ProtobufError> {
    let [seconds, nanos] = leaf_fields(name, bytes)?;
    Ok((seconds.varint()? as i64, nanos.varint()? as i64 as i32))
}

/// `intstr.IntOrString {type = 1, intVal = 2, strVal = 3}`: a number for type 0, a string for 1.
fn int_or_string(at: At, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let [kind, int, string] = leaf_fields("IntOrString", bytes)?;
    match kind.varint()? as i64 {
        0 => Ok(Some(Value::from(int.varint()? as i64 as i32))),
        1 => Ok(Some(Value::String(
            String::from_utf8_lossy(string.bytes()?).into_owned(),
        ))),
        other => Err(at.invalid(format!(
            "IntOrString type {other} is neither 0 (int) nor 1 (string)"
        ))),
    }
}

/// One `map<string, V>` entry, `{key = 1, value = 2}`.
fn map_entry(at: At, value_kind: MapValue, bytes: &[u8]) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value: Option<&[u8]> = None;
    let mut reader = Reader::new(bytes);
    while let Some((field, wire)) = next(&mut reader, at.message)? {
        match field {
            1 => key = String::from_utf8_lossy(at.bytes(wire)?).into_owned(),
            2 => value = Some(at.bytes(wire)?),
            other => return Err(at.invalid(format!("map entry has unknown field {other}"))),
        }
    }
    let value = match value_kind {
        MapValue::String => {
            Value::String(String::from_utf8_lossy(value.unwrap_or_default()).into_owned())
        }
        MapValue::Bytes => Value::String(format::base64(value.unwrap_or_default())),
        MapValue::Quantity => {
            finish(at, Kind::Quantity, value.unwrap_or_default(), 0)?.unwrap_or(Value::Null)
        }
    };
    Ok((key, value))
}

/// The last value of a field of a small fixed message, if it arrived.
#[derive(Debug, Clone, Copy)]
struct LeafField<'a> {
    at: At,
    value: Option<WireValue<'a>>,
}

impl<'a> LeafField<'a> {
    /// The varint, or 0 when absent.
    fn varint(self) -> Result<u64, ProtobufError> {
        self.value.map_or(Ok(0), |v| self.at.varint(v))
    }

    /// The bytes, or none when absent.
    fn bytes(self) -> Result<&'a [u8], ProtobufError> {
        self.value.map_or(Ok(&[][..]), |v| self.at.bytes(v))
    }
}

/// Fields 1 to N of a small fixed message (a time, a quantity), the last of each kept, as Go
/// keeps them; any other field is an error.
fn leaf_fields<'a, const N: usize>(
    name: &'static str,
    bytes: &'a [u8],
) -> Result<[LeafField<'a>; N], ProtobufError> {
    let mut fields: [LeafField<'a>; N] = std::array::from_fn(|i| LeafField {
        at: At {
            message: name,
            field: i as u64 + 1,
        },
        value: None,
    });
    let mut reader = Reader::new(bytes);
    while let Some((field, value)) = next(&mut reader, name)? {
        let slot = usize::try_from(field)
            .ok()
            .and_then(|f| fields.get_mut(f.wrapping_sub(1)));
        let Some(slot) = slot else {
            return Err(ProtobufError::UnsupportedField {
                message: name,
                field,
                name: None,
            });
        };
        slot.value = Some(value);
    }
    Ok(fields)
}
