//! Strict RFC 3339 UTC timestamps (`2026-11-28T10:00:00Z`) to and from seconds since the epoch.

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (optionally with fractional seconds, which are dropped). Only UTC (`Z`) is
/// accepted so that a bundle's times read the same everywhere. `None` on anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let rest = match rest.strip_prefix('.') {
        Some(frac) => {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            &frac[digits..]
        }
        None => rest,
    };
    if rest != "Z" && rest != "z" {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: i64) -> String {
    let mut out = String::with_capacity(20);
    push_rfc3339(&mut out, secs);
    out
}

/// Appends [`format_rfc3339`]'s text (digits written directly: decision records call this on every request).
pub fn push_rfc3339(out: &mut String, secs: i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        out.push_str(&format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            y,
            m,
            d,
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        ));
        return;
    }
    let digits = |out: &mut String, n: i64, width: u32, then: char| {
        for k in (0..width).rev() {
            let digit = (n / 10_i64.pow(k)) % 10;
            out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
        out.push(then);
    };
    digits(out, y, 4, '-');
    digits(out, m, 2, '-');
    digits(out, d, 2, 'T');
    digits(out, rem / 3600, 2, ':');
    digits(out, (rem % 3600) / 60, 2, ':');
    digits(out, rem % 60, 2, 'Z');
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2026-11-28T10:00:00Z", Some(1_795_860_000)),
            ("2024-02-29T23:59:59Z", Some(1_709_251_199)),
            ("2026-11-28T10:00:00.123Z", Some(1_795_860_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2026-11-28T10:00:00+01:00", None),
            ("2026-11-28 10:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-11-28T24:00:00Z", None),
            ("2026-11-28T10:00:00", None),
            ("+026-11-28T10:00:00Z", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_rfc3339(input), *want, "{input}");
            if let Some(secs) = want {
                assert_eq!(parse_rfc3339(&format_rfc3339(*secs)), Some(*secs));
            }
        }
    }

    #[test]
    fn formats_like_the_reference() {
        let reference = |secs: i64| {
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let rem = secs.rem_euclid(86_400);
            format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
        };
        let mut t = -62_135_596_800_i64; // 0001-01-01
        while t < 253_402_300_800 {
            assert_eq!(format_rfc3339(t), reference(t), "{t}");
            t += 86_400 * 37 + 3_661;
        }
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(253_402_300_800), reference(253_402_300_800), "year 10000 falls back");
    }
}
