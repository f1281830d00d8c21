//! The embedded SQLite backend: connection settings (WAL, secure_delete),
//! migration, the batched upsert the writer thread runs, and the reads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::mpsc;

use super::{
    drain_batch, finish_batch, proves, unix_now, Access, Deletion, Done, Job, Row, Stats,
    StoreError, Work, WriterHealth, DELETE_ROW, MIGRATIONS, SCHEMA_VERSION, SELECT_BY_OSRELEASE,
    SELECT_BY_VERSION, SELECT_COMMITMENT, SELECT_ROWS, SELECT_TOTALS,
};

const UPSERT: &str = "INSERT INTO installations (uid, machine_id_sha256, server_guid_sha256, \
    first_seen, last_update, usercnt_active, usercnt_contact, usercnt_equipment, \
    usercnt_na_user, usercnt_nonactive, userplugin, osrelease, utsname, program_name, \
    program_version, flags, usercnt_room, attachment_storage) \
    VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
    ON CONFLICT (uid) DO UPDATE SET machine_id_sha256 = excluded.machine_id_sha256, \
    server_guid_sha256 = excluded.server_guid_sha256, last_update = excluded.last_update, \
    usercnt_active = excluded.usercnt_active, usercnt_contact = excluded.usercnt_contact, \
    usercnt_equipment = excluded.usercnt_equipment, usercnt_na_user = excluded.usercnt_na_user, \
    usercnt_nonactive = excluded.usercnt_nonactive, userplugin = excluded.userplugin, \
    osrelease = excluded.osrelease, utsname = excluded.utsname, \
    program_name = excluded.program_name, program_version = excluded.program_version, \
    flags = excluded.flags, usercnt_room = excluded.usercnt_room, \
    attachment_storage = excluded.attachment_storage";

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
        mut rx: mpsc::Receiver<Job>,
        batch_size: usize,
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
        while let Some(first) = rx.blocking_recv() {
            let jobs = drain_batch(first, &mut rx, batch_size);
            health.begin_batch();
            let result = self.write_batch(&jobs).map_err(err("database write"));
            health.end_batch();
            finish_batch(jobs, result);
        }
        // Stops the checkpointer; the last connection to close checkpoints
        // whatever is left.
        drop(checkpointer);
    }

    fn write_batch(&mut self, jobs: &[Job]) -> rusqlite::Result<Vec<Done>> {
        let now = unix_now();
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(UPSERT)?;
            for r in jobs.iter().filter_map(Job::report) {
                stmt.execute(params![
                    r.uid,
                    r.machine_id_sha256,
                    r.server_guid_sha256,
                    now,
                    r.usercnt_active,
                    r.usercnt_contact,
                    r.usercnt_equipment,
                    r.usercnt_na_user,
                    r.usercnt_nonactive,
                    r.userplugin,
                    r.osrelease,
                    r.utsname,
                    r.program_name,
                    r.program_version,
                    r.flags,
                    r.usercnt_room,
                    r.attachment_storage,
                ])?;
            }
        }
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

    pub fn rows(&self) -> Result<Vec<Row>, StoreError> {
        let e = err("reading the table");
        let mut stmt = self.conn.prepare(SELECT_ROWS).map_err(&e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Row {
                    uid: r.get(0)?,
                    machine_id_sha256: r.get(1)?,
                    server_guid_sha256: r.get(2)?,
                    first_seen: r.get(3)?,
                    last_update: r.get(4)?,
                    usercnt_active: r.get(5)?,
                    usercnt_contact: r.get(6)?,
                    usercnt_equipment: r.get(7)?,
                    usercnt_na_user: r.get(8)?,
                    usercnt_nonactive: r.get(9)?,
                    userplugin: r.get(10)?,
                    osrelease: r.get(11)?,
                    utsname: r.get(12)?,
                    program_name: r.get(13)?,
                    program_version: r.get(14)?,
                    flags: r.get(15)?,
                    usercnt_room: r.get(16)?,
                    attachment_storage: r.get(17)?,
                })
            })
            .map_err(&e)?;
        rows.collect::<Result<_, _>>().map_err(&e)
    }

    pub fn stats(&self, cutoffs: [i64; 3]) -> Result<Stats, StoreError> {
        let e = err("computing stats");
        let (total, seen_24h, seen_7d, seen_30d, active_users_30d) = self
            .conn
            .query_row(SELECT_TOTALS, cutoffs, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(&e)?;
        let mut stmt = self.conn.prepare(SELECT_BY_VERSION).map_err(&e)?;
        let by_version = stmt
            .query_map([cutoffs[2]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut stmt = self.conn.prepare(SELECT_BY_OSRELEASE).map_err(&e)?;
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
