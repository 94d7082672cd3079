//! Disclosure requests and approvals in PostgreSQL, so that a request made
//! on one gateway can be approved from anywhere and disclosed on any
//! gateway sharing the database.
//!
//! Invariants:
//! - A request is stored under the SHA-256 of its canonical bytes (what
//!   approvals sign); storing it again changes nothing.
//! - An approval is stored only for a stored request, only when it is by
//!   an approver of the config and its signature verifies for that
//!   request; one per approver key and request (a second is refused).
//! - Stored approvals are evidence, not authority: `writ disclose` checks
//!   them again with the quorum rules (`disclose::quorum`) together with
//!   any approval files given, exactly as files.
//! - At most [`MAX_APPROVALS_READ`] approvals are read per request, and an
//!   approval file of more than [`MAX_APPROVAL_BYTES`] is refused.

use super::{Db, StateError};
use crate::config::DisclosureConfig;
use crate::disclose::Request;
use crate::disclose::approval::{Approval, Invalid};

/// Approvals read back per request (a quorum needs far fewer).
pub const MAX_APPROVALS_READ: i64 = 64;

/// Largest approval file stored, in bytes (one is about 500).
pub const MAX_APPROVAL_BYTES: usize = 16 * 1024;

/// Requests and approvals in the shared database.
pub struct PgDisclosure {
    db: Db,
}

/// Why an approval was not stored.
#[derive(Debug, thiserror::Error)]
pub enum RefusedApproval {
    #[error("not a writ approval file")]
    Malformed,
    #[error("larger than {MAX_APPROVAL_BYTES} bytes: not an approval file")]
    TooLarge,
    #[error("signed as {0:?} by a key that is not an approver in [disclosure] of the config")]
    UnknownApprover(String),
    #[error(
        "for request {0}, which is not stored here (store it with `writ disclose request` on a \
         gateway sharing this database)"
    )]
    NoRequest(String),
    #[error("its signature does not verify for the request it names")]
    BadSignature,
    #[error("{0} already approved this request")]
    Repeated(String),
}

impl PgDisclosure {
    pub fn new(db: Db) -> PgDisclosure {
        PgDisclosure { db }
    }

    /// Stores `request` (made by `operator`); false when it was stored
    /// already.
    pub async fn put_request(&self, request: &Request, operator: &str) -> Result<bool, StateError> {
        let client = self.db.client().await?;
        let text = String::from_utf8_lossy(&request.to_file()).into_owned();
        let n = client
            .execute(
                "INSERT INTO writ_disclosure_request (digest, case_ref, request, gateway, operator)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (digest) DO NOTHING",
                &[
                    &request.digest_hex(),
                    &request.case,
                    &text,
                    &self.db.gateway(),
                    &operator,
                ],
            )
            .await
            .map_err(self.db.err())?;
        Ok(n == 1)
    }

    /// Checks and stores an approval file; returns the approver's name in
    /// the config and the request's case.
    pub async fn add_approval(
        &self,
        config: &DisclosureConfig,
        bytes: &[u8],
    ) -> Result<Result<(String, String), RefusedApproval>, StateError> {
        if bytes.len() > MAX_APPROVAL_BYTES {
            return Ok(Err(RefusedApproval::TooLarge));
        }
        let Ok(approval) = Approval::parse(bytes) else {
            return Ok(Err(RefusedApproval::Malformed));
        };
        let Ok(key) = approval.key() else {
            return Ok(Err(RefusedApproval::Malformed));
        };
        let Some(approver) = config.approver(&key) else {
            return Ok(Err(RefusedApproval::UnknownApprover(approval.approver)));
        };
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT request FROM writ_disclosure_request WHERE digest = $1",
                &[&approval.request_sha256],
            )
            .await
            .map_err(self.db.err())?;
        let Some(row) = row else {
            return Ok(Err(RefusedApproval::NoRequest(approval.request_sha256)));
        };
        let stored: String = row.get(0);
        let request = Request::parse(stored.as_bytes()).map_err(|_| {
            StateError::Config(
                "a stored disclosure request does not parse (altered in the database?)".into(),
            )
        })?;
        match approval.check(&request.digest()) {
            Ok(()) => {}
            Err(Invalid::OtherRequest | Invalid::BadSignature) => {
                return Ok(Err(RefusedApproval::BadSignature));
            }
            Err(Invalid::Malformed(_)) => return Ok(Err(RefusedApproval::Malformed)),
        }
        let text = String::from_utf8_lossy(bytes).into_owned();
        let n = client
            .execute(
                "INSERT INTO writ_disclosure_approval (digest, approver_key, approval, gateway)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (digest, approver_key) DO NOTHING",
                &[
                    &approval.request_sha256,
                    &approval.public_key,
                    &text,
                    &self.db.gateway(),
                ],
            )
            .await
            .map_err(self.db.err())?;
        if n == 0 {
            return Ok(Err(RefusedApproval::Repeated(approver.name.clone())));
        }
        Ok(Ok((approver.name.clone(), request.case)))
    }

    /// The approval files stored for `request`, oldest first (at most
    /// [`MAX_APPROVALS_READ`]).
    pub async fn approvals(&self, request: &Request) -> Result<Vec<Vec<u8>>, StateError> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                "SELECT approval FROM writ_disclosure_approval WHERE digest = $1
                 ORDER BY added, approver_key LIMIT $2",
                &[&request.digest_hex(), &MAX_APPROVALS_READ],
            )
            .await
            .map_err(self.db.err())?;
        Ok(rows
            .iter()
            .map(|row| row.get::<_, String>(0).into_bytes())
            .collect())
    }
}
