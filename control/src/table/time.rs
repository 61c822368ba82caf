//! Timestamps and ages.
//!
//! Objects carry RFC 3339 strings ("2026-11-22T02:03:04Z", MicroTime adds ".123456"); the AGE
//! column is `HumanDuration(now - t)` from apimachinery's `util/duration`, whose rounding rules
//! (e.g. "5m30s" below ten minutes but "15m" above) are what users read, so they are kept exactly.
//! Arithmetic is in nanoseconds and saturates like Go's `time.Duration`, so sub-second
//! MicroTimes truncate the same way Go does.

use serde_json::Value;

use crate::time::{civil_from_days, days_from_civil};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in nanoseconds since the Unix epoch.
const GO_ZERO_TIME: i128 = -62_135_596_800 * NANOS_PER_SEC;

/// The timestamp at `pointer` in nanoseconds since the Unix epoch; `None` when absent, null,
/// unparseable or Go's zero time (what `metav1.Time.IsZero` treats as unset).
pub(super) fn timestamp(obj: &Value, pointer: &str) -> Option<i128> {
    let t = parse_rfc3339(obj.pointer(pointer)?.as_str()?)?;
    (t != GO_ZERO_TIME).then_some(t)
}

/// `translateTimestampSince`: the age of the timestamp at `pointer`, or "<unknown>" when unset.
pub(super) fn age_at(obj: &Value, pointer: &str, now: i64) -> String {
    match timestamp(obj, pointer) {
        Some(t) => human_duration_since(t, now),
        None => "<unknown>".to_owned(),
    }
}

/// `HumanDuration(now - t)` for a timestamp in nanoseconds.
pub(super) fn human_duration_since(t: i128, now: i64) -> String {
    let d = i128::from(now) * NANOS_PER_SEC - t;
    // Go's Time.Sub saturates at the bounds of Duration.
    let d = i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX });
    human_duration_nanos(d)
}

/// Kubernetes' `HumanDuration` for a whole number of seconds ("45s", "5m30s", "3h", "2d4h").
pub fn human_duration(seconds: i64) -> String {
    human_duration_nanos(seconds.saturating_mul(1_000_000_000))
}

/// `HumanDuration` over a Go `time.Duration` (nanoseconds); divisions truncate toward zero.
fn human_duration_nanos(d: i64) -> String {
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    // Up to two seconds in the future is clock skew and reads as "now".
    let seconds = d / SECOND;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / MINUTE;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / HOUR;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_remainder(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

/// "5m" when the remainder is zero, else "5m30s".
fn with_remainder(whole: i64, unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{whole}{unit}")
    } else {
        format!("{whole}{unit}{rest}{rest_unit}")
    }
}

/// Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)" into nanoseconds since the Unix epoch.
pub(super) fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: i128 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        // Nanosecond precision; further digits are dropped as Go does.
        for (i, c) in frac[..len].iter().enumerate() {
            if i < 9 {
                nanos = nanos * 10 + i128::from(c - b'0');
            }
        }
        nanos *= 10_i128.pow(9_u32.saturating_sub(len as u32));
        rest = &frac[len..];
    }
    let offset_secs = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let off = digits(&[*h1, *h2])? * 3600 + digits(&[*m1, *m2])? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * NANOS_PER_SEC + nanos)
}

/// Formats whole seconds since the epoch as Go's `time.RFC3339` in UTC.
pub(super) fn format_rfc3339(nanos: i128) -> String {
    let secs = i64::try_from(nanos.div_euclid(NANOS_PER_SEC)).unwrap_or(i64::MIN);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Go's zero time, which Kubernetes prints for a missing creationTimestamp.
pub(super) fn go_zero_time() -> i128 {
    GO_ZERO_TIME
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0_i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_follows_kubernetes_rounding() {
        let cases = [
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (659, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60 + 59, "3h25m"),
            (8 * 3600 - 1, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 86_400 - 1, "7d23h"),
            (8 * 86_400, "8d"),
            (729 * 86_400, "729d"),
            (730 * 86_400, "2y"),
            (731 * 86_400, "2y1d"),
            (8 * 365 * 86_400, "8y"),
            (20 * 365 * 86_400 + 100 * 86_400, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn sub_second_ages_truncate_like_go() {
        let t = parse_rfc3339("2026-11-22T02:03:04.600000Z").unwrap();
        let now = parse_rfc3339("2026-11-22T02:03:14Z").unwrap() / NANOS_PER_SEC;
        // 9.4s, not 10s.
        assert_eq!(human_duration_since(t, now as i64), "9s");
        // 1.4s in the future is still "now"; 2.4s is not.
        assert_eq!(human_duration_since(t, now as i64 - 11), "0s");
        assert_eq!(human_duration_since(t, now as i64 - 12), "<invalid>");
    }

    #[test]
    fn parses_and_formats_rfc3339() {
        let t = parse_rfc3339("2026-11-22T02:03:04Z").unwrap();
        assert_eq!(t / NANOS_PER_SEC, 1_795_312_984);
        assert_eq!(format_rfc3339(t), "2026-11-22T02:03:04Z");
        let offset = parse_rfc3339("2026-11-22T03:33:04+01:30").unwrap();
        assert_eq!(offset, t);
        assert_eq!(format_rfc3339(go_zero_time()), "0001-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.5Z").unwrap(),
            parse_rfc3339("2024-03-01T00:00:00Z").unwrap() - NANOS_PER_SEC / 2
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22 02:03:04Z",
            "2026-13-22T02:03:04Z",
            "2026-11-22T02:03:04",
            "2026-11-22T02:03:04.Z",
            "2026-11-22T02:03:04+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn zero_and_missing_times_are_unknown() {
        let obj = serde_json::json!({"a": "0001-01-01T00:00:00Z", "b": null, "c": "garbage"});
        for p in ["/a", "/b", "/c", "/missing"] {
            assert_eq!(age_at(&obj, p, 0), "<unknown>", "{p}");
        }
    }
}
