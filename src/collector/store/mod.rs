//! The installation table: its schema and migrations (shared by both
//! backends), opening a database for serving or for reading, the reads
//! behind `report` and `stats`, and the single batching writer that every
//! HTTP handler hands its report to.
//!
//! Timestamps are stored as Unix seconds (UTC) in BIGINT columns so that the
//! same DDL, the same queries and the same comparisons work unchanged in
//! SQLite and PostgreSQL.

mod postgres;
mod sqlite;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::Database;
use super::history;
use super::ingest::Report;
use super::summary::{Summary, SummarySource};
use crate::wire;

/// Every column of the table, in table order, by name.
pub fn columns() -> impl Iterator<Item = &'static str> {
    wire::TABLE.iter().map(|c| c.name())
}

/// Schema migrations, in order; `schema_version` holds how many have run.
/// Each is plain SQL that SQLite and PostgreSQL both accept.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE installations (
    uid                TEXT NOT NULL PRIMARY KEY,
    machine_id_sha256  TEXT,
    server_guid_sha256 TEXT,
    first_seen         BIGINT NOT NULL,
    last_update        BIGINT NOT NULL,
    usercnt_active     BIGINT,
    usercnt_contact    BIGINT,
    usercnt_equipment  BIGINT,
    usercnt_na_user    BIGINT,
    usercnt_nonactive  BIGINT,
    userplugin         TEXT,
    osrelease          TEXT,
    utsname            TEXT,
    program_name       TEXT,
    program_version    TEXT,
    flags              INTEGER NOT NULL,
    usercnt_room       BIGINT,
    attachment_storage TEXT
);
",
    "
ALTER TABLE installations ADD COLUMN deletion_commitment TEXT;
",
    "
ALTER TABLE installations ADD COLUMN cpu_count BIGINT;
",
    ROLLUP_MIGRATION,
    "
ALTER TABLE installations ADD COLUMN previous_update BIGINT;
",
];
// No index on last_update: every report moves it, so such an index costs
// two extra random page writes per report, while only the occasional
// `stats` would read it (a full scan of a million rows takes well under a
// second).

/// The daily history (see `history`), backfilled from the table as well
/// as it can: the table only knows two dates per installation, so each row
/// counts as active on its `last_update` day (with its current values and
/// users) and new on its `first_seen` day; reports and gone start at 0.
const ROLLUP_MIGRATION: &str = "
CREATE TABLE rollup_days (
    day       BIGINT NOT NULL PRIMARY KEY,
    active    BIGINT NOT NULL,
    new       BIGINT NOT NULL,
    gone      BIGINT NOT NULL,
    reports   BIGINT NOT NULL,
    users_sum BIGINT NOT NULL
);
CREATE TABLE rollup_groups (
    day       BIGINT NOT NULL,
    dimension TEXT NOT NULL,
    value     TEXT NOT NULL,
    active    BIGINT NOT NULL,
    new       BIGINT NOT NULL,
    gone      BIGINT NOT NULL,
    PRIMARY KEY (day, dimension, value)
);
CREATE TABLE rollup_users (
    day           BIGINT NOT NULL,
    bucket        INTEGER NOT NULL,
    installations BIGINT NOT NULL,
    PRIMARY KEY (day, bucket)
);
CREATE TABLE rollup_hours (
    hour    BIGINT NOT NULL PRIMARY KEY,
    reports BIGINT NOT NULL
);
CREATE TABLE closed_days (
    day       BIGINT NOT NULL PRIMARY KEY,
    closed_at BIGINT NOT NULL
);
INSERT INTO rollup_days (day, active, new, gone, reports, users_sum)
SELECT day, CAST(SUM(active) AS BIGINT), CAST(SUM(new) AS BIGINT), 0, 0,
       CAST(SUM(users) AS BIGINT)
FROM (
    SELECT last_update / 86400 AS day, 1 AS active, 0 AS new,
           COALESCE(usercnt_active, 0) AS users FROM installations
    UNION ALL
    SELECT first_seen / 86400, 0, 1, 0 FROM installations
) AS t GROUP BY day;
INSERT INTO rollup_groups (day, dimension, value, active, new, gone)
SELECT day, dimension, value, CAST(SUM(active) AS BIGINT), CAST(SUM(new) AS BIGINT), 0
FROM (
    SELECT last_update / 86400 AS day, 'program_name' AS dimension,
           COALESCE(program_name, 'unknown') AS value,
           1 AS active, 0 AS new FROM installations
    UNION ALL
    SELECT first_seen / 86400, 'program_name',
           COALESCE(program_name, 'unknown'),
           0, 1 FROM installations
    UNION ALL
    SELECT last_update / 86400, 'program_version',
           COALESCE(program_version, 'unknown'),
           1, 0 FROM installations
    UNION ALL
    SELECT first_seen / 86400, 'program_version',
           COALESCE(program_version, 'unknown'),
           0, 1 FROM installations
    UNION ALL
    SELECT last_update / 86400, 'osrelease',
           COALESCE(osrelease, 'unknown'),
           1, 0 FROM installations
    UNION ALL
    SELECT first_seen / 86400, 'osrelease',
           COALESCE(osrelease, 'unknown'),
           0, 1 FROM installations
    UNION ALL
    SELECT last_update / 86400, 'userplugin',
           COALESCE(userplugin, 'unknown'),
           1, 0 FROM installations
    UNION ALL
    SELECT first_seen / 86400, 'userplugin',
           COALESCE(userplugin, 'unknown'),
           0, 1 FROM installations
    UNION ALL
    SELECT last_update / 86400, 'id_scheme',
           CASE WHEN flags & 2 <> 0 THEN 'app-v1' WHEN flags & 4 <> 0 THEN 'sha256' ELSE 'upstream' END,
           1, 0 FROM installations
    UNION ALL
    SELECT first_seen / 86400, 'id_scheme',
           CASE WHEN flags & 2 <> 0 THEN 'app-v1' WHEN flags & 4 <> 0 THEN 'sha256' ELSE 'upstream' END,
           0, 1 FROM installations
) AS t GROUP BY day, dimension, value;
INSERT INTO rollup_users (day, bucket, installations)
WITH RECURSIVE buckets (bucket, lo, hi) AS (
    SELECT 0, CAST(0 AS BIGINT), CAST(1 AS BIGINT)
    UNION ALL
    SELECT bucket + 1, hi, hi * 2 FROM buckets WHERE bucket < 32
)
SELECT i.last_update / 86400, b.bucket, COUNT(*)
FROM installations AS i JOIN buckets AS b
  ON i.usercnt_active >= b.lo AND (i.usercnt_active < b.hi OR b.bucket = 32)
GROUP BY i.last_update / 86400, b.bucket;
";

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Every column of every row, in table order.
static SELECT_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM installations ORDER BY first_seen, uid",
        columns().collect::<Vec<_>>().join(", ")
    )
});

/// The `SET` list of both upserts: every column a later report replaces,
/// which is all but the key and `first_seen`, and the deletion commitment
/// a report sets only while the row has none. The first commitment wins:
/// a report without one (an upstream client) cannot erase it, and another
/// machine that learned the uid cannot take over the right to delete it.
///
/// It also moves the row's `last_update` into [`PREVIOUS_UPDATE`] (SQL
/// evaluates every `SET` expression on the row as it was), so the upsert's
/// `RETURNING` tells whether the report is the installation's first today
/// without a read before it: NULL on a row the statement inserted.
fn upsert_updates(excluded: &str) -> String {
    wire::TABLE
        .iter()
        .filter(|c| !matches!(c, wire::Column::Uid | wire::Column::FirstSeen))
        .map(|c| match c {
            wire::Column::DeletionCommitment => {
                format!(
                    "{0} = COALESCE(installations.{0}, {excluded}.{0})",
                    c.name()
                )
            }
            c => format!("{0} = {excluded}.{0}", c.name()),
        })
        .chain([format!(
            "{PREVIOUS_UPDATE} = installations.{}",
            wire::Column::LastUpdate.name()
        )])
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store's own column beside [`wire::TABLE`]'s: when the installation
/// reported before its last report (NULL until its second). The upserts
/// return it so the history can tell an installation's first report of
/// the day; `report` does not show it (it lists `wire::TABLE`), and
/// retention deletes it with the row.
const PREVIOUS_UPDATE: &str = "previous_update";

/// What an upsert's `RETURNING previous_update` says about the row before.
fn previous_of(previous_update: Option<i64>) -> history::Previous {
    previous_update.map_or(history::Previous::New, history::Previous::LastUpdate)
}

fn column(field: &'static wire::Field) -> &'static str {
    wire::Column::Field(field).name()
}

// `$n` parameters are understood by both SQLite and PostgreSQL.
static SELECT_TOTALS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT CAST(COUNT(*) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN last_update >= $1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN last_update >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN last_update >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN last_update >= $3 THEN {} ELSE 0 END), 0) AS BIGINT) \
         FROM installations",
        column(&wire::USERCNT_ACTIVE)
    )
});
static SELECT_BY_VERSION: LazyLock<String> = LazyLock::new(|| {
    let (name, version) = (column(&wire::PROGRAM_NAME), column(&wire::PROGRAM_VERSION));
    format!(
        "SELECT {name}, {version}, CAST(COUNT(*) AS BIGINT) \
         FROM installations WHERE last_update >= $1 GROUP BY {name}, {version}"
    )
});
static SELECT_BY_OSRELEASE: LazyLock<String> = LazyLock::new(|| {
    let os = column(&wire::OSRELEASE);
    format!(
        "SELECT {os}, CAST(COUNT(*) AS BIGINT) \
         FROM installations WHERE last_update >= $1 GROUP BY {os}"
    )
});

// The deletion's two statements; `$1` is the uid.
const SELECT_COMMITMENT: &str = "SELECT deletion_commitment FROM installations WHERE uid = $1";
const DELETE_ROW: &str = "DELETE FROM installations WHERE uid = $1";

/// One row of the table as stored: the last report of an installation
/// and when it was first and last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub first_seen: i64,
    pub last_update: i64,
    pub report: Report,
}

/// The aggregates behind `surveyd-collector stats`. Breakdowns and the
/// user total cover installations seen in the last 30 days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub total: i64,
    pub seen_24h: i64,
    pub seen_7d: i64,
    pub seen_30d: i64,
    pub active_users_30d: i64,
    /// (program name, program version, installations), most first.
    pub by_version: Vec<(Option<String>, Option<String>, i64)>,
    /// (OS release, installations), most first.
    pub by_osrelease: Vec<(Option<String>, i64)>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    fn new(context: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("{context}: {e}"))
    }
}

/// What the opener may do to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `serve`: create the database if needed and migrate it.
    Serve,
    /// `report`, `stats`: the database must exist at the current schema.
    Read,
}

pub enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

impl Store {
    pub async fn open(db: &Database, access: Access) -> Result<Store, StoreError> {
        match db {
            Database::Sqlite(path) => sqlite::Sqlite::open(path, access).map(Store::Sqlite),
            Database::Postgres(url) => postgres::Postgres::open(url, access)
                .await
                .map(Store::Postgres),
        }
    }

    pub async fn rows(&self) -> Result<Vec<Row>, StoreError> {
        match self {
            Store::Sqlite(s) => s.rows(),
            Store::Postgres(p) => p.rows().await,
        }
    }

    pub async fn stats(&self, now: i64) -> Result<Stats, StoreError> {
        let cutoffs = [now - 86_400, now - 7 * 86_400, now - 30 * 86_400];
        let mut stats = match self {
            Store::Sqlite(s) => s.stats(cutoffs)?,
            Store::Postgres(p) => p.stats(cutoffs).await?,
        };
        // Both backends sort NULLs differently; order here instead.
        stats
            .by_version
            .sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        stats
            .by_osrelease
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(stats)
    }
}

impl SummarySource for Store {
    /// The summary of `from_day..=to_day`, read from the rollup tables
    /// only (by their primary keys), never from the installation table.
    fn load_summary(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> impl std::future::Future<Output = Result<Summary, StoreError>> + Send {
        // A SQLite connection cannot be shared across threads, so its
        // (synchronous) read happens before the future is made.
        enum Read<'a> {
            Done(Result<history::RollupRows, StoreError>),
            Postgres(&'a postgres::Postgres),
        }
        let read = match self {
            Store::Sqlite(s) => Read::Done(s.rollup_rows(from_day, to_day)),
            Store::Postgres(p) => Read::Postgres(p),
        };
        async move {
            let rows = match read {
                Read::Done(rows) => rows?,
                Read::Postgres(p) => p.rollup_rows(from_day, to_day).await?,
            };
            let now = unix_now().max(0) as u64;
            Ok(history::summary_from(rows, from_day, to_day, now))
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A request to delete an installation's row, proving it comes from that
/// installation with the commitment of the secret it revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub uid: String,
    /// `wire::deletion_commitment` of the secret in the request.
    pub commitment: String,
}

/// What a handler hands the writer.
pub enum Work {
    Store(Report),
    Delete(Deletion),
}

/// What the writer did with one piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The report is committed; `time` is its row's `last_update`.
    Stored { time: i64 },
    /// No row for the uid is left, deleted in the transaction committed at
    /// `time` or absent already: deleting twice is harmless.
    Deleted { time: i64 },
    /// The row has no commitment or another one: nothing changed.
    NotProven,
}

/// Work on its way to the writer, with the way back to its handler.
struct Job {
    work: Work,
    done: oneshot::Sender<Result<Done, StoreError>>,
}

impl Job {
    fn report(&self) -> Option<&Report> {
        match &self.work {
            Work::Store(report) => Some(report),
            Work::Delete(_) => None,
        }
    }
}

/// Whether a row whose stored commitment is `stored` may be deleted by a
/// request whose secret commits to `claimed`. Constant time, so that how
/// long the answer takes tells nothing about how close a guess was.
fn proves(stored: Option<&str>, claimed: &str) -> bool {
    stored.is_some_and(|s| bool::from(s.as_bytes().ct_eq(claimed.as_bytes())))
}

/// What the writer is asked to do.
enum Message {
    Job(Job),
    /// Close the days that ended, if any (the service's tick, so that an
    /// idle collector closes days too).
    CloseDays,
}

/// What the writer needs to know beyond the store.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_size: usize,
    /// 0: keep every row forever.
    pub retention_days: u32,
}

/// Lets the watchdog tell an idle writer from one stuck in a commit.
pub struct WriterHealth {
    epoch: Instant,
    /// Milliseconds since `epoch` when the current batch began, plus one;
    /// zero while the writer waits for work.
    busy_since: AtomicU64,
    running: AtomicBool,
}

impl WriterHealth {
    fn new() -> WriterHealth {
        WriterHealth {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            running: AtomicBool::new(true),
        }
    }

    fn begin_batch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since.store(ms, Ordering::Relaxed);
    }

    fn end_batch(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// Healthy unless the writer has exited or one batch has taken longer
    /// than `limit`.
    pub fn healthy(&self, limit: Duration) -> bool {
        if !self.running.load(Ordering::Relaxed) {
            return false;
        }
        match self.busy_since.load(Ordering::Relaxed) {
            0 => true,
            since => {
                let now = self.epoch.elapsed().as_millis() as u64 + 1;
                Duration::from_millis(now.saturating_sub(since)) <= limit
            }
        }
    }
}

/// The handlers' side of the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
    pub health: Arc<WriterHealth>,
}

impl WriterHandle {
    /// Queue `work` and wait until the transaction holding it committed.
    pub async fn run(&self, work: Work) -> Result<Done, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Message::Job(Job { work, done }))
            .await
            .map_err(|_| StoreError("the writer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError("the writer has stopped".into()))?
    }

    /// Have the writer close the days that ended. A full queue means it
    /// is busy, and it checks before each batch anyway.
    pub fn close_days(&self) {
        let _ = self.tx.try_send(Message::CloseDays);
    }
}

/// Start the one writer that owns `store`. It takes the first queued
/// report, drains up to `batch_size - 1` more that are already waiting, and
/// commits them together, so throughput grows with load instead of being
/// capped at one transaction per report. Before the first batch of a new
/// UTC day (and on a `close_days` tick) it closes the days that ended:
/// retention, then the `closed_days` marker. It exits once every handle is
/// dropped and the queue is empty.
///
/// Deletions go through the same writer, so SQLite keeps one writing
/// connection and a deletion never races a report for the same row. In a
/// batch the reports are written first, then the deletions in the order
/// they came: requests that arrived together were concurrent, and "stored,
/// then deleted" is what both of their receipts then truthfully say.
pub fn spawn_writer(store: Store, config: WriterConfig) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.batch_size * 4);
    let health = Arc::new(WriterHealth::new());
    let h = health.clone();
    let task = match store {
        Store::Sqlite(s) => tokio::task::spawn_blocking(move || {
            s.run_writer(rx, config, &h);
            h.running.store(false, Ordering::Relaxed);
        }),
        Store::Postgres(p) => tokio::spawn(async move {
            p.run_writer(rx, config, &h).await;
            h.running.store(false, Ordering::Relaxed);
        }),
    };
    (WriterHandle { tx, health }, task)
}

/// Take whatever else is already queued behind `first`, up to `batch_size`.
/// A queued tick is dropped: the writer checks for ended days before every
/// batch.
fn drain_batch(first: Job, rx: &mut mpsc::Receiver<Message>, batch_size: usize) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(batch_size.min(64));
    jobs.push(first);
    while jobs.len() < batch_size {
        match rx.try_recv() {
            Ok(Message::Job(job)) => jobs.push(job),
            Ok(Message::CloseDays) => {}
            Err(_) => break,
        }
    }
    jobs
}

/// Which day the writer last checked for days to close, so that the check
/// costs a query only once a day.
#[derive(Default)]
struct DayCloser {
    checked: Option<i64>,
}

impl DayCloser {
    /// The day to check for, if today has not been checked yet.
    fn due(&self, now: i64) -> Option<i64> {
        let today = super::summary::day_of(now);
        (self.checked != Some(today)).then_some(today)
    }

    /// Record the outcome; a failure is logged and retried on the next
    /// batch or tick.
    fn done(&mut self, today: i64, result: Result<(), StoreError>) {
        match result {
            Ok(()) => self.checked = Some(today),
            Err(e) => tracing::error!("closing the days before today failed, retrying: {e}"),
        }
    }
}

/// Answer every job of a batch: `result` holds one outcome per job, in
/// order, or the error that failed the whole transaction.
fn finish_batch(jobs: Vec<Job>, result: Result<Vec<Done>, StoreError>) {
    // A handler whose client went away no longer waits; nothing to do.
    match result {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.done.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!("writing a batch of {} requests failed: {e}", jobs.len());
            for job in jobs {
                let _ = job.done.send(Err(e.clone()));
            }
        }
    }
}
