//! Judged delivery (`[scanner]` on, or `[auth]` on a relay listener): the
//! client's whole message is spooled, verified (`[auth]`:
//! `crate::smtp::inbound_auth`) and judged by the content scanner, and only
//! then sealed (writ's fields first) and sent to the provider; the
//! client's final reply still comes only after the provider's.
//!
//! - The spool holds the message sealed under a key of its own, held only
//!   in memory ([`super::spool`]: plaintext never touches disk): in memory
//!   up to [`SPOOL_IN_MEMORY`] (4 MiB), past that in an unnamed temporary
//!   file (`O_TMPFILE`, or unlinked at creation, in `[seal] temp_dir` or
//!   the system's), gone when the message is done. It is bounded by
//!   the session's data decoder (`smtp.max_message_size`; past twice that
//!   the session closes). Writes to the file, and reading it back, run on
//!   blocking threads: a slow disk never holds a runtime thread.
//! - Header fields the sender wrote with the names writ adds are removed as
//!   the data is spooled (`sender_fields`): the scanner's (`X-Spam`,
//!   `X-Spamd-Result`, `X-Spam-Action`) when the scanner runs;
//!   `X-DMARC-Quarantine` and every Authentication-Results field claiming
//!   writ's authserv-id when `[auth]` runs. Only writ's own verdicts are
//!   outside, and an unscanned message (too large, scanner failed open) has
//!   no scanner fields.
//! - Verification comes first: a DMARC `p=reject` failure under
//!   `[auth] dmarc = "enforce"` is refused 550 5.7.1 before the scanner
//!   sees the message. A message past `auth.max_message_bytes` is recorded
//!   `none (message too large to verify)`, never refused for DMARC.
//! - With `[auth.arc]`, a verified message is sealed into memory, writ's
//!   ARC set computed over the sealed message (`crate::smtp::arc_seal`),
//!   and set + sealed message streamed to the provider; a message that
//!   cannot be ARC-sealed is delivered without it (logged, counted).
//! - While the data comes in and is judged, DATA is not open at the
//!   provider: it is kept awake with `NOOP` as in sealed delivery. A
//!   refusal (DMARC reject → 550 5.7.1; scanner's reject → 554 5.7.1, soft
//!   reject/greylist → 451 4.7.1, no verdict with `on_failure = "tempfail"`
//!   → 451 4.7.1) resets the provider's transaction: the provider never
//!   sees the message.
//! - Every wait is bounded as in sealed delivery (`smtp.data_timeout_secs`,
//!   the whole phase `smtp.data_max_secs`), the scanner exchange by
//!   `scanner.timeout_secs`, verification by `auth.timeout_secs`. Logs
//!   name the outcome and sizes, never content.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use super::spool::{Spool, SpoolReader};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{ChannelWriter, Output, Pump, SEAL_QUEUE, read_chunk};
use crate::admin::names;
use crate::envelope::Sealer;
use crate::smtp::arc_seal::ArcSigner;
use crate::smtp::connection::{Conn, End};
use crate::smtp::inbound_auth::{ArcInput, Identities, InboundAuth};
use crate::smtp::reply::Reply;
use crate::smtp::scanner::{SCANNER_FIELDS, Scanner, Verdict};
use crate::smtp::sender_fields::{QUARANTINE_FIELD, Removed, SenderFieldFilter};
use crate::smtp::session::{Step, UpstreamFailure};

/// Plaintext kept in memory before the spool moves to a temporary file.
const SPOOL_IN_MEMORY: usize = 4 * 1024 * 1024;

impl Conn {
    /// Spools, verifies and scans, then seals and delivers one message
    /// (or refuses it).
    pub(super) async fn scanned_message(
        &mut self,
        r354: Reply,
        sealer: Sealer,
        scanner: Option<Arc<Scanner>>,
        auth: Option<Arc<InboundAuth>>,
    ) -> Result<Step, End> {
        self.reply(&r354);
        self.flush(true).await?;
        let started = Instant::now();
        let mut decoder = self.session.data_decoder();
        // `None` (no randomness for its key): the data is still read to
        // its end, then the message refused as one that cannot be spooled.
        let mut spool = Spool::new(SPOOL_IN_MEMORY, self.shared.seal.temp_dir.as_deref()).ok();
        let removed = Removed {
            scanner: scanner.is_some(),
            authserv_id: auth.as_ref().map(|a| a.authserv_id().to_string()),
        };
        let spooled = self
            .spool(&mut decoder, &mut spool, started, removed)
            .await?;
        let size = decoder.size();
        if let Err(step) = self.session.message_received(decoder.flags) {
            self.reset_upstream().await;
            self.refused("bad-data", size);
            return Ok(step);
        }
        let (true, Some(spool)) = (spooled, spool) else {
            tracing::error!(
                "cannot spool the message for the scanner (temp dir full or unwritable)"
            );
            self.reset_upstream().await;
            self.refused("spool-failed", size);
            return Ok(Step::Reply(
                self.session.delivered(Err(UpstreamFailure::SealFailed)),
            ));
        };
        let judged = self
            .judge(spool, size, scanner.as_deref(), auth.as_ref())
            .await;
        let (spool, fields, arc) = match judged {
            Ok(judged) => judged,
            Err((reason, reply)) => {
                self.reset_upstream().await;
                self.refused(reason, size);
                return Ok(Step::Reply(self.session.delivered(Ok(reply))));
            }
        };
        let mut outside: Vec<String> = Vec::new();
        if scanner.is_some() {
            outside.extend(SCANNER_FIELDS.iter().map(|f| f.to_string()));
        }
        if auth.is_some() {
            outside.push(QUARANTINE_FIELD.to_string());
        }
        let sealer = sealer.allow_outside(outside);
        let signer = auth.and_then(|a| a.arc.clone());
        let (job, out_rx) = seal_job(sealer, spool, fields, signer, arc);
        let pump = Pump {
            to_seal: None,
            pending: None,
            sealed: Some(out_rx),
            reading: false,
            output: Output::Waiting,
            started,
            active: Instant::now(),
            next_noop: Instant::now() + self.shared.provider_keepalive,
        };
        self.run_pump(&mut decoder, pump, job).await
    }

    /// Reads the client's data into the spool, keeping the provider awake.
    /// `Ok(false)`: the spool could not be written (the data was still
    /// read to its end).
    async fn spool(
        &mut self,
        decoder: &mut crate::smtp::data::DataDecoder,
        spool: &mut Option<Spool>,
        started: Instant,
        removed: Removed,
    ) -> Result<bool, End> {
        let deadline = started + self.shared.data_max;
        let mut next_noop = Instant::now() + self.shared.provider_keepalive;
        let mut active = Instant::now();
        let mut spooled = spool.is_some();
        // The sender's own fields named like writ's never reach the spool
        // (see `sender_fields`).
        let mut filter = SenderFieldFilter::new(removed);
        let mut kept = Vec::new();
        loop {
            let wait = self
                .data_wait(deadline)
                .min((active + self.shared.data_timeout).saturating_duration_since(Instant::now()));
            let until_noop = next_noop.saturating_duration_since(Instant::now());
            let keepalive = self.upstream.is_some() && until_noop < wait;
            let limit = if keepalive { until_noop } else { wait };
            match timeout(limit, read_chunk(&mut self.client, decoder)).await {
                Ok(Ok(chunk)) => {
                    active = Instant::now();
                    kept.clear();
                    filter.push(&chunk.data, &mut kept);
                    if chunk.last {
                        filter.finish(&mut kept);
                    }
                    if spooled && (!kept.is_empty() || chunk.last) {
                        spooled = spool_write(spool, &mut kept, chunk.last).await;
                    }
                    if chunk.last {
                        return Ok(spooled);
                    }
                }
                // The client went away: DATA was never opened at the
                // provider, so nothing is delivered.
                Ok(Err(e)) => return Err(e),
                Err(_) if keepalive => {
                    next_noop = Instant::now() + self.shared.provider_keepalive;
                    let alive = match self.upstream.as_mut() {
                        Some(up) => matches!(up.command("NOOP").await, Ok(r) if r.is_positive()),
                        None => false,
                    };
                    if !alive {
                        tracing::warn!(
                            "provider connection lost while a message was being received"
                        );
                        self.drop_upstream();
                    }
                }
                Err(_) => return Err(self.data_timed_out().await),
            }
        }
    }

    /// Verification and the scanner's verdict on the spooled message: the
    /// fields to lead it and what writ's ARC set needs, or why and how it
    /// is refused.
    async fn judge(
        &mut self,
        spool: Spool,
        size: u64,
        scanner: Option<&Scanner>,
        auth: Option<&Arc<InboundAuth>>,
    ) -> Result<(Spool, Vec<u8>, Option<ArcInput>), (&'static str, Reply)> {
        let verify = auth.is_some_and(|a| size <= a.max_message);
        let scan = scanner.is_some_and(|s| size <= s.max_message);
        let (spool, mut message) = if verify || scan {
            read_back(spool).await.map_err(|reply| ("scanner", reply))?
        } else {
            (spool, Vec::new())
        };
        let mut fields = Vec::new();
        let mut arc = None;
        if let Some(auth) = auth {
            if verify {
                let (helo, mail_from) = self.session.sender_identities();
                let who = Identities {
                    client: self.peer.ip(),
                    helo: helo.to_string(),
                    mail_from: mail_from.to_string(),
                };
                let (back, judgement) = auth.judge(message, who).await;
                message = back;
                metrics::counter!(names::AUTH_VERDICTS_TOTAL, "dmarc" => judgement.dmarc, "action" => judgement.action)
                    .increment(1);
                if let Some(reply) = judgement.refuse {
                    tracing::info!(
                        bytes = size,
                        "message refused: it fails its From domain's DMARC policy (p=reject)"
                    );
                    return Err(("dmarc", reply));
                }
                fields.extend_from_slice(&judgement.fields);
                arc = judgement.arc;
            } else {
                tracing::warn!(
                    bytes = size,
                    "message larger than auth.max_message_bytes: delivered unverified"
                );
                metrics::counter!(names::AUTH_VERDICTS_TOTAL, "dmarc" => "unverified", "action" => "too-large")
                    .increment(1);
                fields.extend_from_slice(&auth.unverified("message too large to verify"));
            }
        }
        if let Some(scanner) = scanner {
            let verdict = self.scan(message, size, scanner).await;
            fields.extend_from_slice(&verdict.map_err(|reply| ("scanner", reply))?);
        }
        Ok((spool, fields, arc))
    }

    /// The scanner's verdict on the message (`message`: the whole of it,
    /// or empty when past `scanner.max_message_bytes`): the fields to lead
    /// it (empty when unscanned), or the reply refusing it.
    async fn scan(
        &mut self,
        message: Vec<u8>,
        size: u64,
        scanner: &Scanner,
    ) -> Result<Vec<u8>, Reply> {
        let count = |outcome: &'static str, delivered: &'static str| {
            metrics::counter!(names::SCANNER_VERDICTS_TOTAL, "outcome" => outcome, "delivered" => delivered)
                .increment(1);
        };
        if size > scanner.max_message {
            tracing::warn!(
                bytes = size,
                "message larger than scanner.max_message_bytes: delivered unscanned"
            );
            count("too-large", "true");
            return Ok(Vec::new());
        }
        let (helo, mail_from) = self.session.sender_identities();
        let envelope = crate::smtp::scanner::ScanEnvelope {
            client: self.peer.ip(),
            helo,
            mail_from,
            rcpt_to: self.session.accepted_recipients(),
        };
        match scanner.check(message, &envelope).await {
            Ok(Verdict::Deliver { fields, flagged }) => {
                count(if flagged { "flagged" } else { "clean" }, "true");
                Ok(fields)
            }
            Ok(Verdict::Refuse(reply)) => {
                tracing::info!(
                    code = reply.code,
                    bytes = size,
                    "message refused by the content scanner"
                );
                count(
                    if reply.code >= 500 {
                        "reject"
                    } else {
                        "tempfail"
                    },
                    "false",
                );
                Err(reply)
            }
            Err(e) if scanner.fail_open => {
                tracing::warn!(error = %e, "content scanner failed: message delivered unscanned (scanner.on_failure = \"deliver\")");
                count("failed", "true");
                Ok(Vec::new())
            }
            Err(e) => {
                tracing::warn!(error = %e, "content scanner failed: message deferred (scanner.on_failure = \"tempfail\")");
                count("failed", "false");
                Err(Reply::new(
                    451,
                    "4.7.1 Message could not be scanned; try again later",
                ))
            }
        }
    }
}

/// Reads the spooled message back into memory, on a blocking thread.
async fn read_back(spool: Spool) -> Result<(Spool, Vec<u8>), Reply> {
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = spool.into_reader()?;
        let mut message = Vec::new();
        reader.read_to_end(&mut message)?;
        Ok::<_, io::Error>((reader.into_spool(), message))
    })
    .await;
    match read {
        Ok(Ok((spool, message))) => Ok((spool, message)),
        _ => {
            tracing::error!("cannot read the spooled message back for verification or scanning");
            Err(Reply::new(
                451,
                "4.3.0 Could not scan the message; try again later",
            ))
        }
    }
}

/// The blocking seal job for a judged message: `fields`, then the spool,
/// sealed (and ARC-sealed when `signer` and `arc` are there), handed back
/// on the returned channel.
fn seal_job(
    sealer: Sealer,
    spool: Spool,
    fields: Vec<u8>,
    signer: Option<Arc<ArcSigner>>,
    arc: Option<ArcInput>,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<io::Result<Vec<u8>>>,
) {
    let (out_tx, out_rx) = mpsc::channel::<io::Result<Vec<u8>>>(SEAL_QUEUE);
    let job = tokio::task::spawn_blocking(move || {
        let mut writer =
            io::BufWriter::with_capacity(64 * 1024, ChannelWriter { tx: out_tx.clone() });
        let result = spool.into_reader().and_then(|spool: SpoolReader| {
            let reader = io::Cursor::new(fields).chain(spool);
            match (&signer, &arc) {
                (Some(signer), Some(arc)) => arc_sealed(&sealer, signer, arc, reader, &mut writer),
                _ => {
                    if signer.is_some() {
                        arc_seal_counted("skipped");
                    }
                    sealer
                        .seal(reader, &mut writer)
                        .map(|_| ())
                        .map_err(io::Error::other)
                }
            }?;
            writer.flush()
        });
        if let Err(e) = result {
            let _ = out_tx.blocking_send(Err(e));
        }
    });
    (job, out_rx)
}

fn arc_seal_counted(outcome: &'static str) {
    metrics::counter!(names::ARC_SEALS_TOTAL, "outcome" => outcome).increment(1);
}

/// Seals `reader` into memory, then writes writ's ARC set and the sealed
/// message to `out` (without the set when it cannot be made: logged).
/// Runs on the seal job's blocking thread.
fn arc_sealed(
    sealer: &Sealer,
    signer: &ArcSigner,
    arc: &ArcInput,
    reader: impl Read,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut sealed = Vec::new();
    sealer.seal(reader, &mut sealed).map_err(io::Error::other)?;
    match signer.seal(&sealed, arc) {
        Ok(set) => {
            arc_seal_counted("sealed");
            out.write_all(&set)?;
        }
        Err(e) => {
            tracing::warn!(error = %e, "message delivered without writ's ARC set");
            arc_seal_counted("failed");
        }
    }
    out.write_all(&sealed)
}

/// Appends `data` to the spool, then, at the message's `last` piece,
/// seals its last chunk. While the spool stays in memory that is a copy
/// and a seal (at most [`SPOOL_IN_MEMORY`] in all); once it is (or would
/// become) a file, the write is file I/O and runs on a blocking thread,
/// never on the runtime. `false`: it failed (the spool is then gone).
async fn spool_write(spool: &mut Option<Spool>, data: &mut Vec<u8>, last: bool) -> bool {
    let Some(mut owned) = spool.take() else {
        return false;
    };
    let write = move |s: &mut Spool, bytes: &[u8]| {
        s.write_all(bytes)
            .and_then(|_| if last { s.finish() } else { Ok(()) })
    };
    if !owned.is_rolled() && owned.stored_after(data.len()) <= SPOOL_IN_MEMORY {
        let ok = write(&mut owned, data).is_ok();
        *spool = ok.then_some(owned);
        return ok;
    }
    let bytes = std::mem::take(data);
    match tokio::task::spawn_blocking(move || {
        let r = write(&mut owned, &bytes);
        (owned, bytes, r)
    })
    .await
    {
        Ok((owned, bytes, r)) => {
            *data = bytes;
            let ok = r.is_ok();
            *spool = ok.then_some(owned);
            ok
        }
        Err(_) => false,
    }
}
