//! The spec's error object and its codes, including the ones skiff defines (100 and up).
//!
//! A runtime decides what to do from the code alone (retry on 11, skip cleanup on 3, mark the
//! network not ready on 50), so each failure maps to exactly one code and the code is chosen
//! where the failure is understood, not guessed from a message later.

use std::fmt;

use serde_json::{Value, json};

use super::version::CniVersion;

/// A CNI error code: 1–99 are the spec's, 100 and up are skiff's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the config's `cniVersion` is not one we speak, or the command needs a newer one.
    IncompatibleVersion,
    /// 2: the config has a field this plugin refuses (e.g. an `ipam` section).
    UnsupportedField,
    /// 3: the container is unknown (CHECK of an attachment we never made).
    UnknownContainer,
    /// 4: a `CNI_*` variable is missing or malformed.
    InvalidEnvironment,
    /// 5: reading or writing the plugin's state failed.
    Io,
    /// 6: stdin is not the JSON it should be.
    Decode,
    /// 7: the config decodes but a value is invalid.
    InvalidConfig,
    /// 11: a transient condition; the runtime should retry.
    TryAgainLater,
    /// 50: STATUS — the plugin cannot serve ADD now.
    NotAvailable,
    /// 51: STATUS — limited connectivity.
    LimitedConnectivity,
    /// 100: an unexpected internal failure (a worker thread panicked).
    Internal,
    /// 101: the kernel refused a netlink request.
    Netlink,
    /// 102: no free address is left in the podCIDR.
    NoFreeAddress,
    /// 103: the IPAM state file exists but cannot be parsed.
    CorruptState,
    /// 104: the Pod's network namespace cannot be opened or entered.
    NetnsUnavailable,
    /// 105: `CNI_IFNAME` already exists in the Pod's namespace.
    InterfaceExists,
    /// 106: CHECK found the attachment different from what ADD made.
    CheckFailed,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Internal => 100,
            ErrorCode::Netlink => 101,
            ErrorCode::NoFreeAddress => 102,
            ErrorCode::CorruptState => 103,
            ErrorCode::NetnsUnavailable => 104,
            ErrorCode::InterfaceExists => 105,
            ErrorCode::CheckFailed => 106,
        }
    }
}

/// A spec error object: what the plugin prints on stdout when a command fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    /// The code the runtime acts on.
    pub code: ErrorCode,
    /// A short message.
    pub msg: String,
    /// Longer context (the underlying cause).
    pub details: String,
}

impl CniError {
    /// An error with `code`, `msg` and `details`.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object in the given version's wire form.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut object = json!({
            "cniVersion": version,
            "code": self.code.number(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            object["details"] = Value::String(self.details.clone());
        }
        object
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code.number(), self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_carry_version_code_and_message() {
        let err = CniError::new(ErrorCode::InvalidEnvironment, "CNI_IFNAME missing", "");
        assert_eq!(
            err.to_json(CniVersion::V1_0_0),
            json!({"cniVersion": "1.0.0", "code": 4, "msg": "CNI_IFNAME missing"})
        );
        let err = CniError::new(ErrorCode::NoFreeAddress, "no address", "10.0.0.0/30");
        assert_eq!(err.to_json(CniVersion::LATEST)["details"], "10.0.0.0/30");
        assert_eq!(err.to_json(CniVersion::LATEST)["code"], 102);
    }
}
