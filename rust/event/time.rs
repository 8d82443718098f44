//! RFC 3339 timestamps, to microseconds since the Unix epoch.

use super::{invalid, MAX_TIME, MIN_TIME};
use crate::error::Error;

/// An RFC 3339 timestamp with a UTC offset, to microseconds since the epoch (UTC).
///
/// Exactly what Python can hold and msgspec decodes to the same instant: `T`, `t` or a
/// space between date and time; `Z`, `z` or `±HH:MM`; fractional digits beyond the
/// sixth round half up on the seventh; no leap second; the local time and the instant
/// both within years 1 to 9999 ([`MIN_TIME`]..=[`MAX_TIME`]).
pub fn parse_time(field: &str, s: &str) -> Result<i64, Error> {
    rfc3339_micros(s.as_bytes()).ok_or_else(|| {
        invalid(
            field,
            format!(
                "expected an RFC 3339 timestamp with a UTC offset between years 1 and 9999 \
                 (such as \"2026-01-31T12:00:00Z\"), got {s:?}"
            ),
        )
    })
}

fn rfc3339_micros(b: &[u8]) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 20
        || (b[4], b[7], b[13], b[16]) != (b'-', b'-', b':', b':')
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year == 0 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let local = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_opt(hour, minute, second)?
        .and_utc()
        .timestamp_micros();
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let digit = |i: usize| {
            if i < n {
                i64::from(fraction[i] - b'0')
            } else {
                0
            }
        };
        micros = (0..6).fold(0, |acc, i| acc * 10 + digit(i));
        if digit(6) >= 5 {
            micros += 1;
        }
        rest = &fraction[n..];
    }
    let offset_us = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = (hours * 60 + minutes) * 60_000_000;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let local = local + micros;
    let utc = local - offset_us;
    ((MIN_TIME..=MAX_TIME).contains(&local) && (MIN_TIME..=MAX_TIME).contains(&utc)).then_some(utc)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_exactly_what_python_holds() {
        let t = |s: &str| parse_time("t", s).ok();
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("1970-01-01t01:00:00+01:00"), Some(0));
        assert_eq!(
            t("1970-01-01 00:00:00.0000005z"),
            Some(1),
            "half up on the 7th digit"
        );
        assert_eq!(t("1970-01-01T00:00:00.0000004999Z"), Some(0));
        assert_eq!(t("1969-12-31T23:59:59.9999995-00:00"), Some(0));
        assert_eq!(t("0001-01-01T00:00:00Z"), Some(MIN_TIME));
        assert_eq!(t("9999-12-31T23:59:59.999999Z"), Some(MAX_TIME));
        assert_eq!(
            t("0001-01-01T00:00:00-23:59"),
            Some(MIN_TIME + 86_340_000_000)
        );
        for bad in [
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:00:00-02:00",
            "9999-12-31T23:59:59.9999995Z",
            "2016-12-31T23:59:60Z",
            "2026-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00Z",
            "2026-01-01X00:00:00Z",
            "+2026-01-01T00:00:00Z",
            " 2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z ",
            "\u{0662}026-01-01T00:00:00Z",
            "",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
