//! The PostgreSQL backend (tokio-postgres): connecting and reconnecting,
//! migration under an advisory lock (several collectors may start at once
//! against one database), the batched upsert as one array statement, and
//! the reads.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Statement};

use crate::collector::history::{self, DayCounts, Increments, Previous, RollupRows};
use crate::collector::ingest::{Report, Value};
use crate::wire::{self, Column, JsonType};

use super::tls::{self, Target};
use super::{
    columns, drain_batch, finish_batch, previous_of, proves, unix_now, upsert_updates, Access,
    DayCloser, Done, Job, Message, Row, Stats, StoreError, Work, WriterConfig, WriterHealth,
    DELETE_ROW, MIGRATIONS, PREVIOUS_UPDATE, SCHEMA_VERSION, SELECT_BY_OSRELEASE,
    SELECT_BY_VERSION, SELECT_ROWS, SELECT_TOTALS,
};

/// A deletion's check; the row stays locked until the batch commits.
const SELECT_COMMITMENT_FOR_UPDATE: &str =
    "SELECT deletion_commitment FROM installations WHERE uid = $1 FOR UPDATE";

/// One round trip for a whole batch: the reports travel as parallel
/// arrays, `$2` the uids, `$3` the flags, `$4` the deletion commitments,
/// then one per stored field; `$1` is the time.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let mut arrays = vec![
        "$2::text[]".to_owned(),
        "$3::integer[]".to_owned(),
        "$4::text[]".to_owned(),
    ];
    let mut names = vec![
        Column::Uid.name(),
        Column::Flags.name(),
        Column::DeletionCommitment.name(),
    ];
    for field in wire::stored_fields() {
        let column = Column::Field(field);
        arrays.push(format!("${}::{}[]", arrays.len() + 2, sql_type(field)));
        names.push(column.name());
    }
    let selected: Vec<String> = wire::TABLE
        .iter()
        .map(|c| match c {
            Column::FirstSeen | Column::LastUpdate => "$1".to_owned(),
            c => format!("u.{}", c.name()),
        })
        .collect();
    // ON CONFLICT DO UPDATE locks the existing row and evaluates SET on
    // its latest committed version, even one committed by another
    // collector after this statement began: so the `previous_update` it
    // returns is what that row held, and two collectors never both see
    // a report as an installation's first today. The rows go in the
    // arrays' order (by uid), the order every collector locks them in.
    format!(
        "INSERT INTO installations ({}) SELECT {} FROM UNNEST({}) AS u({}) \
         ON CONFLICT (uid) DO UPDATE SET {} \
         RETURNING uid, {PREVIOUS_UPDATE}",
        columns().collect::<Vec<_>>().join(", "),
        selected.join(", "),
        arrays.join(", "),
        names.join(", "),
        upsert_updates("EXCLUDED")
    )
});

/// A batch's counters, all four tables in one statement (one execution,
/// not four), each table's rows in key order. Every collector runs this
/// same statement, so all of them take the counter rows in the same order.
/// An empty array adds nothing to its table.
static ADD_COUNTERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH days AS (\
         INSERT INTO rollup_days (day, active, new, gone, reports, users_sum) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
         $5::bigint[], $6::bigint[]) {}), \
         groups AS (\
         INSERT INTO rollup_groups (day, dimension, value, active, new, gone) \
         SELECT * FROM UNNEST($7::bigint[], $8::text[], $9::text[], $10::bigint[], \
         $11::bigint[], $12::bigint[]) {}), \
         users AS (\
         INSERT INTO rollup_users (day, bucket, installations) \
         SELECT * FROM UNNEST($13::bigint[], $14::integer[], $15::bigint[]) {}) \
         INSERT INTO rollup_hours (hour, reports) \
         SELECT * FROM UNNEST($16::bigint[], $17::bigint[]) {}",
        history::ADD_DAY,
        history::ADD_GROUP,
        history::ADD_USERS,
        history::ADD_HOUR
    )
});
/// Deletes up to `$2` rows expired before `$1` that no other transaction
/// holds (a collector refreshing one, or another collector expiring it),
/// and returns what they are counted gone under: each row is deleted, and
/// counted, by exactly one transaction.
static DELETE_EXPIRED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM installations WHERE last_update < $1 AND uid IN \
         (SELECT uid FROM installations WHERE last_update < $1 \
          ORDER BY uid LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING {}",
        history::EXPIRED_COLUMNS
    )
});

fn sql_type(field: &wire::Field) -> &'static str {
    match field.json_type {
        JsonType::String => "text",
        JsonType::Int => "bigint",
    }
}

/// Any constant works as long as every collector uses the same one.
const MIGRATION_LOCK: i64 = 0x7375_7276_6579_6401; // "surveyd\x01"

/// After a failed connect, batches fail fast for this long instead of each
/// one waiting for its own connect timeout.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

pub struct Postgres {
    /// Boxed: the parsed URL and TLS client are large and rarely used.
    target: Box<Target>,
    client: Client,
    /// The writer's statements, prepared once per connection.
    prepared: Option<Prepared>,
}

fn err(context: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::new(context, e)
}

async fn connect(target: &Target) -> Result<Client, StoreError> {
    let (client, connection) = target
        .config
        .connect(target.connector.clone())
        .await
        .map_err(|e| connect_error(target, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// What failed, with what to do when it was the server's certificate.
fn connect_error(target: &Target, e: tokio_postgres::Error) -> StoreError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if text.contains("invalid peer certificate") {
        let hint = match target.mode {
            tls::Mode::Prefer => {
                "the server offers TLS with a certificate the system's CA store does not \
                 vouch for: give its CA with sslrootcert=PATH in the database URL \
                 (or sslmode=disable to connect in plaintext)"
            }
            _ => {
                "the server's certificate does not verify against sslrootcert (or the \
                 system's CA store): give the CA that signed it with sslrootcert=PATH, or \
                 check the host name in the URL (sslmode=verify-ca skips the name)"
            }
        };
        text = format!("{text}; {hint}");
    }
    StoreError(format!("connecting to PostgreSQL: {text}"))
}

impl Postgres {
    pub async fn open(url: &str, access: Access) -> Result<Postgres, StoreError> {
        let target = tls::target(url).map_err(|e| StoreError(format!("database URL: {e}")))?;
        let client = connect(&target).await?;
        let mut db = Postgres {
            target: Box::new(target),
            client,
            prepared: None,
        };
        if access == Access::Serve {
            db.migrate().await.map_err(err("migrating the schema"))?;
        }
        let v = db
            .schema_version()
            .await
            .map_err(err("reading the schema version"))?;
        if v != SCHEMA_VERSION {
            return Err(StoreError(format!(
                "PostgreSQL schema version {v}, this program uses {SCHEMA_VERSION}; \
                 an older schema is migrated by `surveyd-collector serve`"
            )));
        }
        Ok(db)
    }

    async fn schema_version(&self) -> Result<i64, tokio_postgres::Error> {
        let row = self
            .client
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await?;
        if !row.get::<_, bool>(0) {
            return Ok(0);
        }
        let row = self
            .client
            .query_opt("SELECT CAST(version AS BIGINT) FROM schema_version", &[])
            .await?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    async fn migrate(&mut self) -> Result<(), tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .await?;
        let current: i64 = tx
            .query_opt("SELECT CAST(version AS BIGINT) FROM schema_version", &[])
            .await?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if current > SCHEMA_VERSION {
            // A newer schema is left alone; `open` reports the mismatch.
            return tx.rollback().await;
        }
        for sql in &MIGRATIONS[current as usize..] {
            tx.batch_execute(sql).await?;
        }
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(SCHEMA_VERSION as i32)],
        )
        .await?;
        tx.commit().await
    }

    pub(super) async fn run_writer(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        config: WriterConfig,
        health: &WriterHealth,
    ) {
        let mut last_connect_failure: Option<Instant> = None;
        let mut closer = DayCloser::default();
        self.close_days_if_due(&mut closer, config.retention_days, health)
            .await;
        while let Some(message) = rx.recv().await {
            if self
                .ensure_connected(&mut last_connect_failure)
                .await
                .is_ok()
            {
                self.close_days_if_due(&mut closer, config.retention_days, health)
                    .await;
            }
            let Message::Job(first) = message else {
                continue;
            };
            let jobs = drain_batch(first, &mut rx, config.batch_size);
            health.begin_batch();
            let result = match self.ensure_connected(&mut last_connect_failure).await {
                Ok(()) => self.write_batch(&jobs).await.map_err(err("database write")),
                Err(e) => Err(e),
            };
            health.end_batch();
            finish_batch(jobs, result);
        }
    }

    async fn ensure_connected(
        &mut self,
        last_failure: &mut Option<Instant>,
    ) -> Result<(), StoreError> {
        if !self.client.is_closed() {
            return Ok(());
        }
        if last_failure.is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF) {
            return Err(StoreError("PostgreSQL is unreachable".into()));
        }
        match connect(&self.target).await {
            Ok(client) => {
                tracing::info!("reconnected to PostgreSQL");
                self.client = client;
                self.prepared = None;
                *last_failure = None;
                Ok(())
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                Err(StoreError(format!("re{}", e.0)))
            }
        }
    }

    /// Store the batch (its reports, then its deletions) and count it in
    /// the history, in one transaction that is correct with other
    /// collectors writing the same database (see [`UPSERT`]). A failed
    /// batch leaves nothing: its transaction is rolled back.
    async fn write_batch(&mut self, jobs: &[Job]) -> Result<Vec<Done>, tokio_postgres::Error> {
        let prepared = self.prepared().await?;
        let result = self.write_batch_in(&prepared, jobs).await;
        if result.is_err() && !self.client.is_closed() {
            // Ends the transaction the failure aborted (only a warning
            // when the failure came before BEGIN).
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        result
    }

    /// [`write_batch`](Self::write_batch)'s transaction in two round trips
    /// when it holds no deletion: BEGIN with the upsert, then the counters
    /// with COMMIT. tokio-postgres pipelines futures polled together, in
    /// the order first polled; every statement here is prepared, so each
    /// future sends its request on that first poll and `try_join!` polls
    /// them in the order written.
    async fn write_batch_in(
        &self,
        prepared: &Prepared,
        jobs: &[Job],
    ) -> Result<Vec<Done>, tokio_postgres::Error> {
        let all: Vec<&Report> = jobs.iter().filter_map(Job::report).collect();
        // ON CONFLICT may touch a row only once per statement, so of several
        // reports for one installation in a batch only the last one is
        // stored, as it would have been after sequential upserts. Rows go
        // in uid order, the order every collector locks them in.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(all.len());
        for (i, report) in all.iter().enumerate() {
            last.insert(report.uid.as_str(), i);
        }
        let mut idx: Vec<usize> = last.into_values().collect();
        idx.sort_unstable_by_key(|&i| all[i].uid.as_str());
        let reports: Vec<&Report> = idx.iter().map(|&i| all[i]).collect();
        let uid: Vec<&str> = reports.iter().map(|r| r.uid.as_str()).collect();
        let flags: Vec<i32> = reports.iter().map(|r| r.flags as i32).collect();
        let commitments: Vec<Option<&str>> =
            reports.iter().map(|r| r.commitment.as_deref()).collect();
        let fields: Vec<Box<dyn ToSql + Sync + Send + '_>> = wire::stored_fields()
            .enumerate()
            .map(|(i, field)| -> Box<dyn ToSql + Sync + Send + '_> {
                match field.json_type {
                    JsonType::String => Box::new(
                        reports
                            .iter()
                            .map(|r| match &r.values[i] {
                                Some(Value::Text(t)) => Some(t.as_str()),
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    ),
                    JsonType::Int => Box::new(
                        reports
                            .iter()
                            .map(|r| match r.values[i] {
                                Some(Value::Count(n)) => Some(n),
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    ),
                }
            })
            .collect();
        let now = unix_now();
        let fixed: [&(dyn ToSql + Sync); 4] = [&now, &uid, &flags, &commitments];
        let params: Vec<&(dyn ToSql + Sync)> = fixed
            .into_iter()
            .chain(fields.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)))
            .collect();
        let c = &self.client;
        let rows = if reports.is_empty() {
            c.batch_execute("BEGIN").await?;
            Vec::new()
        } else {
            tokio::try_join!(c.batch_execute("BEGIN"), c.query(&prepared.upsert, &params))?.1
        };
        // What each row held before the upsert; a later report of the same
        // installation in this batch comes after the first one today.
        let mut previous: HashMap<&str, Previous> = rows
            .iter()
            .map(|r| (r.get(0), previous_of(r.get(1))))
            .collect();
        let mut increments = Increments::default();
        for report in &all {
            let prev = previous
                .insert(report.uid.as_str(), Previous::LastUpdate(now))
                .unwrap_or(Previous::New);
            increments.add_report(report, now, prev);
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(match &job.work {
                Work::Store(_) => Done::Stored { time: now },
                Work::Delete(d) => {
                    // FOR UPDATE: another collector on this database cannot
                    // change the row between the check and the delete.
                    let stored: Option<Option<String>> = c
                        .query_opt(SELECT_COMMITMENT_FOR_UPDATE, &[&d.uid])
                        .await?
                        .map(|r| r.get(0));
                    match stored {
                        None => Done::Deleted { time: now },
                        Some(stored) if proves(stored.as_deref(), &d.commitment) => {
                            c.execute(DELETE_ROW, &[&d.uid]).await?;
                            Done::Deleted { time: now }
                        }
                        Some(_) => Done::NotProven,
                    }
                }
            });
        }
        tokio::try_join!(
            add_increments(c, prepared, &increments),
            c.batch_execute("COMMIT")
        )?;
        Ok(outcomes)
    }

    async fn prepared(&mut self) -> Result<Prepared, tokio_postgres::Error> {
        if let Some(p) = &self.prepared {
            return Ok(p.clone());
        }
        let c = &self.client;
        // Prepared together: one round trip, not two.
        let (upsert, counters) =
            tokio::try_join!(c.prepare(UPSERT.as_str()), c.prepare(ADD_COUNTERS.as_str()),)?;
        let p = Prepared { upsert, counters };
        self.prepared = Some(p.clone());
        Ok(p)
    }

    async fn close_days_if_due(
        &mut self,
        closer: &mut DayCloser,
        retention_days: u32,
        health: &WriterHealth,
    ) {
        let now = unix_now();
        if let Some(today) = closer.due(now) {
            let result = self
                .close_days(today, now, retention_days, health)
                .await
                .map_err(err("closing the day"));
            closer.done(today, result);
        }
    }

    /// Close every day that ended and is not closed yet, oldest first.
    /// Several collectors may do this at once: each expired row is deleted
    /// and counted by one of them, and the marker is inserted once.
    async fn close_days(
        &mut self,
        today: i64,
        now: i64,
        retention_days: u32,
        health: &WriterHealth,
    ) -> Result<(), tokio_postgres::Error> {
        let last_closed: Option<i64> = self
            .client
            .query_one("SELECT MAX(day) FROM closed_days", &[])
            .await?
            .get(0);
        for day in history::days_to_close(today, last_closed) {
            loop {
                health.begin_batch();
                let finished = self.close_day_step(day, now, retention_days).await;
                health.end_batch();
                if finished? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One retention batch of closing `day`; true once the day is closed.
    async fn close_day_step(
        &mut self,
        day: i64,
        now: i64,
        retention_days: u32,
    ) -> Result<bool, tokio_postgres::Error> {
        let prepared = self.prepared().await?;
        let tx = self.client.transaction().await?;
        let closed = tx
            .query_opt("SELECT 1 FROM closed_days WHERE day = $1", &[&day])
            .await?
            .is_some();
        if closed {
            tx.commit().await?;
            return Ok(true);
        }
        let mut increments = Increments::default();
        let mut deleted = 0;
        if let Some(cutoff) = history::retention_cutoff(day, retention_days) {
            let batch = history::RETENTION_BATCH as i64;
            for r in tx
                .query(DELETE_EXPIRED.as_str(), &[&cutoff, &batch])
                .await?
            {
                let flags: i32 = r.get(4);
                let dims = history::dims_of_row(
                    [r.get(0), r.get(1), r.get(2), r.get(3)],
                    i64::from(flags),
                );
                increments.add_gone(day, dims);
                deleted += 1;
            }
        }
        add_increments(&tx, &prepared, &increments).await?;
        let finished = deleted < history::RETENTION_BATCH;
        if finished {
            tx.execute(
                "INSERT INTO closed_days (day, closed_at) VALUES ($1, $2) \
                 ON CONFLICT (day) DO NOTHING",
                &[&day, &now],
            )
            .await?;
        }
        tx.commit().await?;
        if deleted > 0 {
            tracing::info!(
                "retention: deleted {deleted} installations not seen since before day {day} closed"
            );
        }
        Ok(finished)
    }

    pub async fn rollup_rows(&self, from_day: i64, to_day: i64) -> Result<RollupRows, StoreError> {
        let e = err("reading the history");
        let range: [&(dyn ToSql + Sync); 2] = [&from_day, &to_day];
        let days = self
            .client
            .query(history::SELECT_DAYS, &range)
            .await
            .map_err(&e)?;
        let groups = self
            .client
            .query(history::SELECT_GROUPS, &range)
            .await
            .map_err(&e)?;
        let users = self
            .client
            .query(history::SELECT_USERS, &range)
            .await
            .map_err(&e)?;
        let (from_hour, to_hour) = history::hours_of(from_day, to_day);
        let hours = self
            .client
            .query(history::SELECT_HOURS, &[&from_hour, &to_hour])
            .await
            .map_err(&e)?;
        Ok(RollupRows {
            days: days
                .iter()
                .map(|r| {
                    let counts = DayCounts {
                        active: r.get(1),
                        new: r.get(2),
                        gone: r.get(3),
                        reports: r.get(4),
                        users_sum: r.get(5),
                    };
                    (r.get(0), counts)
                })
                .collect(),
            groups: groups
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
            users: users
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            hours: hours.iter().map(|r| (r.get(0), r.get(1))).collect(),
        })
    }

    pub async fn rows(&self) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .client
            .query(SELECT_ROWS.as_str(), &[])
            .await
            .map_err(err("reading the table"))?;
        Ok(rows.iter().map(read_row).collect())
    }

    pub async fn stats(&self, cutoffs: [i64; 3]) -> Result<Stats, StoreError> {
        let e = err("computing stats");
        let t = self
            .client
            .query_one(
                SELECT_TOTALS.as_str(),
                &[&cutoffs[0], &cutoffs[1], &cutoffs[2]],
            )
            .await
            .map_err(&e)?;
        let by_version = self
            .client
            .query(SELECT_BY_VERSION.as_str(), &[&cutoffs[2]])
            .await
            .map_err(&e)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let by_osrelease = self
            .client
            .query(SELECT_BY_OSRELEASE.as_str(), &[&cutoffs[2]])
            .await
            .map_err(&e)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(Stats {
            total: t.get(0),
            seen_24h: t.get(1),
            seen_7d: t.get(2),
            seen_30d: t.get(3),
            active_users_30d: t.get(4),
            by_version,
            by_osrelease,
        })
    }
}

/// The statements of the writer's transactions.
#[derive(Clone)]
struct Prepared {
    upsert: Statement,
    counters: Statement,
}

/// Add a batch's counters to the rollup tables ([`ADD_COUNTERS`]).
async fn add_increments(
    tx: &(impl GenericClient + Sync),
    p: &Prepared,
    inc: &Increments,
) -> Result<(), tokio_postgres::Error> {
    if inc.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&DayCounts) -> i64| inc.days.values().map(f).collect::<Vec<_>>();
    let day_keys: Vec<i64> = inc.days.keys().copied().collect();
    let (active, new, gone) = (col(|c| c.active), col(|c| c.new), col(|c| c.gone));
    let (reports, users_sum) = (col(|c| c.reports), col(|c| c.users_sum));
    let g = &inc.groups;
    let g_days: Vec<i64> = g.keys().map(|k| k.0).collect();
    let g_dimensions: Vec<&str> = g.keys().map(|k| k.1).collect();
    let g_values: Vec<&str> = g.keys().map(|k| k.2.as_str()).collect();
    let g_active: Vec<i64> = g.values().map(|c| c.active).collect();
    let g_new: Vec<i64> = g.values().map(|c| c.new).collect();
    let g_gone: Vec<i64> = g.values().map(|c| c.gone).collect();
    let u_days: Vec<i64> = inc.users.keys().map(|k| k.0).collect();
    let u_buckets: Vec<i32> = inc.users.keys().map(|k| k.1).collect();
    let u_n: Vec<i64> = inc.users.values().copied().collect();
    let h_hours: Vec<i64> = inc.hours.keys().copied().collect();
    let h_n: Vec<i64> = inc.hours.values().copied().collect();
    let params: [&(dyn ToSql + Sync); 17] = [
        &day_keys,
        &active,
        &new,
        &gone,
        &reports,
        &users_sum,
        &g_days,
        &g_dimensions,
        &g_values,
        &g_active,
        &g_new,
        &g_gone,
        &u_days,
        &u_buckets,
        &u_n,
        &h_hours,
        &h_n,
    ];
    tx.execute(&p.counters, &params).await.map(|_| ())
}

/// A row of [`SELECT_ROWS`], which lists the columns in table order.
fn read_row(r: &tokio_postgres::Row) -> Row {
    let (mut uid, mut first_seen, mut last_update, mut flags) = (String::new(), 0, 0, 0);
    let mut commitment = None;
    let mut values = Vec::with_capacity(wire::TABLE.len());
    for (i, column) in wire::TABLE.iter().enumerate() {
        match column {
            Column::Uid => uid = r.get(i),
            Column::FirstSeen => first_seen = r.get(i),
            Column::LastUpdate => last_update = r.get(i),
            Column::Flags => flags = i64::from(r.get::<_, i32>(i)),
            Column::DeletionCommitment => commitment = r.get(i),
            Column::Field(f) => values.push(match f.json_type {
                JsonType::String => r.get::<_, Option<String>>(i).map(Value::Text),
                JsonType::Int => r.get::<_, Option<i64>>(i).map(Value::Count),
            }),
        }
    }
    Row {
        first_seen,
        last_update,
        report: Report {
            uid,
            flags,
            commitment,
            values,
        },
    }
}
