//! Who is logged in and which mailbox is selected, as the cache needs to
//! know them. Read from the commands and responses passing through; never
//! logged (a login name is personal data).

use imap_next::imap_types::auth::AuthMechanism;
use imap_next::imap_types::mailbox::Mailbox;

/// The name of a mailbox as the cache keys it (INBOX in any case is INBOX).
pub fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

/// The account a SASL exchange logs in as, from the mechanism and the
/// client's first message (decoded). `None` when it cannot be told.
pub fn sasl_account(mechanism: &AuthMechanism<'_>, first: &[u8]) -> Option<String> {
    let name = mechanism.to_string().to_ascii_uppercase();
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    match name.as_str() {
        // authzid NUL authcid NUL password (RFC 4616)
        "PLAIN" => {
            let mut parts = first.split(|&b| b == 0);
            let authzid = parts.next()?;
            let authcid = parts.next()?;
            text(authzid).or_else(|| text(authcid))
        }
        // The first answer is the user name.
        "LOGIN" => text(first),
        // user=NAME ^A auth=Bearer TOKEN ^A ^A
        "XOAUTH2" => first
            .split(|&b| b == 1)
            .find_map(|kv| kv.strip_prefix(b"user="))
            .and_then(text),
        // gs2 header: n,a=NAME, ... (RFC 7628)
        "OAUTHBEARER" => first
            .split(|&b| b == 1)
            .next()?
            .split(|&b| b == b',')
            .find_map(|kv| kv.strip_prefix(b"a="))
            .and_then(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mech(s: &str) -> AuthMechanism<'static> {
        AuthMechanism::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn accounts_from_sasl() {
        assert_eq!(
            sasl_account(&mech("PLAIN"), b"\0alice\0pw").as_deref(),
            Some("alice")
        );
        assert_eq!(
            sasl_account(&mech("plain"), b"admin\0alice\0pw").as_deref(),
            Some("admin")
        );
        assert_eq!(sasl_account(&mech("LOGIN"), b"bob").as_deref(), Some("bob"));
        assert_eq!(
            sasl_account(&mech("XOAUTH2"), b"user=carol@x\x01auth=Bearer t\x01\x01").as_deref(),
            Some("carol@x")
        );
        assert_eq!(
            sasl_account(&mech("OAUTHBEARER"), b"n,a=dee@x,\x01host=h\x01\x01").as_deref(),
            Some("dee@x")
        );
        assert_eq!(sasl_account(&mech("PLAIN"), b"garbage"), None);
        assert_eq!(sasl_account(&mech("GSSAPI"), b"x"), None);
    }
}
