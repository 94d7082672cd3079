//! Which of the provider's capabilities clients see through writ.
//!
//! An allowlist, not a blocklist: a capability announces commands or
//! response forms, and writ must both parse them (its IMAP is typed) and
//! keep them correct over sealed mail. Anything unknown is dropped: a
//! client then uses the plain RFC 3501 form, which writ handles.
//!
//! Passed when the provider offers them: IMAP4rev1, AUTH=*, SASL-IR, ID,
//! ENABLE, IDLE, UNSELECT, CHILDREN, NAMESPACE, UIDPLUS, CONDSTORE,
//! QRESYNC (a `* VANISHED` renumbers what a plan still has to answer, as
//! EXPUNGE does; the rest of it carries no message content), MOVE,
//! LITERAL+/-, SPECIAL-USE, QUOTA (and QUOTA=RES-*, QUOTASET),
//! APPENDLIMIT, LIST-EXTENDED and LIST-STATUS ([`super::list_extended`]:
//! the extended LIST passes as the client sent it, STATUS SIZE refused;
//! mailbox names and counts only); and, answered by writ itself over opened messages:
//! ESEARCH ([`super::search_return`]: RETURN MIN/MAX/ALL/COUNT; without
//! content keys from the provider's plain SEARCH), SORT and ESORT
//! ([`super::sort`]: sort values from the opened header and the size the
//! client sees), SORT=DISPLAY (DISPLAYFROM, DISPLAYTO: display names of
//! the opened header), THREAD=ORDEREDSUBJECT (a SORT by subject and date),
//! THREAD=REFERENCES and THREAD=REFS ([`super::thread`]: Message-ID,
//! References, In-Reply-To, Subject and Date of the opened header, as
//! Dovecot threads them). Each only when the provider offers it too.
//! Another THREAD algorithm is answered BAD by writ (session), never
//! passed on: the provider would thread the sealed messages by their
//! outer headers. BINARY ([`super::section::binary`]: sections decoded
//! from the opened message, as Dovecot decodes them; APPEND with a
//! literal8 is sealed like any APPEND), also only when the provider
//! offers it. MULTIAPPEND, when the provider offers LITERAL+ too: the
//! intake takes the command apart ([`super::intake::multiappend`]), each
//! message is sealed as a single APPEND's, and one MULTIAPPEND goes on
//! with non-synchronising literals (all or none appended). WITHIN
//! (YOUNGER, OLDER: INTERNALDATE, which sealing keeps; evaluated by writ
//! when content keys come with them, as Dovecot does). SEARCHRES
//! ([`super::saved_result`]: writ keeps `$` as UIDs and puts them in its
//! place before a command goes on; SAVE on SEARCH and SORT).
//!
//! Withheld, with the reason (the README lists the same):
//!
//! - STATUS=SIZE: the provider's figure is the size of the sealed
//!   messages. The plaintext sizes are in the summaries, but the cache
//!   finds a summary by the message's stored header, and listing the
//!   messages of a mailbox that is not selected takes a SELECT of it on
//!   writ's one provider connection, which would deselect the client's
//!   mailbox (and lose its QRESYNC state); a second connection per STATUS
//!   is not worth it. Withheld.
//! - NOTIFY: unsolicited FETCH responses it asks for could carry sealed
//!   content, and its command is not parsed by imap-codec.
//! - PREVIEW, SNIPPET, SEARCH=FUZZY: answered by the provider from
//!   ciphertext.
//! - CATENATE, URLAUTH: parts named by URL are sealed messages at the
//!   provider.
//! - UTF8=ACCEPT: mailbox names and the ENVELOPE strings writ builds
//!   would go as UTF-8, and Dovecot 2.3 (the oracle) does not offer it,
//!   so nothing could hold writ's answers to a provider's; the codec is
//!   built without it.
//! - CONTEXT=*: an UPDATEd search would be evaluated again over opened
//!   messages at every change; not parsed by imap-codec.
//!
//! STARTTLS, LOGINDISABLED and COMPRESS=DEFLATE describe writ's own
//! connection with the client, never the provider's, so they are
//! recomputed here: the provider's COMPRESS would hide its stream from
//! writ, so writ compresses its own side instead ([`super::compress`]),
//! offered after login while no compression is active, whatever the
//! provider offers.

use imap_next::imap_types::extensions::compress::CompressionAlgorithm;
use imap_next::imap_types::extensions::sort::SortAlgorithm;
use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_next::imap_types::response::Capability;

/// What writ's side of the connection offers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The listener can upgrade this connection (not yet TLS).
    pub starttls: bool,
    /// LOGIN and AUTHENTICATE are refused until the connection is secure.
    pub login_disabled: bool,
    /// writ compresses this connection on request (COMPRESS=DEFLATE):
    /// after login, while no compression is active.
    pub compress: bool,
}

/// Capabilities (by name, upper case) that pass although imap-types has no
/// variant for them: they change nothing writ has to parse.
const PASSING_OTHERS: &[&str] = &[
    "SPECIAL-USE",
    "CHILDREN",
    "NAMESPACE",
    "ESEARCH",
    "ESORT",
    // writ keeps `$` itself (super::saved_result); offered with the
    // provider's so that clients see the same server either way.
    "SEARCHRES",
    "LIST-STATUS",
];

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
        // VANISHED renumbers the plans' pending answers by UID
        // (super::sequence::Vanished); the rest of QRESYNC carries no
        // message content.
        | Capability::QResync
        | Capability::Namespace
        // Mailbox names, attributes and counts (super::list_extended):
        // writ passes the extended LIST as the client sent it, SIZE refused.
        | Capability::ListExtended
        // writ decodes BINARY sections of sealed mail itself
        // (super::section::binary).
        | Capability::Binary
        // writ sorts itself (super::sort), DISPLAYFROM and DISPLAYTO too.
        | Capability::Sort(None | Some(SortAlgorithm::Display))
        | Capability::Thread(ThreadingAlgorithm::OrderedSubject)
        // writ threads itself (super::thread).
        | Capability::Thread(ThreadingAlgorithm::References)
        // YOUNGER and OLDER compare INTERNALDATE, which sealing keeps:
        // the provider answers them, writ too when content keys come
        // with them (super::search).
        | Capability::Within => true,
        Capability::Thread(ThreadingAlgorithm::Other(other)) => {
            other.as_ref().eq_ignore_ascii_case("REFS")
        }
        Capability::Other(_) => {
            let name = cap.to_string().to_ascii_uppercase();
            PASSING_OTHERS.contains(&name.as_str()) || name.starts_with("APPENDLIMIT")
        }
        // Recomputed by writ (STARTTLS, LOGINDISABLED), or answered by the
        // provider from ciphertext, or not parsed by writ.
        _ => false,
    }
}

/// MULTIAPPEND: writ seals each message ([`super::intake::multiappend`]).
pub fn is_multiappend(cap: &Capability<'_>) -> bool {
    cap.to_string().eq_ignore_ascii_case("MULTIAPPEND")
}

/// The client's view of a provider capability list.
pub fn filter<'a>(
    provider: impl IntoIterator<Item = Capability<'a>>,
    offer: Offer,
) -> Vec<Capability<'a>> {
    let provider: Vec<Capability<'a>> = provider.into_iter().collect();
    // writ sends a MULTIAPPEND on with non-synchronising literals.
    let literal_plus = provider.contains(&Capability::LiteralPlus);
    let mut out: Vec<Capability<'a>> = Vec::new();
    for cap in provider {
        if literal_plus && is_multiappend(&cap) && !out.contains(&cap) {
            out.push(cap);
            continue;
        }
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
    if offer.compress {
        out.push(Capability::Compress {
            algorithm: CompressionAlgorithm::Deflate,
        });
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
                compress: false,
            },
        );
        assert_eq!(
            names(&out),
            "IMAP4REV1 SASL-IR ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS \
             THREAD=ORDEREDSUBJECT MULTIAPPEND \
             UNSELECT CHILDREN \
             NAMESPACE UIDPLUS LIST-EXTENDED CONDSTORE QRESYNC \
             ESEARCH ESORT SEARCHRES WITHIN LIST-STATUS BINARY MOVE LITERAL+ SPECIAL-USE AUTH=PLAIN \
             AUTH=LOGIN"
        );
    }

    #[test]
    fn multiappend_is_offered_only_with_literal_plus() {
        let offer = Offer {
            starttls: false,
            login_disabled: false,
            compress: false,
        };
        let with = filter(caps("IMAP4rev1 MULTIAPPEND LITERAL+"), offer);
        assert_eq!(names(&with), "IMAP4REV1 MULTIAPPEND LITERAL+");
        let without = filter(caps("IMAP4rev1 MULTIAPPEND LITERAL-"), offer);
        assert_eq!(names(&without), "IMAP4REV1 LITERAL-");
    }

    #[test]
    fn qresync_is_offered_only_when_the_provider_has_it() {
        let offer = Offer {
            starttls: false,
            login_disabled: false,
            compress: false,
        };
        let with = filter(caps("IMAP4rev1 CONDSTORE QRESYNC"), offer);
        assert_eq!(names(&with), "IMAP4REV1 CONDSTORE QRESYNC");
        let without = filter(caps("IMAP4rev1 CONDSTORE"), offer);
        assert_eq!(names(&without), "IMAP4REV1 CONDSTORE");
        // So are SORT=DISPLAY and THREAD=REFS; other algorithms never.
        let with = filter(
            caps("IMAP4rev1 SORT=DISPLAY THREAD=refs THREAD=X-OTHER"),
            offer,
        );
        assert_eq!(names(&with), "IMAP4REV1 SORT=DISPLAY THREAD=refs");
        let without = filter(caps("IMAP4rev1 SORT THREAD=REFERENCES"), offer);
        assert_eq!(names(&without), "IMAP4REV1 SORT THREAD=REFERENCES");
    }

    #[test]
    fn starttls_and_logindisabled_are_writs_own() {
        let out = filter(
            caps("IMAP4rev1 AUTH=PLAIN IDLE"),
            Offer {
                starttls: true,
                login_disabled: true,
                compress: false,
            },
        );
        assert_eq!(names(&out), "IMAP4REV1 IDLE STARTTLS LOGINDISABLED");
        // A provider list without IMAP4rev1 still yields a valid list.
        let out = filter(
            caps("IDLE"),
            Offer {
                starttls: false,
                login_disabled: false,
                compress: false,
            },
        );
        assert_eq!(names(&out), "IMAP4REV1 IDLE");
    }
}
