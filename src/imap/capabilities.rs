//! Which of the provider's capabilities clients see through writ.
//!
//! An allowlist, not a blocklist: a capability announces commands or
//! response forms, and writ must both parse them (its IMAP is typed) and
//! keep them correct over sealed mail. SORT, THREAD, SEARCH=FUZZY, PREVIEW
//! and BINARY would be answered by the provider from ciphertext; COMPRESS
//! would hide the stream from writ; ESEARCH, CATENATE, URLAUTH, UTF8 and
//! the like are not parsed yet. Anything unknown is dropped: a client then
//! uses the plain RFC 3501 form, which writ handles.
//!
//! STARTTLS and LOGINDISABLED describe writ's own connection with the
//! client, never the provider's, so they are recomputed here.

use imap_next::imap_types::response::Capability;

/// What writ's side of the connection offers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The listener can upgrade this connection (not yet TLS).
    pub starttls: bool,
    /// LOGIN and AUTHENTICATE are refused until the connection is secure.
    pub login_disabled: bool,
}

/// Capabilities (by name, upper case) that pass although imap-types has no
/// variant for them: they change nothing writ has to parse.
const PASSING_OTHERS: &[&str] = &["SPECIAL-USE", "CHILDREN", "NAMESPACE"];

/// Is this provider capability shown to clients?
fn passes(cap: &Capability<'_>) -> bool {
    match cap {
        Capability::Imap4Rev1
        | Capability::Auth(_)
        | Capability::Idle
        | Capability::SaslIr
        | Capability::Enable
        | Capability::Quota
        | Capability::QuotaRes(_)
        | Capability::QuotaSet
        | Capability::LiteralPlus
        | Capability::LiteralMinus
        | Capability::Move
        | Capability::Id
        | Capability::Unselect
        | Capability::UidPlus
        | Capability::CondStore
        | Capability::Namespace => true,
        Capability::Other(_) => {
            let name = cap.to_string().to_ascii_uppercase();
            PASSING_OTHERS.contains(&name.as_str()) || name.starts_with("APPENDLIMIT")
        }
        // Recomputed by writ (STARTTLS, LOGINDISABLED), or answered by the
        // provider from ciphertext, or not parsed by writ.
        _ => false,
    }
}

/// The client's view of a provider capability list.
pub fn filter<'a>(
    provider: impl IntoIterator<Item = Capability<'a>>,
    offer: Offer,
) -> Vec<Capability<'a>> {
    let mut out: Vec<Capability<'a>> = Vec::new();
    for cap in provider {
        if offer.login_disabled && matches!(cap, Capability::Auth(_)) {
            // RFC 3501 §6.2.3: no mechanisms to offer before TLS.
            continue;
        }
        if passes(&cap) && !out.contains(&cap) {
            out.push(cap);
        }
    }
    if !out.contains(&Capability::Imap4Rev1) {
        out.insert(0, Capability::Imap4Rev1);
    }
    if offer.starttls {
        out.push(Capability::StartTls);
    }
    if offer.login_disabled {
        out.push(Capability::LoginDisabled);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::core::Atom;

    fn caps(names: &str) -> Vec<Capability<'static>> {
        names
            .split_whitespace()
            .map(|n| Capability::from(Atom::try_from(n.to_owned()).unwrap()))
            .collect()
    }

    fn names(list: &[Capability<'_>]) -> String {
        list.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn drops_what_would_be_answered_from_ciphertext() {
        let dovecot = caps(
            "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES \
             THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN \
             NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT \
             SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY \
             PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE COMPRESS=DEFLATE \
             X-GM-EXT-1 SEARCH=FUZZY AUTH=PLAIN AUTH=LOGIN STARTTLS LOGINDISABLED",
        );
        let out = filter(
            dovecot,
            Offer {
                starttls: false,
                login_disabled: false,
            },
        );
        assert_eq!(
            names(&out),
            "IMAP4REV1 SASL-IR ID ENABLE IDLE UNSELECT CHILDREN NAMESPACE UIDPLUS CONDSTORE \
             MOVE LITERAL+ SPECIAL-USE AUTH=PLAIN AUTH=LOGIN"
        );
    }

    #[test]
    fn starttls_and_logindisabled_are_writs_own() {
        let out = filter(
            caps("IMAP4rev1 AUTH=PLAIN IDLE"),
            Offer {
                starttls: true,
                login_disabled: true,
            },
        );
        assert_eq!(names(&out), "IMAP4REV1 IDLE STARTTLS LOGINDISABLED");
        // A provider list without IMAP4rev1 still yields a valid list.
        let out = filter(
            caps("IDLE"),
            Offer {
                starttls: false,
                login_disabled: false,
            },
        );
        assert_eq!(names(&out), "IMAP4REV1 IDLE");
    }
}
