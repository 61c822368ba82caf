//! CNI spec versions this plugin speaks.
//!
//! Only the versions whose result format we produce are accepted: 0.4.0 (the last pre-1.0
//! format, still sent by older runtimes), 1.0.0 and 1.1.0. Older formats (0.1–0.3) differ in
//! result shape and lack CHECK; a config asking for them gets error 1, not a guess.

use std::fmt;

use serde::{Serialize, Serializer};

use super::error::{CniError, ErrorCode};

/// A CNI spec version this plugin accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.4.0: `ips[].version` present; no GC or STATUS.
    V0_4_0,
    /// 1.0.0: `ips[].version` dropped.
    V1_0_0,
    /// 1.1.0: adds GC, STATUS and the route/interface fields of 1.1.
    V1_1_0,
}

impl CniVersion {
    /// Every version this plugin accepts, oldest first (what VERSION reports).
    pub const SUPPORTED: [CniVersion; 3] =
        [CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];
    /// The newest version, used when the config's version is unknown.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parses a `cniVersion` string; anything not supported is error 1.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        Self::SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::IncompatibleVersion,
                    format!("incompatible CNI version {text:?}"),
                    format!("skiff-cni supports {}", Self::supported_list()),
                )
            })
    }

    /// The version as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    fn supported_list() -> String {
        Self::SUPPORTED.map(CniVersion::as_str).join(", ")
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions_parse_and_order() {
        assert_eq!(CniVersion::parse("0.4.0").unwrap(), CniVersion::V0_4_0);
        assert_eq!(CniVersion::parse("1.1.0").unwrap(), CniVersion::LATEST);
        assert!(CniVersion::V0_4_0 < CniVersion::V1_0_0);
    }

    #[test]
    fn old_and_unknown_versions_are_error_one() {
        for text in ["0.3.1", "0.1.0", "2.0.0", "", "1.1"] {
            let err = CniVersion::parse(text).unwrap_err();
            assert_eq!(err.code, ErrorCode::IncompatibleVersion, "{text}");
            assert!(err.details.contains("1.1.0"));
        }
    }
}
