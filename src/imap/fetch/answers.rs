//! The FETCH plan's handling of one FETCH response of the provider's, by
//! phase: the probe's answer, a sealed message's (summary or whole), a
//! plaintext message's. Part of [`FetchPlan`]; the invariants are stated
//! in `fetch.rs`'s header. Each returns `Err` with the items when the
//! response answers none of the plan's commands (another session's flag
//! change), which the session then passes on.

use super::*;

type Answered = Result<Vec<Output>, Vec1<MessageDataItem<'static>>>;

impl FetchPlan {
    /// The probe's answer for message `seq`.
    pub(super) fn probe_answered(
        &mut self,
        seq: NonZeroU32,
        items: Vec1<MessageDataItem<'static>>,
        keys: &(dyn Keys + Send + Sync),
    ) -> Answered {
        let list = items.as_ref();
        let Some(header) = list.iter().find(|i| is_marker_fields(i)) else {
            return Err(items);
        };
        let Some(uid) = uid_of(list) else {
            return Err(items);
        };
        self.highest_listed = self.highest_listed.max(uid.get());
        let Some(header) = data_bytes(header) else {
            // NIL: another session expunged it, and the provider
            // still numbers it for this one. Answered as the
            // provider answers for plaintext: what is left of it.
            return Ok(fetch(seq, typed(self.gone_items(list)))
                .into_iter()
                .collect());
        };
        // A sealed message remembered as undecryptable is told
        // from the others with the cache's answers, all at once,
        // when the probe is over (`from_cache`).
        let sealed = envelope::detect(&header);
        let key = MessageKey::detected(uid.get(), &header, sealed.as_ref());
        let offered = sealed
            .as_ref()
            .map_or(0, |d| keys.identities(&d.epoch).len());
        let seen = list.iter().any(|i| {
            matches!(i, MessageDataItem::Flags(f)
                if f.contains(&FlagFetch::Flag(Flag::Seen)))
        });
        let list = list.to_vec();
        let done_now = match &sealed {
            None => !self.needs_plain_fetch(),
            Some(_) => !self.needs_summary(),
        };
        if done_now {
            let mut out = typed(self.provider_items(&list, sealed.is_some()));
            if sealed.is_none() && self.wants_seen() && !seen {
                // The probe read the header with PEEK.
                self.mark_seen.insert(uid, seq);
                show_seen(&mut out, &list);
            }
            return Ok(fetch(seq, out).into_iter().collect());
        }
        // Kept until the message is answered: what answers the
        // client, UID and FLAGS; not the marker fields or stored
        // header the probe read to tell sealed mail (most of what
        // a message's probe answer weighs, held for the command).
        let items = list
            .into_iter()
            .filter(|i| {
                matches!(i, MessageDataItem::Uid(_) | MessageDataItem::Flags(_))
                    || self.wanted.iter().any(|n| answers(i, n))
            })
            .collect();
        let is_sealed = sealed.is_some();
        let kept = self.keep_probed(
            uid,
            Probed {
                seq,
                items,
                sealed,
                prefix: Vec::new(),
                seen,
                key,
                offered,
            },
        );
        if !kept {
            return Ok(Vec::new());
        }
        if is_sealed && self.pipelined {
            return Ok(self.pipeline(uid));
        }
        Ok(Vec::new())
    }

    /// A sealed message's stored header and part 1 (`payload`: its whole
    /// stored message), from the sealed phase or a command pipelined or
    /// speculated behind the probe.
    pub(super) fn sealed_answered(
        &mut self,
        items: Vec1<MessageDataItem<'static>>,
        keys: &(dyn Keys + Send + Sync),
        payload: bool,
    ) -> Answered {
        let list = items.as_ref();
        let Some(uid) = uid_of(list) else {
            return Err(items);
        };
        if !payload && self.speculative_dropped(uid, list) {
            return Ok(Vec::new());
        }
        if !self.probed.contains_key(&uid) {
            return Err(items);
        }
        if list.iter().any(is_nil_section) {
            // Expunged by another session since the probe.
            let gone = self.forget(&uid);
            let out = gone.and_then(|p| fetch(p.seq, typed(self.gone_items(&p.items))));
            return Ok(out.into_iter().collect());
        }
        // The prefix, from the stored header (or the whole stored
        // message): what the probe's marker fields do not tell.
        let stored = if payload {
            list.iter()
                .find(|i| matches!(i, MessageDataItem::BodyExt { section: None, .. }))
                .and_then(data_bytes)
        } else {
            None
        };
        let header = match &stored {
            Some(stored) => Some(envelope::stored_prefix(stored)),
            None => list
                .iter()
                .find(|i| is_stored_header(i))
                .and_then(data_bytes)
                .map(|h| envelope::stored_prefix(&h)),
        };
        let (Some(prefix), Some(probed)) = (header, self.probed.get_mut(&uid)) else {
            return Err(items);
        };
        self.probed_bytes = (self.probed_bytes + prefix.len()).saturating_sub(probed.prefix.len());
        probed.prefix = prefix;
        let probed = &self.probed[&uid];
        if payload {
            let bytes = stored.as_ref().map_or(0, |s| s.len());
            let Some(job) = stored.and_then(|stored| self.whole_job(probed, stored)) else {
                return Err(items);
            };
            self.submit(uid, bytes, keys, job);
        } else {
            let Some(job) = self.summary_job(probed, list) else {
                return Err(items);
            };
            // What the job decrypts: part 1, as long as the
            // provider sent it (a hostile one may be large).
            let bytes = list
                .iter()
                .filter_map(|i| match i {
                    MessageDataItem::BodyExt { data, .. } => {
                        data.0.as_ref().map(|d| d.as_ref().len())
                    }
                    _ => None,
                })
                .sum();
            self.submit_summary(uid, bytes, keys, job);
        }
        Ok(self.answer_opened())
    }

    /// A plaintext message's body sections or structure (the plain phase).
    pub(super) fn plain_answered(
        &mut self,
        items: Vec1<MessageDataItem<'static>>,
        written: &answer::ProviderWritten,
    ) -> Answered {
        let list = items.as_ref();
        let Some(uid) = uid_of(list) else {
            return Err(items);
        };
        if !list.iter().any(|i| is_body_item(i) || is_structure_item(i)) {
            // A flag change another session made, not the answer.
            return Err(items);
        }
        let Some(probed) = self.forget(&uid) else {
            return Err(items);
        };
        let mut all = probed.items.clone();
        all.extend(list.iter().cloned());
        let mut out = self.plain_items(&all, written);
        if self.wants_seen() && !probed.seen {
            // FLAGS as the provider reported them after setting
            // \Seen, or as the probe saw them (writ sets it).
            let reported: Vec<MessageDataItem<'static>> = list
                .iter()
                .filter(|i| matches!(i, MessageDataItem::Flags(_)))
                .cloned()
                .collect();
            let flags = if reported.is_empty() {
                &probed.items
            } else {
                &reported
            };
            show_seen(&mut out, flags);
        }
        Ok(fetch(probed.seq, out).into_iter().collect())
    }

    /// An answer of the speculative command ([`FetchPlan::take_speculative`])
    /// writ drops: for a message the probe has not listed (yet), or lists
    /// as plaintext, or with part 1 cut at the command's limit. Another
    /// session's flag change carries no stored header and is never one.
    fn speculative_dropped(&mut self, uid: NonZeroU32, list: &[MessageDataItem<'static>]) -> bool {
        let speculated = self
            .speculated
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&uid.get()));
        if !speculated || !list.iter().any(is_stored_header) {
            return false;
        }
        match self.probed.get(&uid) {
            // The speculative command's answer before the probe's (the
            // provider ran them side by side), or for a message the probe
            // does not list (or has answered): fetched as any other if
            // the probe lists it after all. At most as many as the cap (a
            // hostile provider could send any number): one not recorded
            // is fetched by the retry instead.
            None => {
                if self.unspeculated.len() < MAX_UNSPECULATED {
                    self.unspeculated.insert(uid);
                }
                true
            }
            // Plaintext: the probe or the plain phase answers.
            Some(p) if p.sealed.is_none() => true,
            // Part 1 cut at the speculative command's limit: asked for
            // whole when the phase's commands are over (`retried`).
            Some(_) if part_one_cut(list, self.speculated_part_one) => {
                self.unspeculated.insert(uid);
                true
            }
            Some(_) => false,
        }
    }
}
