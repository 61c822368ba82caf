//! Kubernetes protobuf request bodies, decoded to the JSON the same client would have sent.
//!
//! kubectl's typed clients (`kubectl create namespace|deployment|service`, `kubectl run`) send
//! `application/vnd.kubernetes.protobuf` and do not retry with JSON on a 415, so a server that
//! only speaks JSON cannot serve them. The rest of the apiserver works on `serde_json::Value`,
//! so protobuf stops here: [`decode`] turns a body into exactly the JSON object Go's
//! `encoding/json` would have written for the same struct, and everything downstream
//! (defaulting, validation, storage) sees no difference.
//!
//! A body is the 4-byte magic `k8s\0` and a `runtime.Unknown` envelope
//! `{typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2, contentEncoding = 3, contentType = 4}`
//! whose `raw` is the object's own message. Messages are described as data in [`schema`] (each
//! served kind's resource entry names its top-level message); a
//! field the schema does not know is an error that asks for JSON, never silently dropped.
//! Decoding is bounded: every length is checked against the input left, nesting stops at
//! [`MAX_DEPTH`], and no input panics.

mod format;
mod message;
pub mod schema;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use wire::WireError;

use wire::{Reader, WireValue};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\x00";

/// How many messages deep a body may nest; the object itself is level 1.
pub const MAX_DEPTH: usize = 64;

/// Why a protobuf body cannot be decoded; each message is written for the client to read.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body lacks the `k8s\0` magic.
    #[error("body does not start with the kubernetes protobuf magic \"k8s\\0\"")]
    NotEnveloped,
    /// The bytes are not valid protobuf.
    #[error("malformed {message}: {source}")]
    Malformed {
        message: &'static str,
        #[source]
        source: WireError,
    },
    /// A field arrived with a wire type its schema does not allow.
    #[error("{message} field {field} has wire type {found}, expected {expected}")]
    WrongWireType {
        message: &'static str,
        field: u64,
        found: &'static str,
        expected: &'static str,
    },
    /// A field this server does not decode: unknown to it, or known but not yet supported.
    #[error(
        "{message} field {field}{} is not supported by this server: send JSON",
        .name.map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    UnsupportedField {
        message: &'static str,
        field: u64,
        /// The JSON name, when the field is known.
        name: Option<&'static str>,
    },
    /// A value Go itself would refuse to write as JSON (a time past year 9999, a bad
    /// IntOrString type, an embedded object that is not JSON).
    #[error("{message} field {field}: {reason}")]
    InvalidValue {
        message: &'static str,
        field: u64,
        reason: String,
    },
    /// The body nests messages deeper than [`MAX_DEPTH`].
    #[error("{message} is nested more than {MAX_DEPTH} messages deep")]
    TooDeep { message: &'static str },
    /// The envelope does not say what the object is.
    #[error("protobuf envelope has no apiVersion or kind")]
    MissingTypeMeta,
    /// An object this server cannot decode from protobuf.
    #[error("protobuf for {api_version} {kind} is not supported by this server: send JSON")]
    UnsupportedKind { api_version: String, kind: String },
    /// The envelope's object is compressed or otherwise encoded.
    #[error("protobuf envelope content encoding {0:?} is not supported: send the object unencoded")]
    UnsupportedEncoding(String),
    /// The envelope's object is in another format.
    #[error("protobuf envelope content type {0:?} is not supported: send JSON")]
    UnsupportedContentType(String),
}

impl ProtobufError {
    /// True when the body is well formed but asks for something this server does not decode
    /// from protobuf (answer 415); false when the body itself is bad (answer 400).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ProtobufError::UnsupportedField { .. }
                | ProtobufError::UnsupportedKind { .. }
                | ProtobufError::UnsupportedEncoding(_)
                | ProtobufError::UnsupportedContentType(_)
        )
    }
}

/// True if `content_type` names Kubernetes protobuf, whatever its parameters.
pub fn is_protobuf(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case(CONTENT_TYPE)
}

/// Decodes an enveloped body to JSON with "apiVersion" and "kind" set from the envelope's TypeMeta.
///
/// `message_for(api_version, kind)` is the message of each kind the caller accepts (the
/// apiserver asks its resource table); any other kind is [`ProtobufError::UnsupportedKind`].
pub fn decode(
    body: &[u8],
    message_for: impl Fn(&str, &str) -> Option<&'static schema::MessageDesc>,
) -> Result<Value, ProtobufError> {
    let Some(envelope) = body.strip_prefix(MAGIC) else {
        return Err(ProtobufError::NotEnveloped);
    };
    let unknown = Unknown::parse(envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(unknown.content_encoding));
    }
    if !unknown.content_type.is_empty() && !is_protobuf(&unknown.content_type) {
        return Err(ProtobufError::UnsupportedContentType(unknown.content_type));
    }
    if unknown.api_version.is_empty() || unknown.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    let Some(desc) = message_for(&unknown.api_version, &unknown.kind) else {
        return Err(ProtobufError::UnsupportedKind {
            api_version: unknown.api_version,
            kind: unknown.kind,
        });
    };
    let fields = message::decode_message(desc, unknown.raw, 1)?;
    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), Value::String(unknown.api_version));
    object.insert("kind".to_owned(), Value::String(unknown.kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// `runtime.Unknown`, the envelope, with its `TypeMeta` flattened.
#[derive(Debug, Default)]
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Unknown<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut unknown = Unknown::default();
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = next("Unknown", &mut reader)? {
            let bytes = length_delimited("Unknown", field, value)?;
            match field {
                1 => unknown.parse_type_meta(bytes)?,
                2 => unknown.raw = bytes,
                3 => unknown.content_encoding = text(bytes),
                4 => unknown.content_type = text(bytes),
                _ => {
                    return Err(ProtobufError::UnsupportedField {
                        message: "Unknown",
                        field,
                        name: None,
                    });
                }
            }
        }
        Ok(unknown)
    }

    /// `runtime.TypeMeta {apiVersion = 1, kind = 2}`.
    fn parse_type_meta(&mut self, bytes: &[u8]) -> Result<(), ProtobufError> {
        let mut reader = Reader::new(bytes);
        while let Some((field, value)) = next("TypeMeta", &mut reader)? {
            let bytes = length_delimited("TypeMeta", field, value)?;
            match field {
                1 => self.api_version = text(bytes),
                2 => self.kind = text(bytes),
                _ => {
                    return Err(ProtobufError::UnsupportedField {
                        message: "TypeMeta",
                        field,
                        name: None,
                    });
                }
            }
        }
        Ok(())
    }
}

fn next<'a>(
    message: &'static str,
    reader: &mut Reader<'a>,
) -> Result<Option<(u64, WireValue<'a>)>, ProtobufError> {
    reader
        .next_field()
        .map_err(|source| ProtobufError::Malformed { message, source })
}

fn length_delimited<'a>(
    message: &'static str,
    field: u64,
    value: WireValue<'a>,
) -> Result<&'a [u8], ProtobufError> {
    match value {
        WireValue::Bytes(bytes) => Ok(bytes),
        other => Err(ProtobufError::WrongWireType {
            message,
            field,
            found: other.wire_name(),
            expected: "length-delimited",
        }),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
