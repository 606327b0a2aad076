//! `grpc-timeout` (gRPC over HTTP/2, "Requests"): `TimeoutValue
//! TimeoutUnit`, at most 8 ASCII digits and one of `H M S m u n`.

use std::time::Duration;

use http::HeaderValue;

pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The spec's limit on `TimeoutValue`: "positive integer as ASCII string
/// of at most 8 digits".
const MAX_DIGITS: usize = 8;
const MAX_VALUE: u64 = 99_999_999;

/// A `grpc-timeout` value as a duration; `None` when malformed.
pub fn parse(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` as a `grpc-timeout` value in the finest unit that fits 8 digits,
/// rounded down: the backend never sees more than `d`.
pub fn encode(d: Duration) -> HeaderValue {
    let units: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let nanos = d.as_nanos();
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(value, _)| value <= u128::from(MAX_VALUE))
        .unwrap_or((u128::from(MAX_VALUE), b'H'));
    let text = format!("{value}{}", char::from(unit));
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse(b"4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse(b"5m"), Some(Duration::from_millis(5)));
        assert_eq!(parse(b"6u"), Some(Duration::from_micros(6)));
        assert_eq!(parse(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"10x",
            b"123456789S",
            b"-1S",
            b"1 S",
            b"\xff",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoding_rounds_down_and_fits() {
        let enc = |d| encode(d).to_str().map(str::to_owned).unwrap_or_default();
        assert_eq!(enc(Duration::from_secs(300)), "300000m");
        assert_eq!(enc(Duration::from_millis(1500)), "1500000u");
        assert_eq!(enc(Duration::from_nanos(42)), "42n");
        assert_eq!(enc(Duration::from_secs(86_400)), "86400000m");
        for d in [1u64, 999, 123_456_789, 86_400_000_000_000] {
            let d = Duration::from_nanos(d);
            let back = parse(encode(d).as_bytes()).unwrap_or_default();
            assert!(back <= d && back * 1001 >= d * 1000, "{d:?} -> {back:?}");
        }
    }
}
