//! The protobuf wire format, read by hand: a tag varint, then a varint, a fixed 32- or 64-bit
//! word, or a length-delimited run of bytes. Kubernetes' messages use nothing else (no groups),
//! so the reader is a few dozen lines and every length is checked against what is left.

/// Largest field number protobuf allows (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// What is wrong with the bytes themselves, before any schema is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends inside a tag, a value, or a length-delimited field.
    #[error("input ends inside a field")]
    Truncated,
    /// A varint runs past ten bytes.
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    /// Field number 0, or one above 2^29 - 1.
    #[error("invalid field number {0}")]
    InvalidFieldNumber(u64),
    /// Wire types 3 and 4 (groups), or the undefined 6 and 7.
    #[error("field {field} uses wire type {wire_type}, which Kubernetes never sends")]
    InvalidWireType { field: u64, wire_type: u8 },
}

/// One field's value as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireValue<'a> {
    Varint(u64),
    /// A fixed 64-bit word; no Kubernetes field is one, so only its presence matters.
    Fixed64,
    /// A length-delimited run: a string, bytes, a nested message, a map entry or a packed list.
    Bytes(&'a [u8]),
    /// A fixed 32-bit word; likewise never a Kubernetes field.
    Fixed32,
}

impl WireValue<'_> {
    /// The wire type's name, for error messages.
    pub(crate) fn wire_name(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64 => "fixed64",
            WireValue::Bytes(_) => "length-delimited",
            WireValue::Fixed32 => "fixed32",
        }
    }
}

/// Walks the fields of one message, in wire order.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// True when every field has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next field's number and value, or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u64, WireValue<'a>)>, WireError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 || field > MAX_FIELD_NUMBER {
            return Err(WireError::InvalidFieldNumber(field));
        }
        let value = match (tag & 7) as u8 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                WireValue::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                WireValue::Fixed32
            }
            wire_type => return Err(WireError::InvalidWireType { field, wire_type }),
        };
        Ok(Some((field, value)))
    }

    /// A base-128 varint. Bits past the 64th are dropped, as Go's decoder does.
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        if self.rest.len() >= 10 {
            Err(WireError::VarintTooLong)
        } else {
            Err(WireError::Truncated)
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Result<Vec<(u64, WireValue<'_>)>, WireError> {
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(field) = reader.next_field()? {
            out.push(field);
        }
        Ok(out)
    }

    #[test]
    fn reads_each_wire_type() {
        let bytes = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 2, 3, 4, 5, 6, 7, 8, // 2: fixed64
            0x1a, 0x02, b'h', b'i', // 3: "hi"
            0x25, 1, 2, 3, 4, // 4: fixed32
        ];
        assert_eq!(
            fields(&bytes).unwrap(),
            vec![
                (1, WireValue::Varint(150)),
                (2, WireValue::Fixed64),
                (3, WireValue::Bytes(b"hi")),
                (4, WireValue::Fixed32),
            ]
        );
    }

    #[test]
    fn negative_int32_is_a_ten_byte_varint() {
        let bytes = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        let (_, value) = fields(&bytes).unwrap()[0];
        assert_eq!(value, WireValue::Varint(u64::MAX));
        let WireValue::Varint(v) = value else {
            unreachable!()
        };
        assert_eq!(v as i64 as i32, -1);
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(fields(&[0x08]), Err(WireError::Truncated));
        assert_eq!(fields(&[0x0a, 0x05, b'a']), Err(WireError::Truncated));
        assert_eq!(fields(&[0x11, 1, 2]), Err(WireError::Truncated));
        assert_eq!(fields(&[0x08, 0x80]), Err(WireError::Truncated));
        assert_eq!(
            fields(
                &[0x08; 1]
                    .iter()
                    .chain(&[0xff; 11])
                    .copied()
                    .collect::<Vec<_>>()
            ),
            Err(WireError::VarintTooLong)
        );
        assert_eq!(fields(&[0x00, 0x01]), Err(WireError::InvalidFieldNumber(0)));
        assert_eq!(
            fields(&[0x0b]),
            Err(WireError::InvalidWireType {
                field: 1,
                wire_type: 3
            })
        );
        assert_eq!(
            fields(&[0x0f]),
            Err(WireError::InvalidWireType {
                field: 1,
                wire_type: 7
            })
        );
        // A length that would run far past the end is caught before any slicing.
        let huge = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(fields(&huge), Err(WireError::Truncated));
    }
}
