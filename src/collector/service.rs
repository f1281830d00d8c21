//! `surveyd-collector serve`: the service loop. It opens the database,
//! starts the writer and the listener, then talks to systemd (READY,
//! STATUS, WATCHDOG, RELOADING/MONOTONIC_USEC on SIGHUP, STOPPING) and
//! shuts down cleanly: stop accepting, let requests finish, let the writer
//! commit what it holds, exit 0.
//!
//! Fatal or retried, as `crate::sys` sets the rule: what stops the service
//! from starting (configuration and the receipt key 78, a key that cannot
//! be created 73, database 69, listening socket and signals 71) and a
//! listener that stopped (70) need the admin or a fix, so [`serve`] returns
//! them as a [`Failure`] (logged, in STATUS, the exit
//! status). A bad configuration on SIGHUP keeps the running one; a failed
//! commit answers its requests with an error that the senders retry; a
//! failed connection ends that connection only.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::config::{Config, TlsConfig};
use super::dashboard::serve::{Listener, Pages};
use super::http::{accept_loop, Ingest, Limits};
use super::limits::raise_nofile_limit;
use super::receipt_key;
use super::store::{spawn_writer, Access, Store, WriterConfig};
use super::summary::StoreSummaries;
use crate::exit;
use crate::sys::{notify, Failure};

/// How often STATUS is refreshed with the counters.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How often an idle writer is asked whether a UTC day ended (a writing
/// one notices at its next batch): a day closes at most this late.
const DAY_CLOSE_EVERY: Duration = Duration::from_secs(60);

pub async fn serve(config_path: &Path) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::new(exit::CONFIG, e))?;
    let addr = config
        .listen_addr()
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let (key, generated) = receipt_key::load_or_generate(&config.receipt_key)
        .map_err(|e| Failure::new(e.exit_code(), e))?;
    if generated {
        tracing::info!(
            "generated the receipt key {}: public key {} (key id {}); publish it for \
             surveyclient_collector_key",
            config.receipt_key.display(),
            key.public(),
            key.public().key_id()
        );
    }
    let key_id = key.public().key_id();
    let database = config.database();
    let store = Store::open(&database, Access::Serve)
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e))?;
    let tls = match &config.tls {
        Some(t) => Some(TlsAcceptor::from(
            t.server_config()
                .map_err(|e| Failure::new(exit::CONFIG, e))?,
        )),
        None => None,
    };
    let listener = listen(addr)
        .map_err(|e| Failure::new(exit::OSERR, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::OSERR, e))?;

    let admin = match &config.admin {
        Some(admin) => {
            let addr = admin
                .listen_addr()
                .map_err(|e| Failure::new(exit::CONFIG, e))?;
            let listener = listen(addr).map_err(|e| {
                Failure::new(
                    exit::OSERR,
                    format!("cannot listen on {addr} (admin.listen): {e}"),
                )
            })?;
            Some(listener)
        }
        None => None,
    };
    // Summaries are read over connections of their own, so a slow rollup
    // query never holds up the writer.
    let pages = Pages::new(
        Arc::new(StoreSummaries::new(database.clone())),
        config.min_group,
        config.admin.as_ref().and_then(|a| a.token.as_deref()),
    );

    let nofile = raise_nofile_limit();
    let limits = Limits::from_config(&config, nofile);
    let (writer, writer_task) = spawn_writer(
        store,
        WriterConfig {
            batch_size: config.batch_size,
            retention_days: config.retention_days,
        },
    );
    let mut ingest = Ingest::new(&config, limits, tls, writer, key);
    ingest.pages = Some(Arc::new(pages));
    let ingest = Arc::new(ingest);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut acceptor = tokio::spawn(accept_loop(
        listener,
        Listener::Public,
        ingest.clone(),
        shutdown_rx.clone(),
    ));
    let admin_local = match &admin {
        Some(l) => Some(l.local_addr().map_err(|e| Failure::new(exit::OSERR, e))?),
        None => None,
    };
    let mut admin_acceptor =
        admin.map(|l| tokio::spawn(accept_loop(l, Listener::Admin, ingest.clone(), shutdown_rx)));

    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let place = format!("{scheme}://{local} into {}", database.display());
    tracing::info!("listening on {local} ({place}); receipts signed by key id {key_id}");
    if let Some(addr) = admin_local {
        tracing::info!("admin listener on {addr}: the dashboard is http://{addr}/");
    }
    let mut monitor = Monitor {
        place,
        note: None,
        nofile,
    };
    notify::ready(&monitor.status(&ingest));

    let signals = |kind| signal(kind).map_err(|e| Failure::new(exit::OSERR, e));
    let mut hup = signals(SignalKind::hangup())?;
    let mut term = signals(SignalKind::terminate())?;
    let mut int = signals(SignalKind::interrupt())?;
    let watchdog = notify::watchdog_period();
    // Without a watchdog the tick still runs, just rarely and unused.
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |t| t / 2));
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut day_close_tick = tokio::time::interval(DAY_CLOSE_EVERY);
    let mut running = config;

    loop {
        tokio::select! {
            _ = hup.recv() => {
                running = reload(config_path, running, &ingest, &mut monitor);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                // Ping only while both halves work: the listener still
                // accepts and no commit has hung for half the timeout.
                let limit = watchdog.unwrap_or_default() / 2;
                let listening = !acceptor.is_finished()
                    && admin_acceptor.as_ref().is_none_or(|a| !a.is_finished());
                if listening && ingest.writer().health.healthy(limit) {
                    notify::watchdog();
                } else {
                    tracing::error!("unhealthy: withholding the watchdog ping");
                }
            }
            _ = status_tick.tick() => {
                notify::status(&monitor.status(&ingest));
                // A burst that ended in refusals never passed the trim
                // check after a parsed report.
                ingest.trim_if_idle();
            }
            _ = day_close_tick.tick() => ingest.writer().close_days(),
            _ = &mut acceptor => {
                return Err(Failure::new(exit::SOFTWARE, "the listener stopped unexpectedly"));
            }
            Some(_) = async { Some(admin_acceptor.as_mut()?.await) } => {
                return Err(Failure::new(exit::SOFTWARE, "the admin listener stopped unexpectedly"));
            }
        }
    }

    notify::stopping(true);
    tracing::info!("stopping: finishing open requests");
    let _ = shutdown_tx.send(true);
    let _ = acceptor.await;
    if let Some(admin) = admin_acceptor {
        let _ = admin.await;
    }
    // The last handle to the writer goes with `ingest`; the writer then
    // commits whatever is still queued and exits.
    let (stored, deleted, refused) = monitor.counts(&ingest);
    drop(ingest);
    let _ = writer_task.await;
    tracing::info!("stopped after {stored} reports stored, {deleted} deletions, {refused} refused");
    Ok(())
}

/// Connections the kernel queues for accept. tokio's default of 1024
/// fills within milliseconds when one address opens thousands of
/// connections at once; a client whose SYN finds the queue full waits a
/// whole second for the retransmit, however fast those are shed.
/// The kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As TcpListener::bind does: a restart can bind while old connections
    // of the previous process linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What STATUS says.
struct Monitor {
    place: String,
    /// Set while the configuration on disk is not the one running.
    note: Option<String>,
    /// The open-file limit the connection caps are fitted to.
    nofile: u64,
}

impl Monitor {
    fn counts(&self, ingest: &Ingest) -> (u64, u64, u64) {
        (
            ingest.stored.load(Ordering::Relaxed),
            ingest.deleted.load(Ordering::Relaxed),
            ingest.refused.load(Ordering::Relaxed),
        )
    }

    fn status(&self, ingest: &Ingest) -> String {
        let (stored, deleted, refused) = self.counts(ingest);
        let base = format!(
            "listening on {}; {stored} reports stored, {deleted} deletions, {refused} refused; \
             {} connections open, {} shed",
            self.place,
            ingest.connections.open(),
            ingest.connections.shed.load(Ordering::Relaxed)
        );
        match &self.note {
            Some(note) => format!("{note}; {base}"),
            None => base,
        }
    }
}

/// Re-read the file and apply what can change without a restart: path,
/// body limit, connection caps, rate limit, TLS certificate. A bad file
/// changes nothing.
fn reload(path: &Path, running: Config, ingest: &Ingest, monitor: &mut Monitor) -> Config {
    notify::reloading();
    // TLS material is loaded here once more, as the files may have changed
    // since the check inside `Config::load`.
    let loaded = Config::load(path).map_err(|e| e.to_string()).and_then(|c| {
        let tls = c.tls.as_ref().map(TlsConfig::server_config).transpose()?;
        Ok((c, tls))
    });
    let next = match loaded {
        Ok((new, tls)) => {
            ingest.set_limits(Limits::from_config(&new, monitor.nofile));
            if let Some(tls) = tls {
                ingest.set_tls(TlsAcceptor::from(tls));
            }
            let needs_restart: Vec<&str> = [
                ("listen", running.listen != new.listen),
                ("database", running.database != new.database),
                ("receipt_key", running.receipt_key != new.receipt_key),
                ("batch_size", running.batch_size != new.batch_size),
                (
                    "retention_days",
                    running.retention_days != new.retention_days,
                ),
                (
                    "max_body_memory_bytes",
                    running.max_body_memory_bytes != new.max_body_memory_bytes,
                ),
                ("tls", running.tls.is_some() != new.tls.is_some()),
                ("min_group", running.min_group != new.min_group),
                ("admin", running.admin != new.admin),
            ]
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
            if needs_restart.is_empty() {
                monitor.note = None;
                tracing::info!("configuration reloaded");
            } else {
                let keys = needs_restart.join(", ");
                tracing::warn!("configuration reloaded; {keys} take effect after a restart");
                monitor.note = Some(format!("{keys} changed, restart to apply"));
            }
            new
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            monitor.note = Some(format!(
                "reload failed, running the previous configuration: {e}"
            ));
            running
        }
    };
    notify::ready(&monitor.status(ingest));
    next
}
