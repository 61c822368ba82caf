//! The JSON spellings Go gives to the few values that are not plain strings or numbers:
//! `metav1.Time` (RFC 3339, whole seconds), `metav1.MicroTime` (six fractional digits),
//! `time.Duration` (`1h2m3.5s`) and `[]byte` (padded standard base64). Written here rather than
//! pulled in as dependencies: each is a screenful, and each must match Go to the byte.

/// Seconds from the Unix epoch to Go's zero `time.Time`, 0001-01-01T00:00:00Z.
pub(crate) const GO_ZERO_TIME: i64 = -62_135_596_800;
/// 0000-01-01T00:00:00Z: Go refuses to write a JSON time before it.
const MIN_SECONDS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z: Go refuses to write a JSON time after it.
const MAX_SECONDS: i64 = 253_402_300_799;

/// `2026-11-22T02:03:04Z`, or why Go would refuse to write it.
pub(crate) fn rfc3339(seconds: i64) -> Result<String, String> {
    let (date, time) = civil(seconds)?;
    Ok(format!("{date}T{time}Z"))
}

/// `2026-11-22T02:03:04.123456Z`, or why Go would refuse to write it.
pub(crate) fn rfc3339_micro(seconds: i64, micros: u32) -> Result<String, String> {
    let (date, time) = civil(seconds)?;
    Ok(format!("{date}T{time}.{micros:06}Z"))
}

/// The UTC date and time of day, as `YYYY-MM-DD` and `hh:mm:ss`.
fn civil(seconds: i64) -> Result<(String, String), String> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        return Err(format!(
            "time {seconds}s from the epoch is outside years 0 to 9999"
        ));
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = crate::time::civil_from_days(days);
    Ok((
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        ),
    ))
}

/// Go's `time.Duration.String()` for `nanos` nanoseconds: `0s`, `1.5µs`, `100ms`, `1h0m0s`.
pub(crate) fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}{}µs", u / 1_000, fraction(u % 1_000, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}{}ms", u / 1_000_000, fraction(u % 1_000_000, 6));
    }
    let frac = fraction(u % 1_000_000_000, 9);
    let secs = u / 1_000_000_000;
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}{frac}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}{frac}s")
    } else {
        format!("{sign}{seconds}{frac}s")
    }
}

/// `.5` for 500 of 1000 (`digits` = 3): the fraction without trailing zeros, empty when zero.
fn fraction(value: u64, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let text = format!(".{value:0digits$}");
    text.trim_end_matches('0').to_owned()
}

/// Padded standard base64, as Go's `encoding/json` writes `[]byte`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_match_go() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_312_984).unwrap(), "2026-11-22T02:03:04Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(GO_ZERO_TIME).unwrap(), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(MIN_SECONDS).unwrap(), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339(MAX_SECONDS).unwrap(), "9999-12-31T23:59:59Z");
        assert!(rfc3339(MAX_SECONDS + 1).is_err());
        assert!(rfc3339(MIN_SECONDS - 1).is_err());
        assert!(rfc3339(i64::MIN).is_err());
        assert_eq!(
            rfc3339_micro(1_795_312_984, 123_456).unwrap(),
            "2026-11-22T02:03:04.123456Z"
        );
        assert_eq!(rfc3339_micro(0, 7).unwrap(), "1970-01-01T00:00:00.000007Z");
    }

    #[test]
    fn durations_match_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_234_567, "1.234567ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-1_500_000_000, "-1.5s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(go_duration(nanos), want, "{nanos}ns");
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}
