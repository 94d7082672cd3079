//! `writ disclose`: open exactly the named messages for a case into a
//! signed bundle; `writ disclose request` prints the request approvers
//! sign; `writ disclose verify` checks a bundle. With the PostgreSQL state
//! backend, `request` also stores the request, `writ disclose approval`
//! stores checked approvals, and `disclose` counts the stored approvals
//! together with `--approval` files (the same quorum check for both).
//!
//! Order of a disclosure, each step refusing before the next: the
//! keyring and the audit key are there; the messages are read (files) and
//! the request built from the arguments; the approvals meet the quorum for
//! that exact request; every message is the requested one, sealed, under
//! an epoch of the keyring; the audit log can be written; only then the
//! passphrase is asked for and the messages opened. The bundle is kept
//! only once the `disclose` audit record is written.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use writ::audit;
use writ::disclose::{self, Request, Stored, Wanted, quorum};
use writ::envelope::EnvelopeError;
use writ::keys::Keyring;

use super::{Context, audit_record, out};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DiscloseArgs {
    #[command(subcommand)]
    pub command: Option<DiscloseCommand>,

    #[command(flatten)]
    pub select: Selection,

    /// Where the bundle goes: a new or empty directory (created 0700)
    #[arg(long, value_name = "DIR", required = true)]
    pub out: Option<PathBuf>,

    /// An approval file from an approver (`writ approver approve`); give
    /// as many as the [disclosure] quorum requires
    #[arg(long, value_name = "FILE")]
    pub approval: Vec<PathBuf>,

    /// How to log in to the provider (with --account)
    #[command(flatten)]
    pub login: super::mailbox::SecretArgs,
}

#[derive(clap::Subcommand)]
pub enum DiscloseCommand {
    /// Print the request for these arguments (JSON) for the approvers to
    /// sign with `writ approver approve`
    Request {
        #[command(flatten)]
        select: Selection,
    },

    /// Store approval files in the shared database (`[state] backend =
    /// "postgres"`), each checked first: `writ disclose` on any gateway
    /// then counts them without --approval
    Approval {
        /// Approval files (`writ approver approve`)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },

    /// Check a bundle: every file against the manifest, the manifest
    /// against its signature, nothing added
    Verify {
        /// The bundle directory
        dir: PathBuf,

        /// The gateway's audit public key (a copy of keys/audit.pub
        /// obtained from the gateway): what proves who made the bundle
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,

        /// Without the gateway's key: check the bundle against the key its
        /// own manifest names. That shows it is intact, not who made it (a
        /// bundle made wholesale under another keyring passes)
        #[arg(long, conflicts_with = "public_key")]
        unauthenticated: bool,
    },
}

/// Which messages, for which case. Either files, or a provider mailbox
/// with UIDs and/or Message-IDs (UIDs first, then Message-IDs, each in the
/// order given).
#[derive(clap::Args)]
pub struct Selection {
    /// The case reference (court order, file number)
    #[arg(long, value_name = "REF", required = true)]
    pub case: Option<String>,

    /// Stored (sealed) messages as files, e.g. as the provider handed them
    /// over
    #[arg(
        long,
        value_name = "EML",
        num_args = 1..,
        conflicts_with_all = ["account", "mailbox", "uid", "message_id"],
        required_unless_present = "account"
    )]
    pub from_file: Vec<PathBuf>,

    /// The account at the provider
    #[arg(long, value_name = "USER", requires = "mailbox")]
    pub account: Option<String>,

    /// The mailbox of that account
    #[arg(long, value_name = "NAME", requires = "account")]
    pub mailbox: Option<String>,

    /// A message by UID (needs --uidvalidity)
    #[arg(long, value_name = "N", requires = "account")]
    pub uid: Vec<u32>,

    /// The mailbox's UIDVALIDITY the UIDs belong to (IMAP `STATUS mailbox
    /// (UIDVALIDITY)`, or the `[UIDVALIDITY n]` a client is told on
    /// SELECT): a UID names a message only under it, and disclose refuses
    /// if the mailbox's is another one by then
    #[arg(long, value_name = "N", requires = "uid")]
    pub uidvalidity: Option<u32>,

    /// A message by Message-ID (with its angle brackets)
    #[arg(long, value_name = "ID", requires = "account")]
    pub message_id: Vec<String>,
}

/// The selection, resolved: the request, and for files the stored
/// messages already read.
struct Selected {
    request: Request,
    files: Option<Vec<Stored>>,
}

fn select(ctx: &Context, select: &Selection) -> Result<Selected> {
    let case = select.case.clone().unwrap_or_default();
    disclose::check_case(&case)?;
    Keyring::load(&ctx.keys_dir)?;
    let gateway = audit::public_key(&ctx.keys_dir)?;
    if !select.from_file.is_empty() {
        let mut stored = Vec::new();
        let mut wanted = Vec::new();
        for path in &select.from_file {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            wanted.push(disclose::wanted_file(path, &bytes));
            stored.push(Stored {
                source: disclose::Source::File { path: path.clone() },
                ciphertext: bytes,
            });
        }
        return Ok(Selected {
            request: Request::new(&case, &gateway, wanted)?,
            files: Some(stored),
        });
    }
    let (Some(account), Some(mailbox)) = (&select.account, &select.mailbox) else {
        return Err(disclose::DiscloseError::NoMessages.into());
    };
    let uidvalidity = match (select.uid.is_empty(), select.uidvalidity) {
        (true, _) => 0,
        (false, Some(v)) if v > 0 => v,
        (false, _) => anyhow::bail!(
            "--uid needs --uidvalidity N, the mailbox's UIDVALIDITY the UIDs belong to (IMAP \
             `STATUS {mailbox} (UIDVALIDITY)`): a UID names a message only under it"
        ),
    };
    let wanted = select
        .uid
        .iter()
        .map(|&uid| Wanted::Uid {
            account: account.clone(),
            mailbox: mailbox.clone(),
            uidvalidity,
            uid,
        })
        .chain(select.message_id.iter().map(|id| Wanted::MessageId {
            account: account.clone(),
            mailbox: mailbox.clone(),
            message_id: id.clone(),
        }))
        .collect();
    Ok(Selected {
        request: Request::new(&case, &gateway, wanted)?,
        files: None,
    })
}

/// Fetches exactly the requested provider messages (account, mailbox, UID
/// or Message-ID), in request order, with their UIDVALIDITY, as stored
/// (read-only: EXAMINE and BODY.PEEK, no flag changes). Called only after
/// the quorum is met; a message that is not there stops the disclosure.
fn fetch_for_disclosure(
    ctx: &Context,
    request: &Request,
    login: &super::mailbox::SecretArgs,
) -> Result<Vec<Stored>> {
    let mut account = None;
    let mut mailbox = None;
    let mut uids = Vec::new();
    let mut uidvalidity = None;
    let mut message_ids = Vec::new();
    for wanted in &request.messages {
        let (a, m) = match wanted {
            Wanted::Uid {
                account,
                mailbox,
                uidvalidity: v,
                uid,
            } => {
                if *uidvalidity.get_or_insert(*v) != *v {
                    anyhow::bail!("a request names its UIDs under one UIDVALIDITY");
                }
                uids.push(*uid);
                (account, mailbox)
            }
            Wanted::MessageId {
                account,
                mailbox,
                message_id,
            } => {
                message_ids.push(message_id.clone());
                (account, mailbox)
            }
            Wanted::File { .. } => anyhow::bail!("a request mixes files and provider messages"),
        };
        if account.get_or_insert(a) != &a || mailbox.get_or_insert(m) != &m {
            anyhow::bail!("a request names one account and one mailbox");
        }
    }
    let (Some(account), Some(mailbox)) = (account, mailbox) else {
        return Err(disclose::DiscloseError::NoMessages.into());
    };
    let target = super::mailbox::provider_target(ctx)?;
    let creds = login.credentials_for(account)?;
    let what = format!("{account} {mailbox}");
    let backoff = super::mailbox::backoff(ctx);
    let named = super::mailbox::runtime()?
        .block_on(backoff.run(
            || {
                writ::jobs::fetch::fetch_named(
                    &target,
                    &creds,
                    mailbox,
                    uidvalidity,
                    &uids,
                    &message_ids,
                )
            },
            super::mailbox::say_retry(&what),
        ))
        .with_context(|| format!("fetching from {account} {mailbox}"))?;
    if !named.missing.is_empty() {
        anyhow::bail!(
            "not at the provider in {account} {mailbox}: {}; nothing disclosed",
            named.missing.join(", ")
        );
    }
    Ok(named
        .messages
        .into_iter()
        .map(|m| Stored {
            source: disclose::Source::Provider {
                account: account.clone(),
                mailbox: mailbox.clone(),
                uidvalidity: named.uidvalidity,
                uid: m.uid,
            },
            ciphertext: m.bytes,
        })
        .collect())
}

pub fn run(ctx: &Context, args: DiscloseArgs) -> Result<()> {
    match args.command {
        Some(DiscloseCommand::Request { select: s }) => {
            let selected = select(ctx, &s)?;
            if let Some(shared) = shared(ctx)? {
                // Stored before it is printed: approvers can submit at once.
                let new = ctx.block_on(shared.put_request(&selected.request, &ctx.operator))??;
                eprintln!(
                    "writ: request {} {} in {}",
                    selected.request.digest_hex(),
                    if new { "stored" } else { "was already stored" },
                    ctx.audit_log()?.location()
                );
            }
            let file = selected.request.to_file();
            out(&String::from_utf8_lossy(&file))?;
            let disclosure = &ctx.config.disclosure;
            notify(
                ctx,
                &writ::notify::Notice::RequestAwaitingApproval {
                    quorum: disclosure.quorum,
                    approvers: disclosure
                        .approvers
                        .iter()
                        .map(|a| a.name.clone())
                        .collect(),
                    operator: ctx.operator.clone(),
                },
            );
            Ok(())
        }
        Some(DiscloseCommand::Approval { files }) => submit_approvals(ctx, &files),
        Some(DiscloseCommand::Verify {
            dir,
            public_key,
            unauthenticated,
        }) => {
            if public_key.is_none() && !unauthenticated {
                anyhow::bail!(
                    "give the gateway's audit public key (--public-key FILE, a copy of its \
                     keys/audit.pub) to know who made the bundle; --unauthenticated checks only \
                     that it is intact"
                );
            }
            verify(&dir, public_key.as_deref())
        }
        None => {
            let out_dir = args.out.clone().unwrap_or_default();
            run_disclose(ctx, &args, &out_dir)
        }
    }
}

fn run_disclose(ctx: &Context, args: &DiscloseArgs, out_dir: &Path) -> Result<()> {
    let dir = ctx.keys_dir.as_path();
    let keyring = Keyring::load(dir)?;
    let Selected { request, files } = select(ctx, &args.select)?;

    let given = args
        .approval
        .iter()
        .map(|path| {
            std::fs::read(path)
                .with_context(|| format!("cannot read approval {}", path.display()))
                .map(|bytes| quorum::Given {
                    path: path.clone(),
                    bytes,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut given = given;
    if let Some(shared) = shared(ctx)? {
        given.extend(stored_approvals(ctx, &shared, &request)?);
    }
    let used = quorum::check(&ctx.config.disclosure, &request, &given)?;

    let stored = match files {
        Some(stored) => stored,
        None => fetch_for_disclosure(ctx, &request, &args.login)?,
    };
    // Not sealed, not the requested message, or an epoch this keyring does
    // not have: refused before the passphrase is asked for.
    let epochs = disclose::check_stored(&request, &stored)?;
    for epoch in &epochs {
        keyring
            .epoch(epoch)
            .map_err(|_| EnvelopeError::UnknownEpoch(epoch.clone()))?;
    }
    ctx.check_audit_writable()?;
    disclose::check_out(out_dir)?;
    let unlocked = ctx.unlock(&keyring)?;
    let approvers: Vec<String> = used.iter().map(|u| u.name.clone()).collect();
    // Recorded before anything is opened (and after every refusal that
    // needs no opening): a disclosure killed halfway, its bundle then
    // unsigned (see `disclose::Pending`), is in the log.
    let log = ctx
        .audit_log()
        .context("nothing disclosed: the audit log cannot be written")?;
    ctx.block_on(log.append(
        &ctx.operator,
        "disclose.begin",
        audit::params([
            ("case", request.case.clone().into()),
            ("messages", stored.len().into()),
            ("request_sha256", request.digest_hex().into()),
            ("approvers", approvers.clone().into()),
            ("quorum", ctx.config.disclosure.quorum.into()),
            ("out", out_dir.display().to_string().into()),
        ]),
    ))?
    .context("nothing disclosed: the audit log cannot be written")?;

    let d = disclose::Disclosure {
        request: &request,
        approvals: &used,
        operator: &ctx.operator,
        keys_dir: dir,
        out: out_dir,
    };
    let bundle = disclose::disclose(&d, &stored, &unlocked)
        .context("nothing disclosed (no plaintext left behind)")?;
    drop(unlocked);
    audit_record(
        ctx,
        "disclose",
        audit::params([
            ("case", request.case.clone().into()),
            ("messages", bundle.messages.into()),
            ("manifest_sha256", bundle.manifest_sha256.clone().into()),
            ("request_sha256", bundle.request_sha256.clone().into()),
            ("approvers", approvers.clone().into()),
            ("quorum", ctx.config.disclosure.quorum.into()),
            ("out", out_dir.display().to_string().into()),
        ]),
    )
    // Dropping the bundle removes it: no disclosure without its record.
    .context("the bundle was removed")?;
    let text = format!(
        "disclosed {} message(s) for case {:?} into {}\n\
         manifest sha256 {}, signed by audit key {}\n\
         approvals: {}\n\
         the other side checks it with: writ disclose verify {} --public-key audit.pub\n",
        bundle.messages,
        request.case,
        bundle.dir().display(),
        bundle.manifest_sha256,
        bundle.gateway,
        if approvers.is_empty() {
            "none (quorum 0)".to_string()
        } else {
            approvers.join(", ")
        },
        bundle.dir().display(),
    );
    let notice = writ::notify::Notice::DisclosureCarriedOut {
        manifest_sha256: bundle.manifest_sha256.clone(),
        messages: bundle.messages,
        approvers,
        operator: ctx.operator.clone(),
    };
    bundle.keep().context(
        "the disclosure was recorded, but its bundle could not be signed: it was removed",
    )?;
    out(&text)?;
    notify(ctx, &notice);
    Ok(())
}

/// Sends a `[notify]` notice. The disclosure (or request) is already done
/// and recorded; a notice that cannot be sent is a warning, not an error.
fn notify(ctx: &Context, notice: &writ::notify::Notice) {
    let config = &ctx.config;
    if let Err(e) = writ::notify::send(
        &config.notify,
        config.provider.smtp.as_ref(),
        &config.smtp.hostname,
        notice,
    ) {
        eprintln!("writ: warning: notice not sent: {e}");
    }
}

fn verify(dir: &Path, public_key: Option<&Path>) -> Result<()> {
    let key = public_key.map(audit::read_public_key).transpose()?;
    let v = disclose::verify(dir, key.as_deref())?;
    out(&verified_text(dir, &v))
}

/// What `disclose verify` prints. The names come from the manifest, which
/// without `--public-key` anyone can have made: written escaped, so that
/// none can put lines or terminal controls into the report.
fn verified_text(dir: &Path, v: &disclose::Verified) -> String {
    let mut text = format!(
        "{}: case {:?}, {} message(s), {} files: hashes and manifest signature OK\n\
         disclosed by {} at {}; approvals: {}\n",
        dir.display(),
        v.case,
        v.messages,
        v.files,
        v.operator.escape_debug(),
        v.time.escape_debug(),
        if v.approvers.is_empty() {
            "none".to_string()
        } else {
            v.approvers
                .iter()
                .map(|(name, key)| format!("{} (key {key})", name.escape_debug()))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    if v.key_given {
        text.push_str(&format!("signed by the given audit key {}\n", v.gateway));
    } else {
        text.push_str(&format!(
            "NOT AUTHENTICATED: signed by audit key {} as the manifest itself names it; \
             anyone can make such a bundle under a keyring of their own: verify with the \
             gateway's audit.pub (--public-key) to know who made it\n",
            v.gateway
        ));
    }
    text
}

/// The shared disclosure store, when `[state]` names PostgreSQL.
fn shared(ctx: &Context) -> Result<Option<writ::state::PgDisclosure>> {
    Ok(match ctx.audit_log()? {
        writ::state::AuditLog::Postgres(pg) => {
            Some(writ::state::PgDisclosure::new(pg.db().clone()))
        }
        writ::state::AuditLog::Files(_) => None,
    })
}

/// The approvals stored for `request` by approvers the config still
/// names (an approver removed since does not count, and is not an error),
/// as if given as files named `postgresql:N`.
fn stored_approvals(
    ctx: &Context,
    shared: &writ::state::PgDisclosure,
    request: &Request,
) -> Result<Vec<quorum::Given>> {
    let stored = ctx.block_on(shared.approvals(request))??;
    Ok(stored
        .into_iter()
        .enumerate()
        .filter(|(_, bytes)| {
            disclose::approval::Approval::parse(bytes)
                .ok()
                .and_then(|a| a.key().ok())
                .is_some_and(|key| ctx.config.disclosure.approver(&key).is_some())
        })
        .map(|(i, bytes)| quorum::Given {
            path: PathBuf::from(format!("postgresql:{}", i + 1)),
            bytes,
        })
        .collect())
}

/// `writ disclose approval FILE...`: each file checked and stored; the
/// first refused one stops (those before it stay stored).
fn submit_approvals(ctx: &Context, files: &[PathBuf]) -> Result<()> {
    let Some(shared) = shared(ctx)? else {
        anyhow::bail!(
            "approvals are stored only with [state] backend = \"postgres\"; with files, give \
             them to `writ disclose --approval FILE`"
        );
    };
    let mut text = String::new();
    for path in files {
        let bytes = read_capped(path, writ::state::MAX_APPROVAL_BYTES)?;
        let (name, case) = ctx
            .block_on(shared.add_approval(&ctx.config.disclosure, &bytes))??
            .map_err(|e| anyhow::anyhow!("approval {}: {e}; not stored", path.display()))?;
        text.push_str(&format!(
            "stored {}: {name} approves case {case:?}\n",
            path.display()
        ));
    }
    out(&text)
}

/// A file, refused when larger than `cap` bytes (read at most cap + 1).
fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read approval {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read approval {}", path.display()))?;
    if bytes.len() > cap {
        anyhow::bail!(
            "approval {}: larger than {cap} bytes: not an approval file",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_manifest_cannot_forge_lines_of_the_report() {
        let v = disclose::Verified {
            case: "c".to_string(),
            operator: "eve\nsigned by the given audit key X".to_string(),
            time: "2026-12-07T00:00:00Z\x1b[2J".to_string(),
            messages: 1,
            files: 3,
            gateway: "K".to_string(),
            key_given: false,
            approvers: vec![("legal\r\nboard".to_string(), "A".to_string())],
        };
        let text = verified_text(Path::new("b"), &v);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .starts_with("NOT AUTHENTICATED"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("approvals: legal\\r\\nboard (key A)"),
            "{text}"
        );
    }
}
