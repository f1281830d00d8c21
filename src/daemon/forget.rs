//! Deletion with proof: asking the collector to delete this installation's
//! row, for `surveyd forget` (and `surveyd consent no`).
//!
//! Only the installation itself can ask: every report carries the
//! commitment to a secret derived from the machine id, and the request
//! reveals that secret (`{"secret":HEX64,"uid":HEX64}` to
//! [`Endpoint::for_deletion`]). Like a report, each request is audited
//! (a `forget` line, fsynced, without the secret) before it goes out, and
//! its `result` records the collector's signed `deleted` receipt, the
//! tombstone, checked like a report's receipt.
//!
//! [`Endpoint::for_deletion`]: crate::daemon::settings::Endpoint::for_deletion

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tracing::{error, info, warn};

use crate::daemon::audit::{self, AuditError, AuditLog};
use crate::daemon::payload::{self, Facts};
use crate::daemon::receipts::{self, Checked};
use crate::daemon::report::{self, Outcome};
use crate::daemon::settings::Settings;
use crate::daemon::state::{Consent, ConsentMode};
use crate::daemon::transport::{self, Outgoing};
use crate::privacy::RawId;
use crate::wire::receipt::Kind;
use crate::wire::sha256_hex;

/// One deletion request, ready to go. Its body holds the deletion secret,
/// so it is neither logged nor shown.
pub struct DeletionRequest {
    pub uid: String,
    body: Vec<u8>,
}

impl DeletionRequest {
    /// The request deleting row `uid`, proven with `machine_id`'s secret.
    pub fn new(machine_id: &RawId, uid: String) -> DeletionRequest {
        let secret = hex::encode(machine_id.deletion_secret());
        let body = serde_json::to_vec(&json!({"uid": uid, "secret": secret}))
            .expect("JSON values always serialise");
        DeletionRequest { uid, body }
    }

    /// What the tombstone must name: the SHA-256 of the request's body.
    pub fn body_sha256(&self) -> String {
        sha256_hex(&self.body)
    }
}

// By hand, so that a `{:?}` can never reveal the secret.
impl std::fmt::Debug for DeletionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeletionRequest")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// Why no deletion could be asked for.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("the machine id could not be read from {path} (or surveyclient_omit lists machine_id_hash), so this installation cannot prove that it is itself; reports sent without it carried no deletion commitment either")]
    NoMachineId { path: String },
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The requests that delete every row this installation may have: one per
/// uid of a report the collector accepted (as far as the audit log still
/// records), and the uid of the report `facts` would give now, so a
/// changed server GUID or program name leaves no row behind.
pub fn deletion_requests(
    settings: &Settings,
    facts: &Facts,
) -> Result<Vec<DeletionRequest>, ForgetError> {
    let machine_id = facts
        .machine_id
        .as_ref()
        .ok_or_else(|| ForgetError::NoMachineId {
            path: settings.machine_id_file.display().to_string(),
        })?;
    let mut uids = accepted_uids(settings);
    let current = payload::build(facts, &report::payload_options(settings));
    if let Some(uid) = receipts::uid_of_report(current.as_bytes()) {
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    Ok(uids
        .into_iter()
        .map(|uid| DeletionRequest::new(machine_id, uid))
        .collect())
}

/// The deletions a withdrawal (`surveyd consent no`) asks for: none unless
/// the consent it replaces allowed uploads, so an installation that never
/// uploaded (a package installed with the answer "no") contacts nobody;
/// otherwise every row [`deletion_requests`] lists.
pub fn withdrawal_requests(
    settings: &Settings,
    facts: &Facts,
    previous: Option<&Consent>,
) -> Result<Vec<DeletionRequest>, ForgetError> {
    if !previous.is_some_and(|consent| consent.mode == ConsentMode::Upload) {
        return Ok(Vec::new());
    }
    deletion_requests(settings, facts)
}

/// The uids of the reports the collector accepted, oldest first, each
/// once; an unreadable log gives none (the current uid is still asked).
/// Reads the log a line at a time.
fn accepted_uids(settings: &Settings) -> Vec<String> {
    let log = &settings.audit_log;
    if !audit::exists(log).unwrap_or(false) {
        return Vec::new();
    }
    let mut pairs = audit::SendResults::default();
    let mut uids: Vec<String> = Vec::new();
    let read = audit::for_each_entry(log, |entry| {
        let Some((send, result)) = pairs.add(entry) else {
            return Ok(());
        };
        let uid = send
            .body
            .as_ref()
            .and_then(|body| receipts::uid_of_report(body.get().as_bytes()));
        if let (true, Some(uid)) = (result.is_accepted(), uid) {
            if !uids.contains(&uid) {
                uids.push(uid);
            }
        }
        Ok(())
    });
    match read {
        Ok(()) => uids,
        Err(err) => {
            warn!("cannot read the audit log for the uids reports went under: {err}; asking only for the current one");
            Vec::new()
        }
    }
}

/// One deletion request, audited and sent.
#[derive(Debug)]
pub struct Deletion {
    /// The `forget` line.
    pub seq: u64,
    pub uid: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// The tombstone, checked, when a 2xx answer came.
    pub receipt: Option<Checked>,
}

impl Deletion {
    /// The collector confirmed with 200 (and, with a key configured, a
    /// tombstone that verifies).
    pub fn is_success(&self) -> bool {
        matches!(&self.outcome, Outcome::Answered(response) if response.status == 200)
    }

    /// One line for the admin.
    pub fn describe(&self) -> String {
        let receipt = self
            .receipt
            .as_ref()
            .map(|checked| {
                format!(
                    ", tombstone {}",
                    checked.describe().trim_start_matches("receipt ")
                )
            })
            .unwrap_or_default();
        format!("{}{receipt}", self.outcome.describe())
    }
}

/// Audits (the `forget` line, fsynced) and sends one deletion request,
/// then records its result with the tombstone. An error means the
/// `forget` line could not be written, and so nothing was sent. `cancel`
/// completing aborts the request; the cancellation is audited.
pub async fn request_deletion(
    settings: &Settings,
    audit: &mut AuditLog,
    request: &DeletionRequest,
    cancel: impl Future<Output = ()>,
) -> Result<Deletion, AuditError> {
    let endpoint = settings.url.for_deletion();
    let url = endpoint.to_string();
    let body_sha256 = request.body_sha256();
    let seq = audit.append_forget(&url, &request.uid, &body_sha256)?;
    let started = Instant::now();
    let outgoing = Outgoing {
        endpoint: &endpoint,
        body: Bytes::copy_from_slice(&request.body),
        ssl_verify: settings.ssl_verify,
        timeout: settings.timeout,
    };
    let outcome = tokio::select! {
        result = transport::post(outgoing) => match result {
            Ok(response) => Outcome::Answered(response),
            Err(err) => Outcome::Failed(err),
        },
        () = cancel => Outcome::Cancelled,
    };
    let duration = started.elapsed();
    let (outcome, receipt) = report::check_receipt(
        settings,
        outcome,
        Kind::Deleted,
        &body_sha256,
        Some(&request.uid),
    );
    let (status, mut error) = report::result_fields(&outcome);
    if let Outcome::Answered(response) = &outcome {
        if response.is_success() && response.status != 200 {
            error = Some(format!(
                "collector answered HTTP {} where a deletion is confirmed with 200",
                response.status
            ));
        }
    }
    let problem = receipt.as_ref().and_then(Checked::problem_text);
    let record = receipt
        .as_ref()
        .map(|checked| report::receipt_record(checked, problem.as_deref()));
    if let Err(err) =
        audit.append_result_with_receipt(seq, status, error.as_deref(), duration, record)
    {
        error!(
            "deletion request {seq} WAS sent ({}), but its result could not be recorded in the \
             audit log: {err}",
            outcome.describe()
        );
    }
    let deletion = Deletion {
        seq,
        uid: request.uid.clone(),
        outcome,
        duration,
        receipt,
    };
    if deletion.is_success() {
        info!(
            "deletion request {seq} for installation {} confirmed by {url}: {}",
            request.uid,
            deletion.describe()
        );
    } else {
        warn!(
            "deletion request {seq} for installation {} to {url} failed: {}",
            request.uid,
            error.as_deref().unwrap_or("no confirmation")
        );
    }
    Ok(deletion)
}

/// Asks for every deletion [`deletion_requests`] lists, in order; stops
/// at the first that cannot be audited.
pub async fn forget(
    settings: &Settings,
    audit: &mut AuditLog,
    requests: &[DeletionRequest],
) -> Result<Vec<Deletion>, AuditError> {
    let mut done = Vec::new();
    for request in requests {
        done.push(request_deletion(settings, audit, request, std::future::pending()).await?);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[test]
    fn the_request_carries_uid_and_secret_and_never_shows_the_secret() {
        let id = RawId::machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap();
        let request = DeletionRequest::new(&id, "ab".repeat(32));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let secret = hex::encode(id.deletion_secret());
        assert_eq!(body["uid"], "ab".repeat(32));
        assert_eq!(body["secret"], secret);
        assert_eq!(
            wire::deletion_commitment(&hex::decode(body["secret"].as_str().unwrap()).unwrap()),
            wire::deletion_commitment(&id.deletion_secret())
        );
        assert!(!format!("{request:?}").contains(&secret));
        assert_eq!(request.body_sha256(), sha256_hex(&request.body));
    }

    /// Only 2xx answers count, each uid once, in the order first accepted;
    /// a refused or failed send, a send with no result (a crash) and the
    /// results of other events count nothing.
    #[test]
    fn accepted_uids_lists_each_uid_a_2xx_answered_once_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            audit_log: dir.path().join("audit.log"),
            ..Settings::default()
        };
        let (mut log, _) = AuditLog::open(&settings.audit_log, 1 << 20, 3).unwrap();
        let body = |guid: &str| {
            format!(
                r#"{{"stats":{{"machine_id_hash":{{"type":"string","value":"m"}},"program_name":{{"type":"string","value":"kopano-server"}},"server_guid_hash":{{"type":"string","value":"{guid}"}}}},"version":3}}"#
            )
        };
        let uid = |guid: &str| receipts::uid_of_report(body(guid).as_bytes()).unwrap();
        let ms = Duration::from_millis(1);
        let mut send = |guid: &str, status: Option<u16>, error: Option<&str>| {
            let seq = log
                .append_send("https://c.example/", body(guid).as_bytes())
                .unwrap();
            if status.is_some() || error.is_some() {
                log.append_result(seq, status, error, ms).unwrap();
            }
        };
        send("b", Some(503), None);
        send("a", Some(200), None);
        send("c", None, Some("timed out"));
        send("b", Some(204), None);
        send("a", Some(200), None);
        send("d", None, None);
        assert_eq!(accepted_uids(&settings), [uid("a"), uid("b")]);
        assert!(accepted_uids(&Settings {
            audit_log: dir.path().join("none.log"),
            ..Settings::default()
        })
        .is_empty());
    }
}
