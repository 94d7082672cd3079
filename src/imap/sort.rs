//! SORT and ESORT (RFC 5256, RFC 5267) over opened messages: the sort
//! program of one command, the values each matching message is sorted by
//! ([`crate::imap::search::sort_keys`]: from the opened header, the size
//! the client sees and INTERNALDATE), and the order, as Dovecot 2.3 orders
//! them: each key in turn (REVERSE turning that key only), ties by
//! sequence number, ascending.
//!
//! The plan that gathers the messages is the content SEARCH's
//! ([`super::search_plan`]); this file holds what is SORT's own.
//!
//! Caps: [`MAX_SORT_KEYS`] keys per command (more is BAD, as Dovecot
//! answers more than its program size); a key repeated is kept once (it
//! cannot change the order); a string value is kept to
//! [`MAX_SORT_STRING`] octets (two values equal that far sort by their
//! next key, and for ORDEREDSUBJECT share a thread: the only place writ
//! may answer differently from Dovecot). So a SORT holds at most 6 such
//! strings (SUBJECT, FROM, TO, CC, DISPLAYFROM, DISPLAYTO), 3 KiB, per
//! matching message. DISPLAYFROM and DISPLAYTO (SORT=DISPLAY, RFC 5957)
//! sort by the display name of the first address, else its
//! `local@domain` ([`sort_keys::display`]).
//!
//! THREAD=ORDEREDSUBJECT (RFC 5256 §2.1) is a SORT by (SUBJECT, DATE)
//! whose runs of equal base subjects are threads ([`ordered_subject`]), as
//! Dovecot builds them: threads in the order of their first message's
//! date (sent, else INTERNALDATE), then of its number; written flat,
//! without recursion (`(1)`, `(1 2)`, `(1 (2)(3))`).

use std::cmp::Ordering;
use std::num::NonZeroU32;

use imap_next::imap_types::extensions::sort::{SortCriterion, SortKey};

use super::search::sort_keys;

/// Keys one SORT may have (Dovecot's program holds 9 and an end mark).
pub const MAX_SORT_KEYS: usize = 9;
/// Octets of one string value (subject, address) kept for sorting.
pub const MAX_SORT_STRING: usize = 512;

/// What a SORT over a cap is told (tagged BAD).
pub mod why {
    pub const KEYS: &str = "Too many SORT criteria: at most 9";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Arrival,
    Cc,
    Date,
    DisplayFrom,
    DisplayTo,
    From,
    Size,
    Subject,
    To,
}

/// The sort program of one command.
#[derive(Debug, Clone)]
pub struct Program {
    keys: Vec<(Key, bool)>,
}

/// One value a message is sorted by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Number(i64),
    Text(String),
}

/// A matching message and its values.
#[derive(Debug)]
pub struct Entry {
    pub values: Vec<Value>,
    pub seq: NonZeroU32,
    /// What the answer names it by (sequence number, or UID).
    pub id: NonZeroU32,
}

impl Program {
    pub fn new(criteria: &[SortCriterion]) -> Result<Program, &'static str> {
        if criteria.len() > MAX_SORT_KEYS {
            return Err(why::KEYS);
        }
        let mut keys: Vec<(Key, bool)> = Vec::new();
        for c in criteria {
            let key = match c.key {
                SortKey::Arrival => Key::Arrival,
                SortKey::Cc => Key::Cc,
                SortKey::Date => Key::Date,
                SortKey::From => Key::From,
                SortKey::Size => Key::Size,
                SortKey::Subject => Key::Subject,
                SortKey::To => Key::To,
                SortKey::DisplayFrom => Key::DisplayFrom,
                SortKey::DisplayTo => Key::DisplayTo,
            };
            if !keys.iter().any(|(k, _)| *k == key) {
                keys.push((key, c.reverse));
            }
        }
        Ok(Program { keys })
    }

    /// The values of one message: `message` begins with its (opened)
    /// header; `size` is the RFC822.SIZE the client sees; `internal` is
    /// INTERNALDATE in seconds since the epoch.
    pub fn values(&self, message: &[u8], size: u64, internal: Option<i64>) -> Vec<Value> {
        let internal = internal.unwrap_or(0);
        self.keys
            .iter()
            .map(|(key, _)| match key {
                Key::Arrival => Value::Number(internal),
                Key::Date => Value::Number(match sort_keys::sent(message) {
                    0 => internal,
                    t => t,
                }),
                Key::Size => Value::Number(i64::try_from(size).unwrap_or(i64::MAX)),
                Key::Subject => text(sort_keys::subject(message)),
                Key::From => text(sort_keys::address(message, "From")),
                Key::To => text(sort_keys::address(message, "To")),
                Key::Cc => text(sort_keys::address(message, "Cc")),
                Key::DisplayFrom => text(sort_keys::display(message, "From")),
                Key::DisplayTo => text(sort_keys::display(message, "To")),
            })
            .collect()
    }

    /// Puts `entries` in the program's order.
    pub fn order(&self, entries: &mut [Entry]) {
        entries.sort_by(|a, b| {
            for (i, (_, reverse)) in self.keys.iter().enumerate() {
                let o = a.values.get(i).cmp(&b.values.get(i));
                if o != Ordering::Equal {
                    return if *reverse { o.reverse() } else { o };
                }
            }
            a.seq.cmp(&b.seq)
        });
    }
}

impl Program {
    /// THREAD=ORDEREDSUBJECT's program: SUBJECT, then DATE.
    pub fn ordered_subject() -> Program {
        Program {
            keys: vec![(Key::Subject, false), (Key::Date, false)],
        }
    }
}

/// The `* THREAD` response of THREAD=ORDEREDSUBJECT for `entries` put in
/// [`Program::ordered_subject`]'s order, ending in CRLF.
pub fn ordered_subject(entries: &[Entry]) -> Vec<u8> {
    // Runs of equal base subject, with the first message's date.
    let mut threads: Vec<(i64, Vec<NonZeroU32>)> = Vec::new();
    let mut previous: Option<&Value> = None;
    for e in entries {
        let subject = e.values.first();
        let date = match e.values.get(1) {
            Some(Value::Number(n)) => *n,
            _ => 0,
        };
        match threads.last_mut() {
            Some((_, ids)) if previous == subject => ids.push(e.id),
            _ => threads.push((date, vec![e.id])),
        }
        previous = subject;
    }
    threads.sort_by(|a, b| a.0.cmp(&b.0).then(a.1[0].cmp(&b.1[0])));
    let mut out = String::from("* THREAD ");
    for (_, ids) in &threads {
        match ids.as_slice() {
            [one] => out.push_str(&format!("({one})")),
            [one, two] => out.push_str(&format!("({one} {two})")),
            [first, rest @ ..] => {
                out.push_str(&format!("({first} "));
                for id in rest {
                    out.push_str(&format!("({id})"));
                }
                out.push(')');
            }
            [] => {}
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn text(mut s: String) -> Value {
    if s.len() > MAX_SORT_STRING {
        let mut end = MAX_SORT_STRING;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    Value::Text(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(keys: &[(SortKey, bool)]) -> Program {
        let c: Vec<SortCriterion> = keys
            .iter()
            .map(|(key, reverse)| SortCriterion {
                key: key.clone(),
                reverse: *reverse,
            })
            .collect();
        Program::new(&c).unwrap()
    }

    fn entry(p: &Program, seq: u32, m: &[u8], size: u64) -> Entry {
        let seq = NonZeroU32::new(seq).unwrap();
        Entry {
            values: p.values(m, size, Some(0)),
            seq,
            id: seq,
        }
    }

    #[test]
    fn keys_in_turn_reverse_per_key_ties_by_sequence() {
        let p = program(&[(SortKey::Subject, false), (SortKey::Size, true)]);
        let mut e = vec![
            entry(&p, 1, b"Subject: b\r\n\r\n", 10),
            entry(&p, 2, b"Subject: Re: a\r\n\r\n", 10),
            entry(&p, 3, b"Subject: a\r\n\r\n", 20),
            entry(&p, 4, b"Subject: b\r\n\r\n", 10),
        ];
        p.order(&mut e);
        let seqs: Vec<u32> = e.iter().map(|e| e.seq.get()).collect();
        assert_eq!(seqs, [3, 2, 1, 4]);
    }

    #[test]
    fn ordered_subject_threads_are_runs_of_one_base_subject() {
        let p = Program::ordered_subject();
        let mut e = vec![
            entry(
                &p,
                1,
                b"Subject: b\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n",
                0,
            ),
            entry(
                &p,
                2,
                b"Subject: Re: a\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n",
                0,
            ),
            entry(
                &p,
                3,
                b"Subject: a\r\nDate: 4 Jan 2020 00:00 +0000\r\n\r\n",
                0,
            ),
            entry(
                &p,
                4,
                b"Subject: Fwd: a\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
                0,
            ),
            entry(
                &p,
                5,
                b"Subject: c\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
                0,
            ),
            entry(
                &p,
                6,
                b"Subject: b\r\nDate: 5 Jan 2020 00:00 +0000\r\n\r\n",
                0,
            ),
        ];
        p.order(&mut e);
        assert_eq!(
            String::from_utf8(ordered_subject(&e)).unwrap(),
            "* THREAD (4 (2)(3))(5)(1 6)\r\n"
        );
        assert_eq!(ordered_subject(&[]), b"* THREAD \r\n");
    }

    #[test]
    fn display_keys_sort_by_name_else_address() {
        let p = program(&[(SortKey::DisplayFrom, false), (SortKey::DisplayTo, true)]);
        let mut e = vec![
            entry(&p, 1, b"From: zed@x\r\nTo: a@x\r\n\r\n", 0),
            entry(&p, 2, b"From: \"Amy\" <z@x>\r\nTo: a@x\r\n\r\n", 0),
            entry(&p, 3, b"To: a@x\r\n\r\n", 0),
            entry(&p, 4, b"From: Amy <y@x>\r\nTo: Bo <b@x>\r\n\r\n", 0),
            entry(&p, 5, b"From: zed@x\r\nTo: a@x\r\n\r\n", 0),
        ];
        p.order(&mut e);
        let seqs: Vec<u32> = e.iter().map(|e| e.seq.get()).collect();
        // Missing From first; equal names by the reversed To, then by
        // sequence number.
        assert_eq!(seqs, [3, 4, 2, 1, 5]);
    }

    #[test]
    fn caps_are_refused() {
        let ten: Vec<SortCriterion> = (0..10)
            .map(|_| SortCriterion {
                key: SortKey::Size,
                reverse: false,
            })
            .collect();
        assert_eq!(Program::new(&ten).unwrap_err(), why::KEYS);
        let long = format!("Subject: {}\r\n\r\n", "x".repeat(10_000));
        let p = program(&[(SortKey::Subject, false)]);
        let Value::Text(t) = &p.values(long.as_bytes(), 0, None)[0] else {
            panic!()
        };
        assert_eq!(t.len(), MAX_SORT_STRING);
    }
}
