//! One report, start to finish: collect the facts, build the payload, write
//! it to the audit log (fsynced) and only then send it, record the result,
//! and remember the times of the attempt and the success in the state dir.
//!
//! Both `surveyd send` and the service loop go through [`send`], so the
//! rule "audited before sent" has exactly one implementation.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{error, info, warn};

use crate::daemon::audit::{
    AuditError, AuditLog, AuditOptions, EndsFile, LogDir, ReceiptRecord, RootWrite,
};
use crate::daemon::facts;
use crate::daemon::payload::{self, Payload, PayloadOptions};
use crate::daemon::receipts::{self, Checked};
use crate::daemon::settings::Settings;
use crate::daemon::state;
use crate::daemon::transport::{self, Outgoing, Response, SendError};
use crate::logging::REPORT_SENT_MESSAGE_ID;
use crate::wire::receipt::Kind;
use crate::wire::sha256_hex;

/// The privacy options the settings ask for.
pub fn payload_options(settings: &Settings) -> PayloadOptions {
    PayloadOptions {
        scheme: settings.id_hash,
        app_id: settings.app_id,
        bucket_counts: settings.bucket_counts,
        omit: settings.omit.clone(),
    }
}

/// Collects the facts and builds the payload the next report would send.
pub async fn prepare(settings: &Settings) -> Payload {
    let facts = facts::collect(settings, Path::new("/")).await;
    payload::build(&facts, &payload_options(settings))
}

/// How the settings ask for the audit log to be opened. Opens the state
/// dir for the chain's ends now, so that it stays reachable after `send`
/// has become the log directory's owner.
pub fn audit_options(settings: &Settings, lock_wait: Duration) -> Result<AuditOptions, AuditError> {
    let ends_path = state::chain_ends_path(&settings.state_dir);
    let ends = EndsFile::open(&ends_path).map_err(|source| AuditError::Open {
        path: ends_path,
        source,
    })?;
    Ok(AuditOptions {
        max_size: settings.audit_max_size,
        keep: settings.audit_keep.into(),
        ends: Some(ends),
        lock_wait,
    })
}

/// Opens the audit log the settings name for the service, logging a
/// torn-line recovery. Root is refused a directory another user can write
/// (the service runs as that user instead, as DynamicUser= does).
pub fn open_audit(settings: &Settings, lock_wait: Duration) -> Result<AuditLog, AuditError> {
    let dir = LogDir::for_log(&settings.audit_log)?;
    if let RootWrite::AsOwner { uid, .. } = dir.root_write()? {
        return Err(AuditError::UnsafeDir {
            path: dir.path().to_owned(),
            why: format!(
                "it belongs to uid {uid}, so a file planted there could redirect root's writes; \
                 run the service as that user (the packaged unit's DynamicUser= does)"
            ),
        });
    }
    open_audit_in(dir, settings, audit_options(settings, lock_wait)?)
}

/// Opens the audit log in its already opened (and vetted) directory.
pub fn open_audit_in(
    dir: LogDir,
    settings: &Settings,
    options: AuditOptions,
) -> Result<AuditLog, AuditError> {
    let (audit, recovery) = AuditLog::open_in(dir, &settings.audit_log, options)?;
    if let Some(recovery) = recovery {
        warn!(
            "audit log {} ended in a torn line (a crash mid-write?): {} bytes set aside in {}, \
             recorded as entry {}",
            settings.audit_log.display(),
            recovery.torn_bytes,
            recovery.saved_to.display(),
            recovery.seq
        );
    }
    Ok(audit)
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Answered(Response),
    /// The collector answered 2xx, but `surveyclient_collector_key` is set
    /// and its receipt does not prove that it stored what was sent: the
    /// report counts as failed and is retried.
    Unproven {
        response: Response,
        /// Why, as one printable line.
        problem: String,
    },
    Failed(SendError),
    /// The service was asked to stop while the request was in flight.
    Cancelled,
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Answered(response) if response.is_success())
    }

    /// One line for logs and `STATUS=`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered(response) => response.describe(),
            Outcome::Unproven { response, problem } => {
                format!("{}, but {problem}", response.describe())
            }
            Outcome::Failed(err) => err.to_string(),
            Outcome::Cancelled => "cancelled: shutting down".to_string(),
        }
    }
}

/// An attempt that was audited (and, unless cancelled, sent).
#[derive(Debug)]
pub struct Attempt {
    pub seq: u64,
    pub outcome: Outcome,
    pub duration: Duration,
    /// What the answer's receipt proved, when a 2xx answer came.
    pub receipt: Option<Checked>,
}

/// Checks a 2xx answer's receipt under the configured keys; with a key, a
/// receipt that does not prove the request turns the answer into
/// [`Outcome::Unproven`].
pub fn check_receipt(
    settings: &Settings,
    outcome: Outcome,
    kind: Kind,
    body_sha256: &str,
    uid: Option<&str>,
) -> (Outcome, Option<Checked>) {
    let response = match outcome {
        Outcome::Answered(response) if response.is_success() => response,
        other => return (other, None),
    };
    let checked = receipts::check(
        &response.body,
        &settings.collector_keys,
        kind,
        body_sha256,
        uid,
    );
    match (checked.problem_text(), checked.fails) {
        (Some(problem), true) => (Outcome::Unproven { response, problem }, Some(checked)),
        _ => (Outcome::Answered(response), Some(checked)),
    }
}

/// How a result line records `outcome`: its HTTP status, if an answer
/// came, and the error, if it failed.
pub fn result_fields(outcome: &Outcome) -> (Option<u16>, Option<String>) {
    match outcome {
        Outcome::Answered(response) if response.is_success() => (Some(response.status), None),
        // The collector's own reason, when it gave one, is what tells the
        // admin why this report will never be accepted as it is.
        Outcome::Answered(response) => (
            Some(response.status),
            Some(format!("collector answered {}", response.describe())),
        ),
        Outcome::Unproven { response, problem } => (
            Some(response.status),
            Some(format!(
                "collector answered {}, but {problem}; not counted as delivered",
                response.describe()
            )),
        ),
        other => (None, Some(other.describe())),
    }
}

/// The audit record of a checked receipt; `problem` is its
/// [`Checked::problem_text`].
pub fn receipt_record<'a>(checked: &'a Checked, problem: Option<&'a str>) -> ReceiptRecord<'a> {
    ReceiptRecord {
        receipt: checked.receipt.as_ref(),
        state: checked.state.word(),
        problem,
    }
}

/// Audits and sends one payload. An error means the send entry could not
/// be written, and therefore nothing was sent. `cancel` completing aborts
/// the request; the cancellation is audited like any other result.
pub async fn send(
    settings: &Settings,
    audit: &mut AuditLog,
    payload: &Payload,
    cancel: impl Future<Output = ()>,
) -> Result<Attempt, AuditError> {
    let url = settings.url.to_string();
    let seq = audit.append_send(&url, payload.as_bytes())?;
    if !settings.ssl_verify && url.starts_with("https:") {
        warn!("surveyclient_ssl_verify = no: the collector's certificate is not checked");
    }
    if let Err(err) = state::record_attempt(&settings.state_dir, SystemTime::now()) {
        warn!(
            "cannot record the attempt time in {}: {err}",
            settings.state_dir.display()
        );
    }
    let started = Instant::now();
    let request = Outgoing {
        endpoint: &settings.url,
        body: Bytes::copy_from_slice(payload.as_bytes()),
        ssl_verify: settings.ssl_verify,
        timeout: settings.timeout,
    };
    let outcome = tokio::select! {
        result = transport::post(request) => match result {
            Ok(response) => Outcome::Answered(response),
            Err(err) => Outcome::Failed(err),
        },
        () = cancel => Outcome::Cancelled,
    };
    let duration = started.elapsed();
    let (outcome, receipt) = check_receipt(
        settings,
        outcome,
        Kind::Stored,
        &sha256_hex(payload.as_bytes()),
        receipts::uid_of_report(payload.as_bytes()).as_deref(),
    );
    let (status, error) = result_fields(&outcome);
    let problem = receipt.as_ref().and_then(Checked::problem_text);
    let record = receipt
        .as_ref()
        .map(|checked| receipt_record(checked, problem.as_deref()));
    if let Err(err) =
        audit.append_result_with_receipt(seq, status, error.as_deref(), duration, record)
    {
        // The request already went out and its send entry is on disk; a
        // missing result line is visible in `surveyd audit` as "no result".
        error!(
            "report {seq} WAS sent ({}), but its result could not be recorded in the audit log \
             (`surveyd audit` will show it as \"no result\"): {err}",
            outcome.describe()
        );
    }

    let millis = duration.as_millis() as u64;
    if outcome.is_success() {
        info!(
            message_id = REPORT_SENT_MESSAGE_ID,
            "report {seq} sent to {url}: {} in {millis} ms ({} bytes), {}",
            outcome.describe(),
            payload.as_bytes().len(),
            receipt
                .as_ref()
                .map_or_else(|| "no receipt".to_string(), Checked::describe)
        );
        if let Err(err) = state::record_success(&settings.state_dir, SystemTime::now()) {
            warn!(
                "cannot record the success time in {}: {err}",
                settings.state_dir.display()
            );
        }
    } else {
        warn!(
            "report {seq} to {url} failed after {millis} ms: {}",
            error.as_deref().unwrap_or_default()
        );
    }
    Ok(Attempt {
        seq,
        outcome,
        duration,
        receipt,
    })
}
