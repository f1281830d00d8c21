//! One report, start to finish: decide from the settings and the consent
//! file whether it is off, kept local or uploaded ([`Mode`]), collect the
//! facts the consent covers, build the payload, write it to the audit log
//! (fsynced) and only then send it, record the result, and remember the
//! times of the attempt and the success in the state dir.
//!
//! Both `surveyd send` and the service loop go through [`mode`], [`send`]
//! and [`keep_local`], so the rules "nothing leaves without consent" and
//! "audited before sent" each have exactly one implementation.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{error, info, warn};

use crate::daemon::audit::{AuditError, AuditLog, AuditOptions, EndsFile, LogDir, RootWrite};
use crate::daemon::facts;
use crate::daemon::payload::{self, Payload, PayloadOptions};
use crate::daemon::settings::Settings;
use crate::daemon::state::{self, Consent, ConsentMode};
use crate::daemon::transport::{self, Outgoing, Response, SendError};
use crate::logging::REPORT_SENT_MESSAGE_ID;
use crate::wire;

/// The privacy options the settings ask for, for a report covering every
/// current field (what `surveyd consent yes` would acknowledge).
pub fn payload_options(settings: &Settings) -> PayloadOptions {
    PayloadOptions {
        scheme: settings.id_hash,
        app_id: settings.app_id,
        bucket_counts: settings.bucket_counts,
        omit: settings.omit.clone(),
        acknowledged: wire::SCHEMA,
    }
}

/// Collects the facts and builds the payload a report would send after
/// `surveyd consent yes`: what `preview` shows and a local report records.
pub async fn prepare(settings: &Settings) -> Payload {
    let facts = facts::collect(settings, Path::new("/")).await;
    payload::build(&facts, &payload_options(settings))
}

/// Collects only the facts `consent` covers and builds the payload an
/// upload sends: a field it does not name, or one newer than its schema,
/// is not even read.
pub async fn prepare_consented(settings: &Settings, consent: &Consent) -> Payload {
    let mut settings = settings.clone();
    settings
        .omit
        .extend(payload::not_acknowledged(&consent.fields, consent.schema));
    let facts = facts::collect(&settings, Path::new("/")).await;
    let options = PayloadOptions {
        acknowledged: consent.schema,
        ..payload_options(&settings)
    };
    payload::build(&facts, &options)
}

/// What happens to a report: the three states an admin chooses between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `surveyclient_interval = 0`: nothing is collected or sent.
    Off,
    /// No consent to upload (none given, or withdrawn): reports are built
    /// and recorded in the audit log as `local`; nothing leaves.
    Local,
    /// `surveyd consent yes`: reports carry the acknowledged fields only.
    Upload(Consent),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Local => ConsentMode::Local.name(),
            Mode::Upload(_) => ConsentMode::Upload.name(),
        }
    }
}

/// The state the settings and the consent on record put reports in.
pub fn mode(settings: &Settings, consent: Option<Consent>) -> Mode {
    match consent {
        _ if !settings.enabled() => Mode::Off,
        Some(consent) if consent.mode == ConsentMode::Upload => Mode::Upload(consent),
        _ => Mode::Local,
    }
}

/// Reads the consent file off the loop, within `surveyclient_timeout`: a
/// state dir on a hung file system must not stop the service. A read that
/// does not finish counts as no consent, so the report stays local.
pub async fn read_consent(settings: &Settings) -> Option<Consent> {
    let dir = settings.state_dir.clone();
    let read = tokio::task::spawn_blocking(move || state::read_consent(&dir));
    match tokio::time::timeout(settings.timeout, read).await {
        Ok(Ok(consent)) => consent,
        Ok(Err(err)) => {
            warn!("reading the consent file failed ({err}); this report stays local");
            None
        }
        Err(_) => {
            warn!(
                "reading the consent file in {} took longer than surveyclient_timeout ({} s); \
                 this report stays local",
                settings.state_dir.display(),
                settings.timeout.as_secs()
            );
            None
        }
    }
}

/// Records a report that may not leave the machine (no consent to upload)
/// as a `local` audit entry: the exact bytes an upload would carry.
/// Neither the attempt nor the success time is touched, since nothing was
/// attempted.
pub fn keep_local(audit: &mut AuditLog, payload: &Payload) -> Result<Attempt, AuditError> {
    let started = Instant::now();
    let seq = audit.append_local(payload.as_bytes())?;
    info!(
        "report {seq} recorded in the audit log as local, not sent: there is no consent to \
         upload (`surveyd consent` shows what would be sent, `surveyd consent yes` allows it)"
    );
    Ok(Attempt {
        seq,
        outcome: Outcome::KeptLocal,
        duration: started.elapsed(),
    })
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
    Failed(SendError),
    /// The service was asked to stop while the request was in flight.
    Cancelled,
    /// Without consent to upload, the report was only recorded locally.
    KeptLocal,
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Answered(response) if response.is_success())
    }

    /// One line for logs and `STATUS=`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered(response) => response.describe(),
            Outcome::Failed(err) => err.to_string(),
            Outcome::Cancelled => "cancelled: shutting down".to_string(),
            Outcome::KeptLocal => "kept local, not sent: no consent to upload".to_string(),
        }
    }
}

/// A report that was audited (and, unless cancelled or kept local, sent).
#[derive(Debug)]
pub struct Attempt {
    pub seq: u64,
    pub outcome: Outcome,
    pub duration: Duration,
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
    let (status, error) = match &outcome {
        Outcome::Answered(response) if response.is_success() => (Some(response.status), None),
        // The collector's own reason, when it gave one, is what tells the
        // admin why this report will never be accepted as it is.
        Outcome::Answered(response) => (
            Some(response.status),
            Some(format!("collector answered {}", response.describe())),
        ),
        other => (None, Some(other.describe())),
    };
    if let Err(err) = audit.append_result(seq, status, error.as_deref(), duration) {
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
            "report {seq} sent to {url}: {} in {millis} ms ({} bytes)",
            outcome.describe(),
            payload.as_bytes().len()
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
    })
}
