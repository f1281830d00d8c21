//! The collector's daily history through the real binary and its submit
//! endpoint, with the collector's clock moved day by day by libfaketime
//! (no test-only code path in the collector): 2,000 installations join over
//! a month, upgrade through three versions and partly stop reporting over
//! 90 days; the rollup must hold exactly the active, new and gone counts a
//! model of the same schedule gives, per day and per version, on SQLite and
//! PostgreSQL, across a restart, and with two collectors writing one
//! PostgreSQL database at once; retention must delete exactly the rows not
//! seen for `retention_days`.
//!
//! To keep the run short each installation reports every fifth day rather
//! than daily (the shape, 2,000 installations and three versions over 90
//! days, is kept): about 30,000 reports per history.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use common::*;
use surveyd::collector::config::Database;
use surveyd::collector::store::{Access, Store};
use surveyd::collector::summary::SummarySource;

// The thread-safe build: the collector reads the clock from many threads.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// 2026-01-01, the simulated history's first day.
const BASE_DAY: i64 = 20_454;
const DAYS: i64 = 90;
const INSTALLATIONS: usize = 2_000;
const EVERY: i64 = 5;
const RETENTION_DAYS: i64 = 30;
/// Installations with `i % STOPPER == 0` send nothing after [`STOP_AFTER`].
const STOPPER: usize = 10;
const STOP_AFTER: i64 = 40;
const POSTERS: usize = 8;

/// The collector's wall clock: a libfaketime timestamp file, re-read on
/// every call (FAKETIME_NO_CACHE) and standing still at the time written.
/// Monotonic time stays real, so the collector's timers keep working.
struct Clock {
    dir: tempfile::TempDir,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("faketime")
    }

    /// Noon of `day` (simulated), written atomically so that a read never
    /// sees half a timestamp.
    fn set_day(&self, day: i64) {
        let secs = (BASE_DAY + day) * 86_400 + 12 * 3600;
        let text = surveyd::collector::summary::time_text(secs);
        // "2026-01-01T12:00:00Z" -> "2026-01-01 12:00:00"
        let stamp = text.trim_end_matches('Z').replace('T', " ");
        let tmp = self.dir.path().join("faketime.tmp");
        std::fs::write(&tmp, format!("{stamp}\n")).unwrap();
        std::fs::rename(&tmp, self.file()).unwrap();
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", FAKETIME.into()),
            ("FAKETIME_TIMESTAMP_FILE", self.file().display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
        ]
    }
}

fn faketime_available() -> bool {
    if std::path::Path::new(FAKETIME).exists() {
        return true;
    }
    skip("libfaketime is not installed (Debian package faketime)");
    false
}

fn machine(i: usize) -> String {
    format!("{:032x}", 0x1000_0000_u128 + i as u128)
}

fn guid(i: usize) -> String {
    format!("{:032x}", 0x2000_0000_u128 + i as u128)
}

fn joins(i: usize) -> i64 {
    (i % 30) as i64
}

fn version(i: usize, day: i64) -> &'static str {
    let shift = (i % 20) as i64;
    if day < 30 + shift {
        "1.0"
    } else if day < 60 + shift {
        "2.0"
    } else {
        "3.0"
    }
}

fn reports_on(i: usize, day: i64) -> bool {
    day >= joins(i) && (day - joins(i)) % EVERY == 0 && (i % STOPPER != 0 || day <= STOP_AFTER)
}

fn users(i: usize) -> i64 {
    (i % 50) as i64
}

/// The day's reports in two waves: an installation whose version changed
/// since its last report sends the old version first (wave one) and the
/// new one after it (wave two); it must count as active under the old one.
fn waves(day: i64) -> [Vec<(usize, &'static str)>; 2] {
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in (0..INSTALLATIONS).filter(|&i| reports_on(i, day)) {
        let now = version(i, day);
        let before = day - EVERY;
        if before >= joins(i) && version(i, before) != now {
            first.push((i, version(i, before)));
            second.push((i, now));
        } else {
            first.push((i, now));
        }
    }
    [first, second]
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    active: u64,
    new: u64,
    gone: u64,
}

/// What the rollup must say: the same schedule, counted by the rules in
/// docs/collector.md.
#[derive(Debug, Default)]
struct Model {
    /// installation -> (last day, last version)
    rows: HashMap<usize, (i64, &'static str)>,
    by_version: BTreeMap<(i64, &'static str), Counts>,
    reports: BTreeMap<i64, u64>,
}

impl Model {
    fn run() -> Model {
        let mut m = Model::default();
        for day in 0..DAYS {
            // The first write of `day` closes `day - 1`.
            let closed = day - 1;
            let expired: Vec<usize> = m
                .rows
                .iter()
                .filter(|(_, (last, _))| *last <= closed - RETENTION_DAYS)
                .map(|(i, _)| *i)
                .collect();
            for i in expired {
                let (_, v) = m.rows.remove(&i).unwrap();
                m.by_version.entry((closed, v)).or_default().gone += 1;
            }
            for wave in waves(day) {
                for (i, v) in wave {
                    *m.reports.entry(day).or_default() += 1;
                    let previous = m.rows.insert(i, (day, v));
                    let c = m.by_version.entry((day, v)).or_default();
                    match previous {
                        None => {
                            c.active += 1;
                            c.new += 1;
                        }
                        Some((last, _)) if last < day => c.active += 1,
                        Some(_) => {}
                    }
                }
            }
        }
        m
    }

    fn daily(&self) -> BTreeMap<i64, Counts> {
        let mut out: BTreeMap<i64, Counts> = BTreeMap::new();
        for ((day, _), c) in &self.by_version {
            let d = out.entry(*day).or_default();
            d.active += c.active;
            d.new += c.new;
            d.gone += c.gone;
        }
        out
    }

    fn uids(&self) -> BTreeSet<String> {
        self.rows
            .keys()
            .map(|&i| installation_uid(&machine(i), &guid(i)))
            .collect()
    }
}

fn post_all(collector: &Collector, reports: &[(usize, &'static str)]) {
    let chunk = reports.len().div_ceil(POSTERS).max(1);
    std::thread::scope(|s| {
        for part in reports.chunks(chunk) {
            s.spawn(move || {
                for &(i, v) in part {
                    let body = surveyd_payload("app-v1", &machine(i), &guid(i), v, users(i));
                    let r = collector.post(&body);
                    assert_eq!(
                        r.status,
                        200,
                        "report {i} {v}: {r:?}\n{}",
                        String::from_utf8_lossy(&collector.output())
                    );
                }
            });
        }
    });
}

fn start(backend: &Backend, clock: &Clock) -> Collector {
    let extra = format!("retention_days = {RETENTION_DAYS}\n[rate_limit]\nenabled = false\n");
    Collector::start_with(
        backend,
        Options {
            extra: &extra,
            env: clock.env(),
            nofile: None,
        },
    )
}

/// The rows of `sql`, whose `columns` columns are all non-NULL text, from
/// either store.
fn text_rows(backend: &Backend, sql: &str, columns: usize) -> Vec<Vec<String>> {
    match backend.sqlite_path() {
        Some(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| {
                (0..columns).map(|i| r.get::<_, String>(i)).collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        }
        None => backend
            .pg_query(sql, &[])
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap).collect())
            .collect(),
    }
}

/// Every (day, version) -> counts row of the rollup, read with SQL.
fn version_rows(backend: &Backend) -> BTreeMap<(i64, String), Counts> {
    let sql = "SELECT CAST(day AS TEXT), value, CAST(active AS TEXT), CAST(new AS TEXT), \
               CAST(gone AS TEXT) FROM rollup_groups WHERE dimension = 'program_version'";
    text_rows(backend, sql, 5)
        .into_iter()
        .filter(|r| r[2] != "0" || r[3] != "0" || r[4] != "0")
        .map(|r| {
            let n = |k: usize| r[k].parse::<u64>().unwrap();
            let key = (r[0].parse::<i64>().unwrap() - BASE_DAY, r[1].clone());
            (
                key,
                Counts {
                    active: n(2),
                    new: n(3),
                    gone: n(4),
                },
            )
        })
        .collect()
}

/// The rollup and the table hold exactly what the model says.
fn assert_history(backend: &Backend, collector: &Collector, model: &Model, copies: u64) {
    let name = backend.name();
    let wanted: BTreeMap<(i64, String), Counts> = model
        .by_version
        .iter()
        .filter(|(_, c)| **c != Counts::default())
        .map(|((d, v), c)| ((*d, v.to_string()), *c))
        .collect();
    let got = version_rows(backend);
    for (key, c) in &wanted {
        assert_eq!(
            got.get(key),
            Some(c),
            "{name}: day {} version {}",
            key.0,
            key.1
        );
    }
    assert_eq!(
        got.len(),
        wanted.len(),
        "{name}: no other (day, version) rows"
    );

    // load_summary, the dashboard's and summary.json's source, agrees.
    let summary = block_on(async {
        let store = Store::open(&Database::parse(&backend.database()), Access::Read)
            .await
            .unwrap();
        store
            .load_summary(BASE_DAY, BASE_DAY + DAYS - 1)
            .await
            .unwrap()
    });
    let daily = model.daily();
    assert_eq!(
        summary.daily.len(),
        daily.len(),
        "{name}: one entry per day"
    );
    for d in &summary.daily {
        let day = d.day - BASE_DAY;
        let want = daily[&day];
        assert_eq!(
            (d.active, d.new, d.gone, d.reports),
            (
                want.active,
                want.new,
                want.gone,
                model.reports[&day] * copies
            ),
            "{name}: daily totals of day {day}"
        );
    }
    for dg in &summary.by["program_version"] {
        for (v, n) in &dg.groups {
            let day = dg.day - BASE_DAY;
            assert_eq!(wanted[&(day, v.clone())].active, *n, "{name}: {day} {v}");
        }
    }
    let total_users: u64 = summary.users.iter().map(|u| u.sum).sum();
    assert!(total_users > 0, "{name}: active users are summed");
    let hourly: u64 = summary.reports_per_hour.iter().map(|h| h.reports).sum();
    assert_eq!(hourly, model.reports.values().sum::<u64>() * copies);

    let uids: BTreeSet<String> = collector
        .rows()
        .iter()
        .map(|r| r["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        uids,
        model.uids(),
        "{name}: retention deleted exactly the expired rows"
    );
}

#[test]
fn seeded_history_gives_exact_daily_counts_across_a_restart() {
    if !faketime_available() {
        return;
    }
    let model = Model::run();
    // The schedule exercises every rule it is meant to.
    let daily = model.daily();
    assert!(
        daily.values().any(|c| c.gone > 0),
        "some installations expire"
    );
    let versions: BTreeSet<_> = model.by_version.keys().map(|k| k.1).collect();
    assert_eq!(versions.len(), 3);
    for_each_backend("seeded_history", |backend| {
        let clock = Clock::new();
        clock.set_day(0);
        let mut collector = start(&backend, &clock);
        for day in 0..DAYS {
            clock.set_day(day);
            let [first, second] = waves(day);
            post_all(&collector, &first);
            if day == 45 {
                // Mid-day, between an installation's two reports.
                let (status, _) = collector.stop();
                assert!(status.success());
                collector = start(&backend, &clock);
            }
            post_all(&collector, &second);
        }
        assert_history(&backend, &collector, &model, 1);
        let (status, out) = collector.stop();
        assert!(status.success(), "{}", String::from_utf8_lossy(&out));
    });
}

#[test]
fn two_collectors_on_one_postgres_database_count_each_installation_once() {
    if !faketime_available() {
        return;
    }
    let model = Model::run();
    for_each_backend("two_collectors_history", |backend| {
        if backend.sqlite_path().is_some() {
            // SQLite has one writer by design (the serving lock).
            return;
        }
        let clock = Clock::new();
        clock.set_day(0);
        let a = start(&backend, &clock);
        let b = start(&backend, &clock);
        for day in 0..DAYS {
            clock.set_day(day);
            // Every report goes to both collectors at once: each first
            // report of a day races its twin on the other collector.
            for wave in waves(day) {
                let mut reversed = wave.clone();
                reversed.reverse();
                std::thread::scope(|s| {
                    s.spawn(|| post_all(&a, &wave));
                    s.spawn(|| post_all(&b, &reversed));
                });
            }
        }
        assert_history(&backend, &a, &model, 2);
        for c in [a, b] {
            let (status, out) = c.stop();
            assert!(status.success(), "{}", String::from_utf8_lossy(&out));
        }
    });
}

/// One installation's burst of reports, sent at once so that several land
/// in one writer batch and others in the next: it is active and new once
/// today, every report counted, on both stores. (The upsert tells the
/// history what the row held; a report after the first in the same batch
/// or a later one is not the first of the day.)
#[test]
fn a_burst_of_one_installations_reports_counts_it_once() {
    const BURST: usize = 48;
    for_each_backend("burst_history", |backend| {
        let collector = Collector::start_with(
            &backend,
            Options {
                extra: "[rate_limit]\nenabled = false\n",
                env: Vec::new(),
                nofile: None,
            },
        );
        let body = surveyd_payload("app-v1", &machine(7), &guid(7), "10.0.1", users(7));
        let today = || {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.unwrap().as_secs() / 86_400
        };
        let first_day = today();
        std::thread::scope(|s| {
            for _ in 0..POSTERS {
                s.spawn(|| {
                    for _ in 0..BURST / POSTERS {
                        let r = collector.post(&body);
                        assert_eq!(r.status, 200, "{r:?}");
                    }
                });
            }
        });
        // A burst across UTC midnight is rightly active on both days.
        let days = (today() - first_day + 1) as usize;
        let sql = "SELECT CAST(active AS TEXT), CAST(new AS TEXT), CAST(reports AS TEXT) \
                   FROM rollup_days";
        let rows = text_rows(&backend, sql, 3);
        let name = backend.name();
        let n = |row: &Vec<String>, k: usize| row[k].parse::<usize>().unwrap();
        assert_eq!(rows.len(), days, "{name}: {rows:?}");
        assert!(
            rows.iter().all(|r| n(r, 0) == 1),
            "{name}: active once a day: {rows:?}"
        );
        assert_eq!(
            rows.iter().map(|r| n(r, 1)).sum::<usize>(),
            1,
            "{name}: new once"
        );
        assert_eq!(
            rows.iter().map(|r| n(r, 2)).sum::<usize>(),
            BURST,
            "{name}: reports"
        );
        let versions = version_rows(&backend);
        assert_eq!(versions.len(), days, "{name}: {versions:?}");
        assert!(
            versions.values().all(|c| c.active == 1 && c.gone == 0),
            "{name}"
        );
        assert_eq!(versions.values().map(|c| c.new).sum::<u64>(), 1, "{name}");
        let (status, out) = collector.stop();
        assert!(status.success(), "{}", String::from_utf8_lossy(&out));
    });
}
