//! The service loop behind `surveyd run`: one task that owns the schedule,
//! the running settings and the audit log, and reacts to four events: the
//! next report is due, a report finished, a signal (SIGHUP reload,
//! SIGTERM/SIGINT stop, SIGUSR1 report now), and the watchdog tick. It speaks the sd_notify
//! protocol (READY, STATUS, WATCHDOG, RELOADING + MONOTONIC_USEC, STOPPING).
//!
//! A report runs as its own task, so a slow collector never blocks the
//! loop; the watchdog is only fed while no report has outlived every
//! timeout it is bound by, so a stuck loop or a stuck report gets the
//! service restarted by systemd.
//!
//! Before each report it reads the consent file: without consent to
//! upload the report is built and recorded in the audit log as `local`,
//! and nothing leaves the machine; with it, only the acknowledged fields
//! are collected and sent. So `surveyd consent` applies to the next report
//! without a restart.
//!
//! What the audit log does wrong is split by [`NotSent`]: retried with
//! backoff, held (the service runs and sends nothing until the admin
//! acts) or fatal (the loop ends with a [`Failure`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::daemon::audit::{AuditError, AuditLog};
use crate::daemon::report::{self, Attempt, Mode};
use crate::daemon::scheduler::{self, Timing};
use crate::daemon::settings::{Loaded, Settings};
use crate::daemon::state::{self, Consent, ConsentMode};
use crate::daemon::{facts, forget};
use crate::exit;
use crate::sys::{notify, reload, Failure, Runtime};

/// Slack on top of the timeouts before an unfinished report counts as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(10);

/// Runs the service until SIGTERM/SIGINT, or until a failure that only
/// the admin can end.
pub fn run(config: &Path) -> Result<(), Failure> {
    let loaded = crate::daemon::facts::load_settings(config)
        .map_err(|err| Failure::new(exit::CONFIG, err))?;
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    let settings = loaded.settings;
    let (audit, audit_problem) =
        match report::open_audit(&settings, crate::daemon::audit::LOCK_WAIT) {
            Ok(audit) => (Some(audit), None),
            Err(err) => match NotSent::from(err) {
                NotSent::Held(err) => {
                    error!("{err}");
                    (None, Some(format!("not sent: {err}")))
                }
                // Before the first report nothing has been retried yet: a
                // log that cannot be opened is left to systemd's Restart=.
                NotSent::Retry(err) => return Err(Failure::new(exit::CANTCREAT, err)),
                NotSent::Fatal(failure) => return Err(failure),
            },
        };
    exit_soon_after_stop_signals_whatever_blocks();
    let mut service = Service::new(config.to_path_buf(), settings, audit);
    service.last_outcome = audit_problem;
    Runtime::current_thread()?.block_on(service.run())
}

/// Why a report was not sent (its audit log could not be opened or
/// written), and what the loop does about it. The rule: an error that can
/// pass without anyone acting (an I/O error: a full disk, a file size
/// limit, a lock another `surveyd` holds for a moment) is retried with
/// backoff; a log that is damaged or was replaced under the service is
/// held: the service keeps running, sends nothing and says so in STATUS,
/// because the admin's `surveyd audit new-chain` mends it while it runs;
/// an error that no retry and no restart can end is fatal: the loop
/// stops with exit status 73 (70 for a bug), as it would at start.
enum NotSent {
    Retry(AuditError),
    Held(AuditError),
    Fatal(Failure),
}

impl From<AuditError> for NotSent {
    fn from(err: AuditError) -> NotSent {
        // Every variant is named, so a new one gets a decision.
        match err {
            AuditError::CreateDir { .. }
            | AuditError::Open { .. }
            | AuditError::Lock { .. }
            | AuditError::Locked { .. }
            | AuditError::Read { .. }
            | AuditError::Write { .. }
            | AuditError::Rotate { .. }
            | AuditError::Recover { .. } => NotSent::Retry(err),
            // Only the readers raise BadLine (the writer's recovery calls
            // a bad line damage), but it is damage all the same.
            AuditError::Damaged { .. }
            | AuditError::Replaced { .. }
            | AuditError::BadLine { .. } => NotSent::Held(err),
            // A directory root may not write into, a chain with no end to
            // continue from, a sequence at its end: the files stay as
            // they are until the admin changes them.
            AuditError::UnsafeDir { .. }
            | AuditError::NoChainToContinue { .. }
            | AuditError::SeqExhausted { .. } => NotSent::Fatal(Failure::new(exit::CANTCREAT, err)),
            // The same payload builder would build the same bad body.
            AuditError::BadBody { .. } => NotSent::Fatal(Failure::new(exit::SOFTWARE, err)),
        }
    }
}

/// How long the in-flight report may take to record its cancellation
/// before `stop` gives up on it; systemd expects the exit within a second.
const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// How long after SIGTERM/SIGINT the process exits even if the service
/// loop never got to handle the signal (its thread blocked in a read).
const STOP_DEADLINE: Duration = Duration::from_millis(900);

/// The last line of defence for "SIGTERM stops the service within a
/// second": a thread of its own that also waits for SIGTERM/SIGINT and, if
/// the process is still there [`STOP_DEADLINE`] later, exits. It only acts
/// when the service loop's thread is blocked (a read that never returns),
/// which no task on that thread can interrupt.
fn exit_soon_after_stop_signals_whatever_blocks() {
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(|| {
            let Ok(runtime) = Runtime::current_thread() else {
                warn!("cannot start the stop-deadline thread's runtime");
                return;
            };
            let signalled = runtime.block_on(async {
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return false;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tokio::time::sleep(STOP_DEADLINE).await;
                true
            });
            if signalled {
                error!(
                    "the service loop did not stop within {} ms of the stop signal (it is \
                     blocked); exiting without it",
                    STOP_DEADLINE.as_millis()
                );
                notify::stopping(false);
                std::process::exit(exit::OK.into());
            }
        });
    if let Err(err) = spawned {
        warn!("cannot start the stop-deadline thread: {err}");
    }
}

/// Whether the watchdog may be fed: false once a report has been running
/// longer than its timeouts allow, which means something is stuck.
pub fn healthy(report_started: Option<Instant>, report_limit: Duration, now: Instant) -> bool {
    match report_started {
        Some(started) => now.saturating_duration_since(started) <= report_limit,
        None => true,
    }
}

/// The longest a report may take: reading the local files (machine id,
/// os-release), each facts source, the stored server GUID and the request
/// itself are each bounded by `surveyclient_timeout`.
fn report_limit(settings: &Settings) -> Duration {
    let steps = settings.facts.len() as u32 + 3;
    settings.timeout.saturating_mul(steps) + STUCK_GRACE
}

fn timing(settings: &Settings) -> Timing {
    Timing {
        interval: settings.interval,
        start_delay: settings.start_delay,
        error_delay: settings.error_delay,
    }
}

/// The log back from the report task, the consent now on record in it
/// (see [`Service::recorded_consent`]) and how the report went.
type ReportResult = (
    AuditLog,
    Option<Consent>,
    Result<Option<Attempt>, AuditError>,
);

/// A configuration being read off the loop; `Err` says why it was not.
type Reloading = Pin<Box<dyn Future<Output = Result<Loaded, String>> + Send>>;

struct InFlight {
    handle: JoinHandle<ReportResult>,
    cancel: oneshot::Sender<()>,
    started: Instant,
}

struct Service {
    config_path: PathBuf,
    settings: Settings,
    /// `None` while a report task holds it, or while it is closed (damaged,
    /// or not opened yet after a change of path): then it is opened again
    /// before the next report.
    audit: Option<AuditLog>,
    /// When the next report starts; `None` when reporting is off or a
    /// report is in flight.
    next: Option<Instant>,
    in_flight: Option<InFlight>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    last_outcome: Option<String>,
    /// Set by whatever met a failure only the admin can end; the loop
    /// returns it once the event that found it is handled.
    fatal: Option<Failure>,
    /// Set when the last reload was rejected; shown in STATUS.
    reload_problem: Option<String>,
    reload_generation: u64,
    /// The configuration being read for a SIGHUP.
    reloading: Option<Reloading>,
    /// Another SIGHUP came while `reloading`: the file may have changed
    /// after it was read, so it is read again before the reload ends.
    reload_again: bool,
    /// The consent file as it was when the service started or last recorded
    /// it. While the service holds the audit log, `surveyd consent` can
    /// only write the file; a report that finds it changed records the
    /// answer in the audit log before anything else.
    recorded_consent: Option<Consent>,
}

impl Service {
    fn new(config_path: PathBuf, settings: Settings, audit: Option<AuditLog>) -> Service {
        let mut service = Service {
            config_path,
            settings,
            audit,
            next: None,
            in_flight: None,
            failures: 0,
            last_outcome: None,
            fatal: None,
            reload_problem: None,
            reload_generation: 0,
            reloading: None,
            reload_again: false,
            recorded_consent: None,
        };
        service.schedule_first();
        service
    }

    async fn run(mut self) -> Result<(), Failure> {
        let (mut hup, mut term, mut int, mut usr1) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(hup), Ok(term), Ok(int), Ok(usr1)) => (hup, term, int, usr1),
            (Err(err), ..) | (_, Err(err), ..) | (.., Err(err), _) | (.., Err(err)) => {
                return Err(Failure::new(
                    exit::OSERR,
                    format!("cannot install the signal handlers: {err}"),
                ));
            }
        };
        let mut watchdog = notify::watchdog_period().map(|period| {
            let mut tick = tokio::time::interval(period / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });

        // An answer given while the service was stopped was recorded by
        // `surveyd consent` itself.
        self.recorded_consent = report::read_consent(&self.settings).await;
        info!(
            "surveyd {} started with {}; {}",
            env!("CARGO_PKG_VERSION"),
            self.config_path.display(),
            self.plan()
        );
        notify::ready(&self.status_line());
        self.write_reload_status("ok");

        loop {
            let due = self.next.filter(|_| self.in_flight.is_none());
            tokio::select! {
                _ = hup.recv() => self.reload(),
                _ = usr1.recv() => self.report_now(),
                _ = term.recv() => return self.stop().await,
                _ = int.recv() => return self.stop().await,
                _ = async { watchdog.as_mut().unwrap().tick().await }, if watchdog.is_some() => {
                    let started = self.in_flight.as_ref().map(|f| f.started);
                    if healthy(started, report_limit(&self.settings), Instant::now()) {
                        notify::watchdog();
                    } else {
                        error!("a report has been running longer than its timeouts allow; \
                                no longer feeding the watchdog");
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                    self.start_report();
                }
                loaded = reload_finished(&mut self.reloading), if self.reloading.is_some() => {
                    self.reloading = None;
                    self.finish_reload(loaded);
                }
                joined = report_finished(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.in_flight = None;
                    match joined {
                        Ok(result) => self.finish_report(result),
                        Err(err) => {
                            return Err(Failure::new(
                                exit::SOFTWARE,
                                format!("the report task failed: {err}"),
                            ));
                        }
                    }
                    notify::status(&self.status_line());
                }
            }
            if let Some(failure) = self.fatal.take() {
                return Err(failure);
            }
        }
    }

    fn schedule_first(&mut self) {
        if !self.settings.enabled() {
            self.next = None;
            return;
        }
        let state = &self.settings.state_dir;
        let delay = scheduler::first_delay(
            timing(&self.settings),
            state::last_success(state),
            state::last_attempt(state),
            SystemTime::now(),
            &mut rand::thread_rng(),
        );
        self.next = Some(Instant::now() + delay);
    }

    /// SIGUSR1 (`systemctl kill -s USR1 surveyd`): report now instead of
    /// at the scheduled time. The service owns the audit log while it runs,
    /// so this is how an admin sends by hand without stopping it.
    fn report_now(&mut self) {
        if !self.settings.enabled() {
            warn!("SIGUSR1 ignored: reporting is off (surveyclient_interval = 0)");
        } else if self.in_flight.is_some() {
            info!("SIGUSR1: a report is already being sent");
        } else {
            info!("SIGUSR1: sending a report now");
            self.next = Some(Instant::now());
        }
    }

    fn start_report(&mut self) {
        self.next = None;
        if self.audit.is_none() {
            // Never waits for the lock: the loop must keep going.
            match report::open_audit(&self.settings, Duration::ZERO) {
                Ok(audit) => self.audit = Some(audit),
                Err(err) => {
                    self.finish_report_not_sent(err.into());
                    notify::status(&self.status_line());
                    return;
                }
            }
        }
        let Some(mut audit) = self.audit.take() else {
            return;
        };
        let settings = self.settings.clone();
        let recorded = self.recorded_consent.clone();
        let (cancel, mut cancelled) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            // Read before every report, so `surveyd consent` applies to the
            // next one without a restart.
            let consent = tokio::select! {
                consent = report::read_consent(&settings) => consent,
                _ = &mut cancelled => return (audit, recorded, Ok(None)),
            };
            if let Some(answer) = consent.as_ref().filter(|c| Some(*c) != recorded.as_ref()) {
                if let Err(err) = report::record_consent(&mut audit, answer) {
                    return (audit, recorded, Err(err));
                }
                // `surveyd consent no` while the service holds the log: the
                // deletion it could not ask for is asked here, first.
                if answer.mode == ConsentMode::Local {
                    // A cancelled oneshot must not be polled again, so a
                    // stop during the deletions ends the task here.
                    let withdrawn = async {
                        let facts = tokio::select! {
                            facts = facts::collect(&settings, Path::new("/")) => facts,
                            _ = &mut cancelled => return Ok(true),
                        };
                        match forget::withdrawal_requests(&settings, &facts, recorded.as_ref()) {
                            Ok(requests) => {
                                for request in &requests {
                                    let mut stopped = false;
                                    let cancel = async {
                                        let _ = (&mut cancelled).await;
                                        stopped = true;
                                    };
                                    forget::request_deletion(
                                        &settings, &mut audit, request, cancel,
                                    )
                                    .await?;
                                    if stopped {
                                        return Ok(true);
                                    }
                                }
                            }
                            Err(err) => warn!(
                                "consent withdrawn, but no deletion could be asked for: {err}"
                            ),
                        }
                        Ok(false)
                    };
                    match withdrawn.await {
                        Ok(false) => {}
                        Ok(true) => return (audit, consent.clone(), Ok(None)),
                        Err(err) => return (audit, recorded, Err(err)),
                    }
                }
            }
            let recorded = consent.clone();
            let mode = report::mode(&settings, consent);
            let prepared = async {
                match &mode {
                    Mode::Upload(consent) => report::prepare_consented(&settings, consent).await,
                    Mode::Local | Mode::Off => report::prepare(&settings).await,
                }
            };
            let payload = tokio::select! {
                payload = prepared => payload,
                _ = &mut cancelled => return (audit, recorded, Ok(None)),
            };
            let result = match mode {
                Mode::Upload(_) => {
                    report::send(&settings, &mut audit, &payload, async {
                        let _ = cancelled.await;
                    })
                    .await
                }
                // Off never schedules a report; whatever it is, nothing leaves.
                Mode::Local | Mode::Off => report::keep_local(&mut audit, &payload),
            };
            (audit, recorded, result.map(Some))
        });
        self.in_flight = Some(InFlight {
            handle,
            cancel,
            started: Instant::now(),
        });
        notify::status("sending a report");
    }

    fn finish_report(&mut self, (audit, recorded_consent, result): ReportResult) {
        self.recorded_consent = recorded_consent;
        let (result, not_sent) = match result {
            Ok(attempt) => (attempt, None),
            Err(err) => (None, Some(NotSent::from(err))),
        };
        // A held log is let go of (and its lock with it), so that the
        // admin can run `surveyd audit new-chain`.
        let held = matches!(not_sent, Some(NotSent::Held(_)));
        self.audit = (!held).then_some(audit);
        self.sync_audit_settings();
        if let Some(not_sent) = not_sent {
            return self.finish_report_not_sent(not_sent);
        }
        let mut rng = rand::thread_rng();
        let timing = timing(&self.settings);
        let delay = match result {
            Some(attempt) if matches!(attempt.outcome, report::Outcome::KeptLocal) => {
                self.failures = 0;
                self.last_outcome = Some(format!(
                    "report {} recorded locally, not sent (no consent to upload; see \
                     `surveyd consent`) at {}",
                    attempt.seq,
                    humantime::format_rfc3339_seconds(SystemTime::now())
                ));
                scheduler::after_success(timing, &mut rng)
            }
            Some(attempt) if attempt.outcome.is_success() => {
                self.failures = 0;
                self.last_outcome = Some(format!(
                    "report {} accepted ({}) at {}",
                    attempt.seq,
                    attempt.outcome.describe(),
                    humantime::format_rfc3339_seconds(SystemTime::now())
                ));
                scheduler::after_success(timing, &mut rng)
            }
            Some(attempt) => {
                self.failures += 1;
                self.last_outcome = Some(format!(
                    "report {} failed ({}) at {}",
                    attempt.seq,
                    attempt.outcome.describe(),
                    humantime::format_rfc3339_seconds(SystemTime::now())
                ));
                let retry_after = match &attempt.outcome {
                    report::Outcome::Answered(response) => response.retry_after,
                    _ => None,
                };
                scheduler::after_failure(timing, self.failures, retry_after, &mut rng)
            }
            None => return,
        };
        self.next = self.settings.enabled().then(|| Instant::now() + delay);
    }

    /// The audit log could not be opened or written: nothing was sent.
    fn finish_report_not_sent(&mut self, not_sent: NotSent) {
        let err = match not_sent {
            NotSent::Retry(err) | NotSent::Held(err) => err,
            NotSent::Fatal(failure) => {
                self.fatal = Some(failure);
                return;
            }
        };
        self.failures += 1;
        error!("report not sent: {err}");
        self.last_outcome = Some(format!("not sent: {err}"));
        let delay = scheduler::after_failure(
            timing(&self.settings),
            self.failures,
            None,
            &mut rand::thread_rng(),
        );
        self.next = self.settings.enabled().then(|| Instant::now() + delay);
    }

    /// SIGHUP: says RELOADING and starts reading the configuration on a
    /// blocking thread, bounded by `surveyclient_timeout`, so a slow or
    /// hostile config file never stalls the watchdog or SIGTERM.
    fn reload(&mut self) {
        if self.reloading.is_some() {
            info!("SIGHUP during a reload: the configuration will be read once more");
            self.reload_again = true;
            return;
        }
        notify::reloading();
        self.start_loading();
    }

    fn start_loading(&mut self) {
        let path = self.config_path.clone();
        let limit = self.settings.timeout;
        self.reloading = Some(Box::pin(async move {
            let load =
                tokio::task::spawn_blocking(move || crate::daemon::facts::load_settings(&path));
            match tokio::time::timeout(limit, load).await {
                Ok(Ok(Ok(loaded))) => Ok(loaded),
                Ok(Ok(Err(err))) => Err(err.to_string()),
                Ok(Err(err)) => Err(format!("reading the configuration failed: {err}")),
                Err(_) => Err(format!(
                    "reading the configuration took longer than surveyclient_timeout ({} s)",
                    limit.as_secs()
                )),
            }
        }));
    }

    fn finish_reload(&mut self, loaded: Result<Loaded, String>) {
        if std::mem::take(&mut self.reload_again) {
            self.start_loading();
            return;
        }
        let outcome = match loaded {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    warn!("{warning}");
                }
                self.apply(loaded.settings);
                self.reload_problem = None;
                info!("configuration reloaded; {}", self.plan());
                "ok".to_string()
            }
            Err(err) => {
                error!("reload rejected, keeping the running configuration: {err}");
                self.reload_problem = Some(format!("reload rejected: {err}"));
                format!("failed: {err}")
            }
        };
        // READY and the new STATUS go out before `surveyd reload` is told
        // the outcome: systemd reads notifications before it sees the
        // ExecReload process exit, so when `systemctl reload` returns,
        // `systemctl status` already shows the new state.
        notify::ready(&self.status_line());
        self.write_reload_status(&outcome);
    }

    fn apply(&mut self, new: Settings) {
        let old = std::mem::replace(&mut self.settings, new);
        let audit_changed = (old.audit_log.as_path(), old.audit_max_size, old.audit_keep)
            != (
                self.settings.audit_log.as_path(),
                self.settings.audit_max_size,
                self.settings.audit_keep,
            );
        // While a report holds the log, finish_report applies the change.
        if audit_changed && self.in_flight.is_none() {
            self.sync_audit_settings();
        }
        let new = &self.settings;
        if !new.enabled() {
            self.next = None;
            return;
        }
        if timing(&old) == timing(new) && old.enabled() {
            return;
        }
        if self.in_flight.is_some() {
            // finish_report schedules with the new timing.
            return;
        }
        // The new interval counts from the last success, as if it had
        // always been in force; if that moment has passed, report now.
        let now = SystemTime::now();
        let delay = match state::last_success(&new.state_dir) {
            Some(last) if self.failures == 0 => (last + new.interval)
                .duration_since(now)
                .unwrap_or(Duration::ZERO),
            _ => scheduler::first_delay(
                timing(new),
                None,
                state::last_attempt(&new.state_dir),
                now,
                &mut rand::thread_rng(),
            ),
        };
        self.next = Some(Instant::now() + delay);
    }

    /// Brings the open audit log in line with the settings: new rotation
    /// limits apply to it as it is (reopening would wait on its own lock);
    /// a new path closes it and opens the new one without waiting for a
    /// lock. If that fails it is tried again before the next report.
    fn sync_audit_settings(&mut self) {
        let Some(audit) = &mut self.audit else {
            return;
        };
        if audit.path() == self.settings.audit_log {
            audit.set_limits(
                self.settings.audit_max_size,
                self.settings.audit_keep.into(),
            );
            return;
        }
        self.audit = None;
        match report::open_audit(&self.settings, Duration::ZERO) {
            Ok(audit) => self.audit = Some(audit),
            Err(err) => error!(
                "cannot open the audit log {}: {err}; trying again before the next report",
                self.settings.audit_log.display()
            ),
        }
    }

    async fn stop(mut self) -> Result<(), Failure> {
        notify::stopping(true);
        if let Some(in_flight) = self.in_flight.take() {
            let _ = in_flight.cancel.send(());
            match tokio::time::timeout(CANCEL_GRACE, in_flight.handle).await {
                Ok(Ok(result)) => self.finish_report(result),
                Ok(Err(err)) => error!("report task failed while stopping: {err}"),
                Err(_) => error!(
                    "the report in flight did not end within {} ms of its cancellation; \
                     stopping without its result",
                    CANCEL_GRACE.as_millis()
                ),
            }
        }
        info!("surveyd stopped");
        // The cancelled report may have met a failure that outlives it.
        self.fatal.map_or(Ok(()), Err)
    }

    /// What the service will do, for logs.
    fn plan(&self) -> String {
        if self.settings.enabled() {
            format!(
                "reporting to {} every {} s",
                self.settings.url,
                self.settings.interval.as_secs()
            )
        } else {
            "reporting is off (surveyclient_interval = 0)".to_string()
        }
    }

    /// The one-line STATUS shown by `systemctl status`.
    fn status_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(problem) = &self.reload_problem {
            parts.push(problem.clone());
        }
        match (self.settings.enabled(), self.next, &self.in_flight) {
            (false, _, _) => parts.push("reporting off (surveyclient_interval = 0)".into()),
            (true, _, Some(_)) => parts.push("sending a report".into()),
            (true, Some(next), None) => {
                let wait = next.saturating_duration_since(Instant::now());
                let at = SystemTime::now() + wait;
                parts.push(format!(
                    "next report at {} (in {} s)",
                    humantime::format_rfc3339_seconds(at),
                    wait.as_secs()
                ));
            }
            (true, None, None) => parts.push("no report scheduled".into()),
        }
        if let Some(outcome) = &self.last_outcome {
            parts.push(format!("last: {outcome}"));
        }
        parts.join("; ")
    }

    /// Records the reload's outcome where `surveyd reload` (ExecReload)
    /// waits for it, so `systemctl reload` returns only once the new
    /// configuration is in force or rejected.
    fn write_reload_status(&mut self, outcome: &str) {
        self.reload_generation += 1;
        reload::record(self.reload_generation, outcome);
    }
}

/// Waits for the reload in progress; only polled while there is one.
async fn reload_finished(reloading: &mut Option<Reloading>) -> Result<Loaded, String> {
    match reloading {
        Some(load) => load.await,
        None => std::future::pending().await,
    }
}

/// Waits for the report in flight; only polled while there is one.
async fn report_finished(
    in_flight: &mut Option<InFlight>,
) -> Result<ReportResult, tokio::task::JoinError> {
    match in_flight {
        Some(in_flight) => (&mut in_flight.handle).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_fed_only_while_no_report_is_overdue() {
        let now = Instant::now();
        let limit = Duration::from_secs(40);
        assert!(healthy(None, limit, now), "idle loop is healthy");
        assert!(healthy(Some(now - Duration::from_secs(5)), limit, now));
        assert!(healthy(Some(now - limit), limit, now));
        assert!(
            !healthy(Some(now - limit - Duration::from_secs(1)), limit, now),
            "a report past every timeout means the loop is stuck"
        );
    }

    #[test]
    fn report_limit_covers_every_bounded_step() {
        let mut settings = Settings {
            timeout: Duration::from_secs(30),
            ..Settings::default()
        };
        assert_eq!(report_limit(&settings), Duration::from_secs(100));
        settings.facts = vec![crate::daemon::settings::FactSource::KopanoMysql; 2];
        assert_eq!(report_limit(&settings), Duration::from_secs(160));
    }

    #[test]
    fn only_what_no_retry_or_restart_can_end_is_fatal() {
        let path = || PathBuf::from("/var/log/surveyd/audit.log");
        let fatal_code = |err| match NotSent::from(err) {
            NotSent::Fatal(failure) => Some(failure.code()),
            _ => None,
        };
        let why = "every user can write it".to_string();
        assert_eq!(
            fatal_code(AuditError::UnsafeDir { path: path(), why }),
            Some(exit::CANTCREAT)
        );
        assert_eq!(
            fatal_code(AuditError::SeqExhausted { path: path() }),
            Some(exit::CANTCREAT)
        );
        let reason = "a bug".to_string();
        assert_eq!(
            fatal_code(AuditError::BadBody { reason }),
            Some(exit::SOFTWARE)
        );
        let source = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        assert!(matches!(
            NotSent::from(AuditError::Write {
                path: path(),
                source
            }),
            NotSent::Retry(_)
        ));
        let what = "line 2 does not verify".to_string();
        assert!(matches!(
            NotSent::from(AuditError::Damaged { what }),
            NotSent::Held(_)
        ));
    }
}
