//! The provider's capability lists as the client sees them through writ
//! (see [`crate::imap::capabilities`]): in CAPABILITY data and in
//! `[CAPABILITY ...]` codes of any status; and what of an ENABLE reaches
//! the provider.

use imap_next::imap_types::core::Vec1;
use imap_next::imap_types::response::{Bye, Code, Data, Status, StatusBody, Tagged};

use imap_next::imap_types::extensions::enable::CapabilityEnable;

use super::Session;
use crate::imap::capabilities;

impl Session {
    pub(super) fn capabilities(
        &self,
        list: Vec1<imap_next::imap_types::response::Capability<'static>>,
    ) -> Vec1<imap_next::imap_types::response::Capability<'static>> {
        let filtered = capabilities::filter(list.into_inner(), self.offer());
        if filtered.iter().any(capabilities::is_multiappend) {
            self.multiappend.offered.set(true);
        }
        // `filter` always yields IMAP4rev1 at least.
        Vec1::try_from(filtered)
            .unwrap_or_else(|_| Vec1::from(imap_next::imap_types::response::Capability::Imap4Rev1))
    }

    pub(super) fn rewrite_data(&self, data: Data<'static>) -> Data<'static> {
        match data {
            Data::Capability(list) => Data::Capability(self.capabilities(list)),
            other => other,
        }
    }

    pub(super) fn rewrite_code(&self, code: Option<Code<'static>>) -> Option<Code<'static>> {
        match code {
            Some(Code::Capability(list)) => Some(Code::Capability(self.capabilities(list))),
            other => other,
        }
    }

    pub(super) fn rewrite_status(&self, status: Status<'static>) -> Status<'static> {
        match status {
            Status::Tagged(Tagged { tag, body }) => Status::Tagged(Tagged {
                tag,
                body: StatusBody {
                    code: self.rewrite_code(body.code),
                    ..body
                },
            }),
            Status::Untagged(body) => Status::Untagged(StatusBody {
                code: self.rewrite_code(body.code),
                ..body
            }),
            Status::Bye(bye) => Status::Bye(Bye {
                code: self.rewrite_code(bye.code),
                text: bye.text,
            }),
        }
    }
}

/// What of an ENABLE writ passes on: only what it offers (CONDSTORE and
/// QRESYNC, which the capability list shows only when the provider has
/// them; a provider without them ignores them, RFC 5161 §3.1). The rest
/// is ignored, as RFC 5161 §3.1 has a server ignore what it does not
/// support. `None` when nothing is left.
pub(super) fn offered_to_enable(
    asked: &Vec1<CapabilityEnable<'static>>,
) -> Option<Vec1<CapabilityEnable<'static>>> {
    let offered: Vec<CapabilityEnable<'static>> = asked
        .as_ref()
        .iter()
        .filter(|c| match c {
            CapabilityEnable::CondStore => true,
            CapabilityEnable::Other(_) => c.to_string().eq_ignore_ascii_case("QRESYNC"),
            _ => false,
        })
        .cloned()
        .collect();
    Vec1::try_from(offered).ok()
}
