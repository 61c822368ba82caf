//! Query parameters, parsed leniently where clients are sloppy (kube-rs sends `?&watch=true`)
//! and strictly where a wrong value would change meaning (`limit=abc` is a 400).

use std::collections::HashMap;

use super::status::ApiError;

/// The decoded query string.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses `a=b&c=d`; empty pairs are skipped, `+` and `%XX` decoded.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(k), decode(v));
        }
        Query(map)
    }

    /// A parameter's value (empty values count as absent).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean flag: `true`/`1` set it.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// An integer parameter; a non-integer is a 400.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("{key}: invalid value {v:?}: must be an integer"))
                })
            })
            .transpose()
    }

    /// `dryRun=All` asks for everything but the write.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_rs_style_and_encoded_selectors() {
        let q = Query::parse(Some(
            "&watch=true&labelSelector=%21service.kubernetes.io%2Fheadless%2Capp+in+%28a%29&limit=",
        ));
        assert!(q.flag("watch"));
        assert_eq!(
            q.get("labelSelector"),
            Some("!service.kubernetes.io/headless,app in (a)")
        );
        assert_eq!(q.get("limit"), None);
        assert!(Query::parse(Some("limit=abc")).int("limit").is_err());
        assert_eq!(Query::parse(Some("limit=5")).int("limit").unwrap(), Some(5));
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
    }
}
