//! Exact decimal text to integer micro-units. Never through a binary float, never rounding.

const SCALE_DIGITS: i64 = 6;

/// The largest amount of micro-units (and the largest counter) anything holds: money is
/// kept in 64-bit signed integers, in Rust, Python and the databases alike.
pub const MAX_MICROS: u64 = i64::MAX as u64;

/// Parses a non-negative decimal number (`"100"`, `"0.25"`, `"1.5e2"`, JSON number
/// grammar, no sign) into micro-units. The message of the error says what is wrong.
pub fn parse_micros(text: &str) -> Result<u64, String> {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b'-') {
        return Err(format!("must not be negative, got {text}"));
    }
    let (mantissa, exponent) = match bytes.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => (&text[..i], parse_exponent(&text[i + 1..], text)?),
        None => (text, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !digits_ok(int_part) || !digits_ok(frac_part) {
        return Err(format!("not a decimal number: {text:?}"));
    }
    if mantissa.contains('.') && frac_part.is_empty() {
        return Err(format!("not a decimal number: {text:?}"));
    }
    // value = digits * 10^(exponent - frac_len); we need it * 10^6 to be an integer.
    let shift = exponent
        .checked_sub(frac_part.len() as i64)
        .and_then(|e| e.checked_add(SCALE_DIGITS))
        .ok_or_else(|| format!("exponent out of range: {text}"))?;
    let digits = int_part.bytes().chain(frac_part.bytes());
    let mut value: u64 = 0;
    let too_large = || format!("too large for micro-units: {text}");
    if shift >= 0 {
        for d in digits {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(too_large)?;
        }
        for _ in 0..shift {
            if value == 0 {
                break;
            }
            value = value.checked_mul(10).ok_or_else(too_large)?;
        }
    } else {
        // The last `-shift` digits must be zeros: they are below a micro-unit.
        let all: Vec<u8> = digits.collect();
        let cut = all.len().saturating_sub(shift.unsigned_abs() as usize);
        if all[cut..].iter().any(|&d| d != b'0') {
            return Err(format!("more than 6 decimal places: {text}"));
        }
        for &d in &all[..cut] {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(too_large)?;
        }
    }
    if value > MAX_MICROS {
        return Err(too_large());
    }
    Ok(value)
}

fn parse_exponent(exp: &str, text: &str) -> Result<i64, String> {
    let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 6 {
        return Err(format!("not a decimal number: {text:?}"));
    }
    let magnitude: i64 = digits
        .parse()
        .map_err(|_| format!("bad exponent: {text}"))?;
    Ok(if exp.starts_with('-') {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        assert_eq!(parse_micros("100.00"), Ok(100_000_000));
        assert_eq!(parse_micros("0.25"), Ok(250_000));
        assert_eq!(parse_micros("0.000001"), Ok(1));
        assert_eq!(parse_micros("2"), Ok(2_000_000));
        assert_eq!(parse_micros("1.5e2"), Ok(150_000_000));
        assert_eq!(parse_micros("25E-2"), Ok(250_000));
        assert_eq!(parse_micros("1.0000000"), Ok(1_000_000));
        assert_eq!(parse_micros("0"), Ok(0));
        assert_eq!(parse_micros("0e999999"), Ok(0));
    }

    #[test]
    fn rejects_inexact_and_garbage() {
        for bad in [
            "0.0000001",
            "-1",
            "",
            ".5",
            "5.",
            "1e",
            "abc",
            "1.2.3",
            "NaN",
            "inf",
            "1e-7",
            "99999999999999999999",
            "1e20",
            " 5 ",
            "5 ",
            "+5",
            "1_000",
            "\u{661}\u{662}",
            "1e-9999999",
        ] {
            assert!(parse_micros(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_micros("0.0000001")
            .unwrap_err()
            .contains("6 decimal places"));
    }
}
