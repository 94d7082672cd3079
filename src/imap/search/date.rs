//! Days, and the Date field read as Dovecot reads it for SENTBEFORE,
//! SENTON and SENTSINCE (`message_date_parse`, `index_mail_get_date`).

use super::rfc822::Parser;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The day of a `YYYY-MM-DD...` rendering (chrono's, for dates and
/// date-times in their own offset).
pub fn day_of_rendering(s: &str) -> Option<i64> {
    let year: i64 = s.get(0..4)?.parse().ok()?;
    let month: u32 = s.get(5..7)?.parse().ok()?;
    let day: u32 = s.get(8..10)?.parse().ok()?;
    Some(days_from_civil(year, month, day))
}

fn days_in_month(year: i64, month: u32) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

const MONTHS: [&[u8]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn digits(v: &[u8]) -> Option<i64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0i64, |n, &d| {
        n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })
}

/// The next atom (possibly after whitespace and comments), `None` at the
/// end of the input or on broken syntax.
fn token(p: &mut Parser<'_>) -> Option<Vec<u8>> {
    if p.at_end() {
        return None;
    }
    let mut v = Vec::new();
    p.atom(&mut v).ok()?;
    (!v.is_empty()).then_some(v)
}

fn is_time_sep(c: u8) -> bool {
    c == b':' || c == b'.'
}

/// The wall-clock time of a Date value in seconds since the epoch, as if
/// its zone were UTC (the zone is read, and cancels out: RFC 3501 says to
/// disregard it). `None` if Dovecot would not parse it.
fn wall_clock(value: &[u8]) -> Option<(i64, i64)> {
    let mut p = Parser::new(value);
    p.skip_lwsp().ok()?;
    let mut v = token(&mut p)?;
    if v.len() == 3 {
        // A weekday, which must be followed by a comma.
        if p.peek() != b',' {
            return None;
        }
        p.pos += 1;
        p.skip_lwsp().ok()?;
        v = token(&mut p)?;
    }
    if !(1..=2).contains(&v.len()) {
        return None;
    }
    let mday = digits(&v)?;
    let month = token(&mut p)?;
    let mon = MONTHS
        .iter()
        .position(|m| month.len() >= 3 && month[..3].eq_ignore_ascii_case(m))?;
    let y = token(&mut p)?;
    let mut year = digits(&y)?;
    match y.len() {
        2 if year < 70 => year += 2000,
        2 => year += 1900,
        4 if year >= 1900 => {}
        _ => return None,
    }
    let h = token(&mut p)?;
    if !(1..=2).contains(&h.len()) {
        return None;
    }
    let hour = digits(&h)?;
    if !is_time_sep(p.peek()) || p.at_end() {
        return None;
    }
    p.pos += 1;
    p.skip_lwsp().ok()?;
    let mut m = Vec::new();
    if !p.at_end() {
        p.atom(&mut m).ok()?;
    }
    if m.len() != 2 {
        return None;
    }
    let min = digits(&m)?;
    let mut sec = 0;
    if !p.at_end() && is_time_sep(p.peek()) {
        p.pos += 1;
        p.skip_lwsp().ok()?;
        let s = token(&mut p)?;
        if s.len() != 2 {
            return None;
        }
        sec = digits(&s)?;
    }
    let zone = if p.at_end() {
        0
    } else {
        let mut z = Vec::new();
        p.atom(&mut z).ok()?;
        zone_offset(&z)
    };
    // utc_mktime(): every field in range (a leap second counts as :59).
    let sec = if sec == 60 { 59 } else { sec };
    let month = u32::try_from(mon + 1).ok()?;
    if mday < 1 || mday > days_in_month(year, month) || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(year, month, 1) + mday - 1;
    let t = days * 86_400 + hour * 3600 + min * 60 + sec;
    (t != -1).then_some((t, zone))
}

/// Minutes east of UTC of a zone as Dovecot reads it (unknown zones: 0).
fn zone_offset(z: &[u8]) -> i64 {
    match z {
        [sign @ (b'+' | b'-'), d @ ..] if d.len() == 4 && d.iter().all(u8::is_ascii_digit) => {
            let n = |i: usize| i64::from(d[i] - b'0');
            let off = (n(0) * 10 + n(1)) * 60 + n(2) * 10 + n(3);
            if *sign == b'+' { off } else { -off }
        }
        [c] => {
            // Military zones, computed from the letter as written.
            let upper = c.to_ascii_uppercase();
            let raw = i64::from(*c);
            if upper < b'J' {
                (raw - i64::from(b'A') + 1) * 60
            } else if upper == b'J' {
                0
            } else if upper <= b'M' {
                (raw - i64::from(b'A')) * 60
            } else if upper < b'Z' {
                (i64::from(b'M') - raw) * 60
            } else {
                0
            }
        }
        [a, b, b'T'] => {
            let base = match a.to_ascii_uppercase() {
                b'E' => -5 * 60,
                b'C' => -6 * 60,
                b'M' => -7 * 60,
                b'P' => -8 * 60,
                _ => return 0,
            };
            match b.to_ascii_uppercase() {
                b'D' => base + 60,
                b'S' => base,
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// The day Dovecot gives a message's Date value (the first Date field):
/// the day of its wall-clock time. A missing or unparsable Date counts as
/// 1970-01-01, and times are kept in 32 bits as Dovecot's cache keeps
/// them.
pub fn sent_day(value: Option<&[u8]>) -> i64 {
    let (wall, zone) = value.and_then(wall_clock).unwrap_or((0, 0));
    // Dovecot stores the UTC time as an unsigned 32-bit number.
    let utc = wall - zone * 60;
    let stored = i64::from(utc as u32);
    (stored + zone * 60).div_euclid(86_400)
}

/// The sent time Dovecot sorts a message by (SORT DATE): the first Date
/// field's time in UTC, kept in 32 unsigned bits as Dovecot's cache keeps
/// it; 0 when the field is missing or unparsable (the caller then uses
/// INTERNALDATE, as Dovecot does).
pub fn sent_time(value: Option<&[u8]>) -> i64 {
    let (wall, zone) = value.and_then(wall_clock).unwrap_or((0, 0));
    i64::from((wall - zone * 60) as u32)
}
