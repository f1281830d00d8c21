//! The PostgreSQL backend (tokio-postgres): connecting and reconnecting,
//! migration under an advisory lock (several collectors may start at once
//! against one database), the batched upsert as one array statement, and
//! the reads.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Statement};

use crate::collector::ingest::{Report, Value};
use crate::wire::{self, Column, JsonType};

use super::{
    columns, drain_batch, finish_batch, proves, unix_now, upsert_updates, Access, Done, Job, Row,
    Stats, StoreError, Work, WriterHealth, DELETE_ROW, MIGRATIONS, SCHEMA_VERSION,
    SELECT_BY_OSRELEASE, SELECT_BY_VERSION, SELECT_ROWS, SELECT_TOTALS,
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
    format!(
        "INSERT INTO installations ({}) SELECT {} FROM UNNEST({}) AS u({}) \
         ON CONFLICT (uid) DO UPDATE SET {}",
        columns().collect::<Vec<_>>().join(", "),
        selected.join(", "),
        arrays.join(", "),
        names.join(", "),
        upsert_updates("EXCLUDED")
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
    url: String,
    client: Client,
    /// The upsert, prepared once per connection.
    upsert: Option<Statement>,
}

fn err(context: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::new(context, e)
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

impl Postgres {
    pub async fn open(url: &str, access: Access) -> Result<Postgres, StoreError> {
        let client = connect(url)
            .await
            .map_err(err("connecting to PostgreSQL"))?;
        let mut db = Postgres {
            url: url.to_owned(),
            client,
            upsert: None,
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
        mut rx: mpsc::Receiver<Job>,
        batch_size: usize,
        health: &WriterHealth,
    ) {
        let mut last_connect_failure: Option<Instant> = None;
        while let Some(first) = rx.recv().await {
            let jobs = drain_batch(first, &mut rx, batch_size);
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
        match connect(&self.url).await {
            Ok(client) => {
                tracing::info!("reconnected to PostgreSQL");
                self.client = client;
                self.upsert = None;
                *last_failure = None;
                Ok(())
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                Err(StoreError::new("reconnecting to PostgreSQL", e))
            }
        }
    }

    async fn write_batch(&mut self, jobs: &[Job]) -> Result<Vec<Done>, tokio_postgres::Error> {
        let now = unix_now();
        let stmt = match &self.upsert {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(UPSERT.as_str()).await?;
                self.upsert = Some(s.clone());
                s
            }
        };
        if jobs.iter().all(|j| j.report().is_some()) {
            // One statement, atomic by itself: the common case stays one
            // round trip.
            upsert(&self.client, &stmt, jobs, now).await?;
            return Ok(vec![Done::Stored { time: now }; jobs.len()]);
        }
        let tx = self.client.transaction().await?;
        upsert(&tx, &stmt, jobs, now).await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(match &job.work {
                Work::Store(_) => Done::Stored { time: now },
                Work::Delete(d) => {
                    // FOR UPDATE: another collector on this database cannot
                    // change the row between the check and the delete.
                    let stored: Option<Option<String>> = tx
                        .query_opt(SELECT_COMMITMENT_FOR_UPDATE, &[&d.uid])
                        .await?
                        .map(|r| r.get(0));
                    match stored {
                        None => Done::Deleted { time: now },
                        Some(stored) if proves(stored.as_deref(), &d.commitment) => {
                            tx.execute(DELETE_ROW, &[&d.uid]).await?;
                            Done::Deleted { time: now }
                        }
                        Some(_) => Done::NotProven,
                    }
                }
            });
        }
        tx.commit().await?;
        Ok(outcomes)
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

/// The reports among `jobs` in one statement on `client` (the connection,
/// or the transaction a batch with deletions runs in).
async fn upsert(
    client: &impl GenericClient,
    stmt: &Statement,
    jobs: &[Job],
    now: i64,
) -> Result<(), tokio_postgres::Error> {
    let all: Vec<&Report> = jobs.iter().filter_map(Job::report).collect();
    if all.is_empty() {
        return Ok(());
    }
    // ON CONFLICT may touch a row only once per statement, so of several
    // reports for one installation in a batch only the last one counts, as
    // it would have after sequential upserts.
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(all.len());
    for (i, report) in all.iter().enumerate() {
        last.insert(report.uid.as_str(), i);
    }
    let mut idx: Vec<usize> = last.into_values().collect();
    idx.sort_unstable();
    let reports: Vec<&Report> = idx.iter().map(|&i| all[i]).collect();
    let uid: Vec<&str> = reports.iter().map(|r| r.uid.as_str()).collect();
    let flags: Vec<i32> = reports.iter().map(|r| r.flags as i32).collect();
    let commitments: Vec<Option<&str>> = reports.iter().map(|r| r.commitment.as_deref()).collect();
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
    let fixed: [&(dyn ToSql + Sync); 4] = [&now, &uid, &flags, &commitments];
    let params: Vec<&(dyn ToSql + Sync)> = fixed
        .into_iter()
        .chain(fields.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)))
        .collect();
    client.execute(stmt, &params).await?;
    Ok(())
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
