//! The embedded SQLite backend: connection settings (WAL, secure_delete),
//! migration, the batched upsert the writer thread runs, and the reads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::LazyLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::types::ToSqlOutput;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, ToSql};
use tokio::sync::mpsc;

use crate::collector::history::{self, DayCounts, Increments, RollupRows};
use crate::collector::ingest::{Report, Value};
use crate::wire::{self, Column, JsonType};

use super::{
    columns, drain_batch, finish_batch, previous_of, proves, unix_now, upsert_updates, Access,
    DayCloser, Deletion, Done, Job, Message, Row, Stats, StoreError, Work, WriterConfig,
    WriterHealth, DELETE_ROW, MIGRATIONS, PREVIOUS_UPDATE, SCHEMA_VERSION, SELECT_BY_OSRELEASE,
    SELECT_BY_VERSION, SELECT_COMMITMENT, SELECT_ROWS, SELECT_TOTALS,
};

/// `?1` the uid, `?2` the time, `?3` the flags, `?4` the deletion
/// commitment, then one parameter per stored field.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let mut field = 4;
    let values: Vec<String> = wire::TABLE
        .iter()
        .map(|c| match c {
            Column::Uid => "?1".to_owned(),
            Column::FirstSeen | Column::LastUpdate => "?2".to_owned(),
            Column::Flags => "?3".to_owned(),
            Column::DeletionCommitment => "?4".to_owned(),
            Column::Field(_) => {
                field += 1;
                format!("?{field}")
            }
        })
        .collect();
    format!(
        "INSERT INTO installations ({}) VALUES ({}) ON CONFLICT (uid) DO UPDATE SET {} \
         RETURNING {PREVIOUS_UPDATE}",
        columns().collect::<Vec<_>>().join(", "),
        values.join(", "),
        upsert_updates("excluded")
    )
});

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Value::Text(t) => t.to_sql(),
            Value::Count(n) => n.to_sql(),
        }
    }
}

/// How often the checkpointer copies committed WAL frames back into the
/// database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The WAL file is cut back to this size after it has been reset.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// WAL frames (pages) after which the checkpointer makes the WAL restart:
/// 16 MiB at the default 4 KiB page size.
const WAL_RESTART_FRAMES: i64 = 4096;

pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// `serve` holds an exclusive flock(2) on the database file for as
    /// long as it runs. SQLite's own locks are fcntl(2) locks per
    /// transaction, which happily let two collectors write side by side;
    /// flock locks are independent of them. Declared after `conn` so that
    /// it is released only after the connection closed.
    _serving: Option<Flock<File>>,
}

fn err(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::new(context, e)
}

impl Sqlite {
    pub fn open(path: &Path, access: Access) -> Result<Sqlite, StoreError> {
        let shown = path.display();
        let flags = match access {
            Access::Serve => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            Access::Read => {
                if !path.exists() {
                    return Err(StoreError(format!(
                        "database {shown} does not exist (has `surveyd-collector serve` run?)"
                    )));
                }
                OpenFlags::SQLITE_OPEN_READ_WRITE
            }
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let context = format!("database {shown}");
        let conn = Connection::open_with_flags(path, flags).map_err(err(&context))?;
        // WAL lets report/stats read while the writer commits; NORMAL
        // syncs the WAL at checkpoints, which in WAL mode still keeps every
        // committed transaction across a crash of the collector.
        // secure_delete zeroes freed pages, so an overwritten value does
        // not linger in the file.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA secure_delete = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -16384;",
        )
        .map_err(err(&context))?;
        let serving = match access {
            Access::Serve => Some(lock_for_serving(path)?),
            Access::Read => None,
        };
        let mut db = Sqlite {
            conn,
            path: path.to_owned(),
            _serving: serving,
        };
        if access == Access::Serve {
            db.migrate().map_err(err(&context))?;
        }
        let v = db.schema_version().map_err(err(&context))?;
        if v != SCHEMA_VERSION {
            return Err(StoreError(format!(
                "{context}: schema version {v}, this program uses {SCHEMA_VERSION}; \
                 an older schema is migrated by `surveyd-collector serve`"
            )));
        }
        Ok(db)
    }

    fn schema_version(&self) -> rusqlite::Result<i64> {
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(0);
        }
        Ok(self
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let current: i64 = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if current > SCHEMA_VERSION {
            // A newer schema is left alone; `open` reports the mismatch.
            return Ok(());
        }
        for sql in &MIGRATIONS[current as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
        tx.commit()
    }

    pub(super) fn run_writer(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        config: WriterConfig,
        health: &WriterHealth,
    ) {
        // A checkpoint copies the WAL into the database and fsyncs both:
        // the most expensive step of writing. Run by the writer itself (as
        // SQLite's auto-checkpoint would), it stalls every report queued
        // behind it, so a second connection does it in the background.
        let checkpointer = match Checkpointer::start(&self.path) {
            Ok(c) => {
                let off = self
                    .conn
                    .pragma_update(None, "wal_autocheckpoint", 0)
                    .and_then(|()| {
                        self.conn
                            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
                    });
                if let Err(e) = off {
                    tracing::warn!("keeping SQLite's auto-checkpoint: {e}");
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!("no background checkpointer, the writer checkpoints itself: {e}");
                None
            }
        };
        let mut closer = DayCloser::default();
        self.close_days_if_due(&mut closer, config.retention_days, health);
        while let Some(message) = rx.blocking_recv() {
            self.close_days_if_due(&mut closer, config.retention_days, health);
            let Message::Job(first) = message else {
                continue;
            };
            let jobs = drain_batch(first, &mut rx, config.batch_size);
            health.begin_batch();
            let result = self.write_batch(&jobs).map_err(err("database write"));
            health.end_batch();
            finish_batch(jobs, result);
        }
        // Stops the checkpointer; the last connection to close checkpoints
        // whatever is left.
        drop(checkpointer);
    }

    /// Store the batch and count it in the history, in one transaction;
    /// each upsert returns the row's `last_update` before it (see
    /// [`upsert_updates`]).
    fn write_batch(&mut self, jobs: &[Job]) -> rusqlite::Result<Vec<Done>> {
        let now = unix_now();
        // IMMEDIATE: the transaction reads before it writes, and a read
        // transaction that must then wait for the checkpointer to become a
        // writer fails at once (SQLite cannot wait there without risking a
        // deadlock); taking the write lock first waits in busy_timeout.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut increments = Increments::default();
        {
            let mut stmt = tx.prepare_cached(&UPSERT)?;
            for r in jobs.iter().filter_map(Job::report) {
                let fixed: [&dyn ToSql; 4] = [&r.uid, &now, &r.flags, &r.commitment];
                let values = r.values.iter().map(|v| v as &dyn ToSql);
                let previous = stmt
                    .query_row(params_from_iter(fixed.into_iter().chain(values)), |row| {
                        row.get(0)
                    })?;
                increments.add_report(r, now, previous_of(previous));
            }
        }
        add_increments(&tx, &increments)?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(match &job.work {
                Work::Store(_) => Done::Stored { time: now },
                Work::Delete(d) => delete(&tx, d, now)?,
            });
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn close_days_if_due(
        &mut self,
        closer: &mut DayCloser,
        retention_days: u32,
        health: &WriterHealth,
    ) {
        let now = unix_now();
        if let Some(today) = closer.due(now) {
            let result = self
                .close_days(today, now, retention_days, health)
                .map_err(err("closing the day"));
            closer.done(today, result);
        }
    }

    /// Close every day that ended and is not closed yet, oldest first.
    fn close_days(
        &mut self,
        today: i64,
        now: i64,
        retention_days: u32,
        health: &WriterHealth,
    ) -> rusqlite::Result<()> {
        let last_closed: Option<i64> =
            self.conn
                .query_row("SELECT MAX(day) FROM closed_days", [], |r| r.get(0))?;
        for day in history::days_to_close(today, last_closed) {
            // One transaction per retention batch, each short enough for
            // the watchdog; the marker goes with the last one.
            loop {
                health.begin_batch();
                let finished = self.close_day_step(day, now, retention_days);
                health.end_batch();
                if finished? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Delete up to one batch of rows expired when `day` closes, count them
    /// gone on `day`, and mark the day closed once none are left. True
    /// when the day is closed.
    fn close_day_step(
        &mut self,
        day: i64,
        now: i64,
        retention_days: u32,
    ) -> rusqlite::Result<bool> {
        // IMMEDIATE for the reason given in `write_batch`.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut expired = Vec::new();
        if let Some(cutoff) = history::retention_cutoff(day, retention_days) {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {} FROM installations WHERE last_update < ?1 LIMIT ?2",
                history::EXPIRED_COLUMNS
            ))?;
            let rows = stmt.query_map(
                rusqlite::params![cutoff, history::RETENTION_BATCH as i64],
                |r| {
                    let dims = history::dims_of_row(
                        [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?],
                        r.get(4)?,
                    );
                    Ok((dims, r.get::<_, String>(5)?))
                },
            )?;
            expired = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        let mut increments = Increments::default();
        {
            let mut delete = tx.prepare_cached("DELETE FROM installations WHERE uid = ?1")?;
            for (dims, uid) in &expired {
                delete.execute([uid])?;
                increments.add_gone(day, dims.clone());
            }
        }
        add_increments(&tx, &increments)?;
        let finished = expired.len() < history::RETENTION_BATCH;
        if finished {
            tx.execute(
                "INSERT INTO closed_days (day, closed_at) VALUES (?1, ?2) \
                 ON CONFLICT (day) DO NOTHING",
                [day, now],
            )?;
        }
        tx.commit()?;
        if !expired.is_empty() {
            tracing::info!(
                "retention: deleted {} installations not seen since before day {day} closed",
                expired.len()
            );
        }
        Ok(finished)
    }

    pub fn rollup_rows(&self, from_day: i64, to_day: i64) -> Result<RollupRows, StoreError> {
        let e = err("reading the history");
        let mut rows = RollupRows::default();
        let mut stmt = self.conn.prepare(history::SELECT_DAYS).map_err(&e)?;
        rows.days = stmt
            .query_map([from_day, to_day], |r| {
                Ok((
                    r.get(0)?,
                    DayCounts {
                        active: r.get(1)?,
                        new: r.get(2)?,
                        gone: r.get(3)?,
                        reports: r.get(4)?,
                        users_sum: r.get(5)?,
                    },
                ))
            })
            .and_then(Iterator::collect)
            .map_err(&e)?;
        let mut stmt = self.conn.prepare(history::SELECT_GROUPS).map_err(&e)?;
        rows.groups = stmt
            .query_map([from_day, to_day], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(Iterator::collect)
            .map_err(&e)?;
        let mut stmt = self.conn.prepare(history::SELECT_USERS).map_err(&e)?;
        rows.users = stmt
            .query_map([from_day, to_day], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .and_then(Iterator::collect)
            .map_err(&e)?;
        let (from_hour, to_hour) = history::hours_of(from_day, to_day);
        let mut stmt = self.conn.prepare(history::SELECT_HOURS).map_err(&e)?;
        rows.hours = stmt
            .query_map([from_hour, to_hour], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(&e)?;
        Ok(rows)
    }

    pub fn rows(&self) -> Result<Vec<Row>, StoreError> {
        let e = err("reading the table");
        let mut stmt = self.conn.prepare(&SELECT_ROWS).map_err(&e)?;
        let rows = stmt.query_map([], read_row).map_err(&e)?;
        rows.collect::<Result<_, _>>().map_err(&e)
    }

    pub fn stats(&self, cutoffs: [i64; 3]) -> Result<Stats, StoreError> {
        let e = err("computing stats");
        let (total, seen_24h, seen_7d, seen_30d, active_users_30d) = self
            .conn
            .query_row(SELECT_TOTALS.as_str(), cutoffs, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(&e)?;
        let mut stmt = self.conn.prepare(SELECT_BY_VERSION.as_str()).map_err(&e)?;
        let by_version = stmt
            .query_map([cutoffs[2]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut stmt = self
            .conn
            .prepare(SELECT_BY_OSRELEASE.as_str())
            .map_err(&e)?;
        let by_osrelease = stmt
            .query_map([cutoffs[2]], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        Ok(Stats {
            total,
            seen_24h,
            seen_7d,
            seen_30d,
            active_users_30d,
            by_version,
            by_osrelease,
        })
    }
}

/// One deletion inside the writer's transaction.
fn delete(tx: &Connection, d: &Deletion, now: i64) -> rusqlite::Result<Done> {
    let stored: Option<Option<String>> = tx
        .prepare_cached(SELECT_COMMITMENT)?
        .query_row([&d.uid], |r| r.get(0))
        .optional()?;
    Ok(match stored {
        None => Done::Deleted { time: now },
        Some(stored) if proves(stored.as_deref(), &d.commitment) => {
            tx.prepare_cached(DELETE_ROW)?.execute([&d.uid])?;
            Done::Deleted { time: now }
        }
        Some(_) => Done::NotProven,
    })
}

/// Add a batch's counters to the rollup tables.
fn add_increments(tx: &rusqlite::Transaction, inc: &Increments) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO rollup_days (day, active, new, gone, reports, users_sum) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) {}",
        history::ADD_DAY
    ))?;
    for (day, c) in &inc.days {
        stmt.execute([*day, c.active, c.new, c.gone, c.reports, c.users_sum])?;
    }
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO rollup_groups (day, dimension, value, active, new, gone) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) {}",
        history::ADD_GROUP
    ))?;
    for ((day, dimension, value), c) in &inc.groups {
        stmt.execute(rusqlite::params![
            day, dimension, value, c.active, c.new, c.gone
        ])?;
    }
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO rollup_users (day, bucket, installations) VALUES (?1, ?2, ?3) {}",
        history::ADD_USERS
    ))?;
    for ((day, bucket), n) in &inc.users {
        stmt.execute(rusqlite::params![day, bucket, n])?;
    }
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO rollup_hours (hour, reports) VALUES (?1, ?2) {}",
        history::ADD_HOUR
    ))?;
    for (hour, n) in &inc.hours {
        stmt.execute([hour, n])?;
    }
    Ok(())
}

/// A row of [`SELECT_ROWS`], which lists the columns in table order.
fn read_row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    let (mut uid, mut first_seen, mut last_update, mut flags) = (String::new(), 0, 0, 0);
    let mut commitment = None;
    let mut values = Vec::with_capacity(wire::TABLE.len());
    for (i, column) in wire::TABLE.iter().enumerate() {
        match column {
            Column::Uid => uid = r.get(i)?,
            Column::FirstSeen => first_seen = r.get(i)?,
            Column::LastUpdate => last_update = r.get(i)?,
            Column::Flags => flags = r.get(i)?,
            Column::DeletionCommitment => commitment = r.get(i)?,
            Column::Field(f) => values.push(match f.json_type {
                JsonType::String => r.get::<_, Option<String>>(i)?.map(Value::Text),
                JsonType::Int => r.get::<_, Option<i64>>(i)?.map(Value::Count),
            }),
        }
    }
    Ok(Row {
        first_seen,
        last_update,
        report: Report {
            uid,
            flags,
            commitment,
            values,
        },
    })
}

/// Take the exclusive serving lock on the database file, or say who to
/// stop.
fn lock_for_serving(path: &Path) -> Result<Flock<File>, StoreError> {
    let shown = path.display();
    let file = File::open(path)
        .map_err(|e| StoreError(format!("database {shown}: cannot open it to lock it: {e}")))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => StoreError(format!(
            "database {shown} is in use by another running `surveyd-collector serve`; \
             stop that one first, or give this one a database of its own"
        )),
        e => StoreError(format!("database {shown}: cannot lock it: {e}")),
    })
}

/// One round of the checkpointer. PASSIVE copies what it can without ever
/// waiting for the writer, but under steady load the writer appends while
/// it copies, so the WAL never gets back to its start and keeps growing.
/// Once it holds more than [`WAL_RESTART_FRAMES`], RESTART waits for the
/// writer to pause, copies the few frames PASSIVE left, and makes the next
/// transaction start the WAL over: one short stall instead of a file that
/// grows without end.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let log_frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if log_frames > WAL_RESTART_FRAMES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// A thread with its own connection running checkpoints until dropped.
struct Checkpointer {
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let (stop, stopped) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std_mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = checkpoint(&conn) {
                        tracing::warn!("SQLite checkpoint failed: {e}");
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::history::summary_from;

    /// An installation table from before the history gets a rollup on
    /// its first start: active on each row's last day, new on its first.
    #[test]
    fn upgrade_backfills_the_history_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 INSERT INTO installations (uid, first_seen, last_update, flags,
                     program_version, usercnt_active)
                 VALUES ('a', 86400, 3 * 86400 + 5, 2, '1.0', 5),
                        ('b', 3 * 86400, 3 * 86400, 4, '2.0', NULL),
                        ('c', 86400 + 7, 4 * 86400, 1, NULL, 3000000000);",
            )
            .unwrap();
        }
        let db = Sqlite::open(&path, Access::Serve).unwrap();
        let s = summary_from(db.rollup_rows(0, 10).unwrap(), 0, 10, 0);
        let daily: Vec<_> = s.daily.iter().map(|d| (d.day, d.active, d.new)).collect();
        assert_eq!(daily, [(1, 0, 2), (3, 2, 1), (4, 1, 0)]);
        let versions = &s.by["program_version"];
        assert_eq!(versions[0].day, 3);
        assert_eq!(
            versions[0].groups,
            [("1.0".into(), 1), ("2.0".into(), 1)].into()
        );
        assert_eq!(versions[1].groups, [(history::UNKNOWN.into(), 1)].into());
        let schemes = &s.by["id_scheme"];
        assert_eq!(
            schemes[1].groups,
            [(history::UPSTREAM_SCHEME.into(), 1)].into()
        );
        assert_eq!(s.users[0].sum, 5);
        assert_eq!(s.users[0].histogram[3], 1);
        assert_eq!(s.users[1].histogram[32], 1);
        assert_eq!(s.users[0].histogram.iter().sum::<u64>(), 1);
    }

    /// Adding a field to the wire table without a migration (or a
    /// migration without the table entry) breaks this, not production.
    /// The store's own column comes last.
    #[test]
    fn migrated_schema_has_exactly_the_columns_wire_stores() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db"), Access::Serve).unwrap();
        let mut stmt = db
            .conn
            .prepare("SELECT name, type FROM pragma_table_info('installations') ORDER BY cid")
            .unwrap();
        let schema: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let wanted: Vec<(String, String)> = wire::TABLE
            .iter()
            .map(|c| {
                let sql_type = match c {
                    Column::Uid => "TEXT",
                    Column::FirstSeen | Column::LastUpdate => "BIGINT",
                    Column::Flags => "INTEGER",
                    Column::DeletionCommitment => "TEXT",
                    Column::Field(f) => match f.json_type {
                        JsonType::String => "TEXT",
                        JsonType::Int => "BIGINT",
                    },
                };
                (c.name().to_owned(), sql_type.to_owned())
            })
            .chain([(PREVIOUS_UPDATE.to_owned(), "BIGINT".to_owned())])
            .collect();
        assert_eq!(schema, wanted);
    }
}
