//! Summary latency at scale, run by hand (not a timed test):
//!
//!   cargo bench --bench summary                      # SQLite only
//!   SURVEYD_BENCH_POSTGRES_URL=postgres://… cargo bench --bench summary
//!   benches/history-bench.sh                         # both, with a throwaway PostgreSQL
//!
//! Seeds a database directly (fine for a bench): 1,000,000 installation
//! rows and 730 days of rollup shaped like a real installed base (3
//! programs, 40 versions, 25 OS releases, 4 user plugins, 3 id schemes,
//! all 33 user buckets, every hour), then times what a request costs
//! uncached, for the 30-day, 1-year and all-time ranges: `summary.json`
//! (`load_summary` plus `publishable` plus the JSON serialisation) and the
//! dashboard page (`load_summary` plus `dashboard::render`, charts
//! included). Prints p50 and p95 over ROUNDS (default 50) runs of each.

use std::time::{Duration, Instant};

use surveyd::collector::config::Database;
use surveyd::collector::dashboard;
use surveyd::collector::store::{Access, Store};
use surveyd::collector::summary::{Range, SummarySource, DEFAULT_MIN_GROUP};

const INSTALLATIONS: i64 = 1_000_000;
const DAYS: i64 = 730;
/// The last seeded day: 2026-12-01.
const TODAY: i64 = 20_788;

/// Both dialects: `series` is a FROM item whose column `n` counts up from
/// 0, a recursive CTE (SQLite) or generate_series (PostgreSQL).
fn seed_sql(series: &str) -> String {
    let first = TODAY - DAYS + 1;
    format!(
        "INSERT INTO installations (uid, first_seen, last_update, flags, program_name, \
             program_version, osrelease, userplugin, usercnt_active)
         SELECT 'u' || n, ({first} + n % {DAYS}) * 86400, ({TODAY} - n % 180) * 86400, 2,
                'kopano-server', '8.' || (n % 40), 'os ' || (n % 25), 'ldap', n % 3000
         FROM {series} WHERE n < {INSTALLATIONS};
         INSERT INTO rollup_days (day, active, new, gone, reports, users_sum)
         SELECT {first} + n, 600000 + n, 1000 + n % 50, 900 + n % 40, 14400000, 90000000
         FROM {series} WHERE n < {DAYS};
         INSERT INTO rollup_groups (day, dimension, value, active, new, gone)
         SELECT {first} + n / 75,
                CASE WHEN n % 75 < 3 THEN 'program_name'
                     WHEN n % 75 < 43 THEN 'program_version'
                     WHEN n % 75 < 68 THEN 'osrelease'
                     WHEN n % 75 < 72 THEN 'userplugin' ELSE 'id_scheme' END,
                'value ' || (n % 75), 15000 + n % 997, n % 30, n % 20
         FROM {series} WHERE n < {DAYS} * 75;
         INSERT INTO rollup_users (day, bucket, installations)
         SELECT {first} + n / 33, n % 33, 18000 + n % 33
         FROM {series} WHERE n < {DAYS} * 33;
         INSERT INTO rollup_hours (hour, reports)
         SELECT ({first} * 24) + n, 600000
         FROM {series} WHERE n < {DAYS} * 24;"
    )
}

fn seed_sqlite(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
    let series = "(WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c \
                  WHERE n < 999999) SELECT n FROM c) AS s";
    conn.execute_batch(&format!("BEGIN; {} COMMIT;", seed_sql(series)))
        .expect("seed SQLite");
}

async fn seed_postgres(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    let series = "generate_series(0, 999999) AS s(n)";
    client
        .batch_execute(&format!("BEGIN; {} COMMIT; ANALYZE;", seed_sql(series)))
        .await
        .expect("seed PostgreSQL");
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn measure(name: &str, db: Database, rounds: usize) {
    let store = Store::open(&db, Access::Read)
        .await
        .expect("open the store");
    for range in Range::ALL {
        let (from, to) = range.days(TODAY);
        let mut times = Vec::with_capacity(rounds);
        let mut pages = Vec::with_capacity(rounds);
        let (mut bytes, mut page_bytes) = (0, 0);
        for _ in 0..rounds {
            let started = Instant::now();
            let summary = store.load_summary(from, to).await.expect("load_summary");
            let loaded = started.elapsed();
            let published = summary.publishable(DEFAULT_MIN_GROUP);
            bytes = serde_json::to_vec(&published).expect("serialise").len();
            times.push(started.elapsed());
            let rendering = Instant::now();
            page_bytes = dashboard::render(&summary, range).expect("render").len();
            pages.push(loaded + rendering.elapsed());
        }
        times.sort();
        pages.sort();
        println!(
            "{name:10} range {:4} p50 {:8.1} ms  p95 {:8.1} ms  summary.json {:>9} bytes",
            range.name(),
            percentile(&times, 50).as_secs_f64() * 1e3,
            percentile(&times, 95).as_secs_f64() * 1e3,
            bytes
        );
        println!(
            "{name:10} range {:4} p50 {:8.1} ms  p95 {:8.1} ms  dashboard    {:>9} bytes",
            range.name(),
            percentile(&pages, 50).as_secs_f64() * 1e3,
            percentile(&pages, 95).as_secs_f64() * 1e3,
            page_bytes
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    println!(
        "{INSTALLATIONS} installations, {DAYS} days of rollup, {rounds} rounds per range; \
         load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let db = Database::Sqlite(path.clone());
    drop(
        Store::open(&db, Access::Serve)
            .await
            .expect("create SQLite"),
    );
    let started = Instant::now();
    seed_sqlite(&path);
    println!(
        "sqlite     seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    measure("sqlite", db, rounds).await;

    match std::env::var("SURVEYD_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let db = Database::Postgres(url.clone());
            drop(
                Store::open(&db, Access::Serve)
                    .await
                    .expect("migrate PostgreSQL"),
            );
            let started = Instant::now();
            seed_postgres(&url).await;
            println!(
                "postgres   seeded in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            measure("postgres", db, rounds).await;
        }
        _ => println!("postgres   skipped: SURVEYD_BENCH_POSTGRES_URL is not set"),
    }
}
