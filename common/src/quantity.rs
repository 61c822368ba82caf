//! Kubernetes resource quantities (`100m`, `1`, `128Mi`, `1Gi`, `500M`, `1e3`) as integers.
//!
//! The scheduler only adds and compares quantities, so it keeps them as millis in an `i128`:
//! exact for every suffix from `n` to `Ei`, and rounded up like `resource.Quantity.MilliValue`
//! so a tiny request never counts as zero.

/// A quantity that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not a number followed by a known suffix.
    #[error("quantity {0:?} is not a number with a known suffix")]
    Malformed(String),
    /// Beyond what an `i128` of millis holds.
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// The value of `text` in thousandths, rounded up (`"100m"` → 100, `"1Ki"` → 1_024_000).
pub fn parse_millis(text: &str) -> Result<i128, QuantityError> {
    let malformed = || QuantityError::Malformed(text.to_owned());
    let too_large = || QuantityError::TooLarge(text.to_owned());
    let trimmed = text.trim();
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(malformed());
    }
    let (binary_shift, mut exponent): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        s if s.starts_with(['e', 'E']) => (0, s[1..].parse().map_err(|_| malformed())?),
        _ => return Err(malformed()),
    };
    if whole.len() + fraction.len() > 30 || !(-40..=40).contains(&exponent) {
        return Err(too_large());
    }
    let mut digits: i128 = 0;
    for c in whole.chars().chain(fraction.chars()) {
        digits = digits * 10 + i128::from(c as u8 - b'0');
    }
    exponent += 3 - fraction.len() as i32;
    let mut value = digits.checked_shl(binary_shift).ok_or_else(too_large)?;
    if value >> binary_shift != digits {
        return Err(too_large());
    }
    if exponent >= 0 {
        value = 10i128
            .checked_pow(exponent as u32)
            .and_then(|scale| value.checked_mul(scale))
            .ok_or_else(too_large)?;
    } else {
        let scale = 10i128
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(too_large)?;
        value = (value + scale - 1) / scale;
    }
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_cpu_and_memory_forms() {
        assert_eq!(parse_millis("100m"), Ok(100));
        assert_eq!(parse_millis("1"), Ok(1000));
        assert_eq!(parse_millis("0.5"), Ok(500));
        assert_eq!(parse_millis("2.25"), Ok(2250));
        assert_eq!(parse_millis("128Mi"), Ok(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_millis("1Gi"), Ok(1024 * 1024 * 1024 * 1000));
        assert_eq!(parse_millis("500M"), Ok(500_000_000_000));
        assert_eq!(parse_millis("1.5Gi"), Ok(1536 * 1024 * 1024 * 1000));
        assert_eq!(parse_millis("1e3"), Ok(1_000_000));
        assert_eq!(parse_millis("-1"), Ok(-1000));
    }

    #[test]
    fn rounds_tiny_values_up() {
        assert_eq!(parse_millis("1n"), Ok(1));
        assert_eq!(parse_millis("1500u"), Ok(2));
        assert_eq!(parse_millis("0"), Ok(0));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in ["", "m", "1X", "1.2.3", "abc", "1Mii", "--1"] {
            assert!(
                matches!(parse_millis(bad), Err(QuantityError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_millis("99999999999999999999999999Ei"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
