//! Kubernetes quantities (`10Gi`, `500M`, `1073741824`) as byte counts for nats.conf.

use sluice_broker::{Error, ErrorKind, Result};

/// Parses a Kubernetes storage quantity into bytes: a whole number with an optional binary
/// (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`) or decimal (`k`, `M`, `G`, `T`, `P`) suffix.
/// Fractions and exponents are rejected (`InvalidSpec`) rather than rounded.
pub fn parse_bytes(quantity: &str) -> Result<u64> {
    let q = quantity.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(bad(quantity)),
    };
    let value: u64 = digits.parse().map_err(|_| bad(quantity))?;
    let bytes = value.checked_mul(multiplier).ok_or_else(|| bad(quantity))?;
    if bytes == 0 {
        return Err(bad(quantity));
    }
    Ok(bytes)
}

fn bad(quantity: &str) -> Error {
    Error::new(
        ErrorKind::InvalidSpec,
        format!(
            "{quantity:?} is not a usable size; write a positive whole number with an optional suffix such as 10Gi or 500M"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("10Gi").unwrap(), 10 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("512Mi").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_bytes("500M").unwrap(), 500_000_000);
        assert_eq!(parse_bytes("2k").unwrap(), 2_000);
        assert_eq!(parse_bytes("1073741824").unwrap(), 1 << 30);
        assert_eq!(parse_bytes(" 1Ti ").unwrap(), 1 << 40);
    }

    #[test]
    fn rejects_what_it_cannot_represent_exactly() {
        for q in [
            "",
            "Gi",
            "1.5Gi",
            "1e9",
            "-1Gi",
            "10GB",
            "0",
            "99999999999Pi",
        ] {
            let err = parse_bytes(q).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{q:?}");
        }
    }
}
