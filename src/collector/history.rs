//! The daily history (rollup) the collector keeps of its installed base:
//! what one report or one expired row adds to the per-day counters, the
//! SQL both stores use to add it, the rules of day close and retention,
//! and turning the rollup tables into a [`Summary`].
//!
//! The counters are written in the same transaction as the row they come
//! from (see `store`), so they are exactly as durable as the table.
//!
//! - An installation is *active* on a day at its first report of that UTC
//!   day, counted under the values of that report.
//! - It is *new* on the day its row is created (`first_seen`).
//! - It is *gone* on the day whose close deletes its row by retention
//!   (`retention_days` after its last report), under its last values. A row
//!   deleted at its owner's request is not gone: it is counted nowhere.
//! - Day D is closed once, by the first write or tick after it ended; the
//!   `closed_days` marker row says it happened.

use std::collections::BTreeMap;

use super::ingest::Report;
use super::summary::{bucket_of, day_of, DayGroups, DayTotals, DayUsers, HourCount, Summary};
use super::summary::{BUCKETS, DIMENSIONS};
use crate::wire;

/// The value counted for a dimension the report left out.
pub const UNKNOWN: &str = "unknown";

/// The `id_scheme` counted for a report from upstream kopano-server (raw
/// ids hashed by the collector).
pub const UPSTREAM_SCHEME: &str = "upstream";

/// Most rows one retention transaction deletes, so that a large first pass
/// never holds the writer (and the watchdog) for long.
pub const RETENTION_BATCH: usize = 1000;

/// How far back a collector that was down catches up on closing days; a
/// longer outage closes only these (older expired rows go on the first of
/// them).
pub const MAX_CATCH_UP_DAYS: i64 = 366;

/// The values of [`DIMENSIONS`] a report or row is counted under, in that
/// order.
pub type Dims = [String; DIMENSIONS.len()];

/// How the row of an installation looked before this report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// No row: the report creates it.
    New,
    /// A row whose last report came at this time.
    LastUpdate(i64),
}

/// The `id_scheme` value for a row's `flags`.
pub fn id_scheme_of(flags: i64) -> &'static str {
    wire::IdScheme::ALL
        .into_iter()
        .find(|s| flags & s.flag() != 0)
        .map_or(UPSTREAM_SCHEME, wire::IdScheme::wire_name)
}

/// Counted values of a report; NULL text counts as [`UNKNOWN`].
pub fn dims_of(report: &Report) -> Dims {
    let text = |f: &wire::Field| report.text(f).unwrap_or(UNKNOWN).to_owned();
    [
        text(&wire::PROGRAM_NAME),
        text(&wire::PROGRAM_VERSION),
        text(&wire::OSRELEASE),
        text(&wire::USERPLUGIN),
        id_scheme_of(report.flags).to_owned(),
    ]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub active: i64,
    pub new: i64,
    pub gone: i64,
    pub reports: i64,
    pub users_sum: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub active: i64,
    pub new: i64,
    pub gone: i64,
}

/// What a batch of reports (or a retention pass) adds to the rollup
/// tables, keyed in the order the tables are locked in, so that several
/// collectors on one PostgreSQL database take the counter rows in the same
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Increments {
    pub days: BTreeMap<i64, DayCounts>,
    /// (day, dimension, value)
    pub groups: BTreeMap<(i64, &'static str, String), GroupCounts>,
    /// (day, bucket) -> installations
    pub users: BTreeMap<(i64, i32), i64>,
    /// hour -> reports
    pub hours: BTreeMap<i64, i64>,
}

impl Increments {
    pub fn is_empty(&self) -> bool {
        self.days.is_empty() && self.hours.is_empty()
    }

    /// Count `report`, received at `now`, whose row looked like `previous`.
    pub fn add_report(&mut self, report: &Report, now: i64, previous: Previous) {
        let today = day_of(now);
        let first_today = match previous {
            Previous::New => true,
            Previous::LastUpdate(t) => day_of(t) < today,
        };
        let new = previous == Previous::New;
        *self.hours.entry(now.div_euclid(3600)).or_default() += 1;
        let day = self.days.entry(today).or_default();
        day.reports += 1;
        if !first_today {
            return;
        }
        day.active += 1;
        day.new += i64::from(new);
        let users = report.count(&wire::USERCNT_ACTIVE);
        if let Some(users) = users {
            day.users_sum += users;
            *self
                .users
                .entry((today, bucket_of(users.max(0) as u64) as i32))
                .or_default() += 1;
        }
        for (dimension, value) in DIMENSIONS.into_iter().zip(dims_of(report)) {
            let g = self.groups.entry((today, dimension, value)).or_default();
            g.active += 1;
            g.new += i64::from(new);
        }
    }

    /// Count a row deleted by retention when `day` closed.
    pub fn add_gone(&mut self, day: i64, dims: Dims) {
        self.days.entry(day).or_default().gone += 1;
        for (dimension, value) in DIMENSIONS.into_iter().zip(dims) {
            self.groups.entry((day, dimension, value)).or_default().gone += 1;
        }
    }
}

/// Rows last seen before this time are expired when `day` closes: not seen
/// for `retention_days` whole days by its end. `None`: keep forever.
pub fn retention_cutoff(day: i64, retention_days: u32) -> Option<i64> {
    (retention_days > 0).then(|| (day + 1 - i64::from(retention_days)) * 86_400)
}

/// The days a collector closes when it finds `today` with `last_closed`
/// the newest closed day: every ended day since, at most
/// [`MAX_CATCH_UP_DAYS`]; on a fresh database only yesterday.
pub fn days_to_close(today: i64, last_closed: Option<i64>) -> std::ops::Range<i64> {
    let first = last_closed.map_or(today - 1, |d| d + 1);
    first.max(today - MAX_CATCH_UP_DAYS)..today
}

// Counter upserts. `excluded` and the table-qualified names are spelled so
// that SQLite and PostgreSQL accept the same text after the VALUES part.
pub const ADD_DAY: &str = "ON CONFLICT (day) DO UPDATE SET \
    active = rollup_days.active + excluded.active, \
    new = rollup_days.new + excluded.new, \
    gone = rollup_days.gone + excluded.gone, \
    reports = rollup_days.reports + excluded.reports, \
    users_sum = rollup_days.users_sum + excluded.users_sum";
pub const ADD_GROUP: &str = "ON CONFLICT (day, dimension, value) DO UPDATE SET \
    active = rollup_groups.active + excluded.active, \
    new = rollup_groups.new + excluded.new, \
    gone = rollup_groups.gone + excluded.gone";
pub const ADD_USERS: &str = "ON CONFLICT (day, bucket) DO UPDATE SET \
    installations = rollup_users.installations + excluded.installations";
pub const ADD_HOUR: &str =
    "ON CONFLICT (hour) DO UPDATE SET reports = rollup_hours.reports + excluded.reports";

/// The columns an expired row is counted gone under, then its uid.
pub const EXPIRED_COLUMNS: &str =
    "program_name, program_version, osrelease, userplugin, flags, uid";

/// [`Dims`] of a row from the first five [`EXPIRED_COLUMNS`].
pub fn dims_of_row(texts: [Option<String>; 4], flags: i64) -> Dims {
    let [a, b, c, d] = texts.map(|t| t.unwrap_or_else(|| UNKNOWN.to_owned()));
    [a, b, c, d, id_scheme_of(flags).to_owned()]
}

// Reads of [`load_summary`]: only the rollup tables, by their primary keys.
pub const SELECT_DAYS: &str = "SELECT day, active, new, gone, reports, users_sum \
    FROM rollup_days WHERE day >= $1 AND day <= $2 ORDER BY day";
pub const SELECT_GROUPS: &str = "SELECT day, dimension, value, active \
    FROM rollup_groups WHERE day >= $1 AND day <= $2 AND active > 0 ORDER BY day";
pub const SELECT_USERS: &str = "SELECT day, CAST(bucket AS BIGINT), installations \
    FROM rollup_users WHERE day >= $1 AND day <= $2 ORDER BY day";
pub const SELECT_HOURS: &str = "SELECT hour, reports \
    FROM rollup_hours WHERE hour >= $1 AND hour <= $2 ORDER BY hour";

/// The hours `SELECT_HOURS` covers for a range of days.
pub fn hours_of(from_day: i64, to_day: i64) -> (i64, i64) {
    (from_day * 24, to_day * 24 + 23)
}

/// Rows of the four reads, as the stores return them.
#[derive(Debug, Default)]
pub struct RollupRows {
    /// (day, counts)
    pub days: Vec<(i64, DayCounts)>,
    /// (day, dimension, value, active)
    pub groups: Vec<(i64, String, String, i64)>,
    /// (day, bucket, installations)
    pub users: Vec<(i64, i64, i64)>,
    /// (hour, reports)
    pub hours: Vec<(i64, i64)>,
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// The summary of `from_day..=to_day` from the rollup's rows. `min_group`
/// is 0: this is the raw summary, [`Summary::publishable`] applies it.
pub fn summary_from(rows: RollupRows, from_day: i64, to_day: i64, generated_at: u64) -> Summary {
    let daily = rows
        .days
        .iter()
        .map(|(day, c)| DayTotals {
            day: *day,
            active: count(c.active),
            new: count(c.new),
            gone: count(c.gone),
            reports: count(c.reports),
        })
        .collect();
    let mut by: BTreeMap<String, BTreeMap<i64, BTreeMap<String, u64>>> = DIMENSIONS
        .iter()
        .map(|d| (d.to_string(), BTreeMap::new()))
        .collect();
    for (day, dimension, value, active) in rows.groups {
        if let Some(days) = by.get_mut(&dimension) {
            days.entry(day).or_default().insert(value, count(active));
        }
    }
    let by = by
        .into_iter()
        .map(|(dimension, days)| {
            let days = days
                .into_iter()
                .map(|(day, groups)| DayGroups { day, groups })
                .collect();
            (dimension, days)
        })
        .collect();
    let mut users: BTreeMap<i64, DayUsers> = BTreeMap::new();
    for (day, c) in &rows.days {
        if c.active > 0 {
            users.insert(*day, day_users(*day, count(c.users_sum)));
        }
    }
    for (day, bucket, installations) in rows.users {
        let u = users.entry(day).or_insert_with(|| day_users(day, 0));
        if let Some(slot) = usize::try_from(bucket)
            .ok()
            .and_then(|b| u.histogram.get_mut(b))
        {
            *slot += count(installations);
        }
    }
    Summary {
        generated_at,
        from_day,
        to_day,
        min_group: 0,
        daily,
        by,
        users: users.into_values().collect(),
        reports_per_hour: rows
            .hours
            .into_iter()
            .map(|(hour, reports)| HourCount {
                hour,
                reports: count(reports),
            })
            .collect(),
    }
}

fn day_users(day: i64, sum: u64) -> DayUsers {
    DayUsers {
        day,
        sum,
        histogram: vec![0; BUCKETS],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::ingest::Value;

    fn report(version: &str, users: Option<i64>) -> Report {
        let mut values = vec![None; wire::stored_fields().count()];
        let at = |f| wire::stored_index(f).unwrap();
        values[at(&wire::PROGRAM_NAME)] = Some(Value::Text("kopano".into()));
        values[at(&wire::PROGRAM_VERSION)] = Some(Value::Text(version.into()));
        values[at(&wire::USERCNT_ACTIVE)] = users.map(Value::Count);
        Report {
            uid: "u".into(),
            flags: wire::FLAG_ID_APP_V1,
            values,
        }
    }

    #[test]
    fn only_the_first_report_of_a_day_is_active_and_only_a_new_row_is_new() {
        let day = 20_000;
        let t = day * 86_400 + 100;
        let mut inc = Increments::default();
        inc.add_report(&report("1", Some(5)), t, Previous::New);
        inc.add_report(&report("2", Some(7)), t + 10, Previous::LastUpdate(t));
        inc.add_report(&report("2", None), t, Previous::LastUpdate(t - 86_400));
        let c = inc.days[&day];
        assert_eq!((c.active, c.new, c.reports, c.users_sum), (2, 1, 3, 5));
        let v1 = inc.groups[&(day, "program_version", "1".to_owned())];
        assert_eq!((v1.active, v1.new), (1, 1));
        let v2 = inc.groups[&(day, "program_version", "2".to_owned())];
        assert_eq!((v2.active, v2.new), (1, 0));
        assert_eq!(
            inc.groups[&(day, "osrelease", UNKNOWN.to_owned())].active,
            2
        );
        assert_eq!(
            inc.groups[&(day, "id_scheme", "app-v1".to_owned())].active,
            2
        );
        assert_eq!(inc.users, BTreeMap::from([((day, 3), 1)]));
        assert_eq!(inc.hours[&(t / 3600)], 3);
    }

    #[test]
    fn retention_expires_a_row_retention_days_after_its_last_day() {
        let last_day = 100;
        let t = last_day * 86_400 + 86_399;
        // Closing day 100 + 179 keeps it, closing day 100 + 180 expires it.
        assert!(t >= retention_cutoff(last_day + 179, 180).unwrap());
        assert!(t < retention_cutoff(last_day + 180, 180).unwrap());
        assert_eq!(retention_cutoff(last_day, 0), None);
    }

    #[test]
    fn catch_up_closes_every_missed_day_but_only_yesterday_on_a_fresh_database() {
        assert_eq!(days_to_close(50, None), 49..50);
        assert_eq!(days_to_close(50, Some(46)), 47..50);
        assert_eq!(days_to_close(50, Some(49)), 50..50);
        assert_eq!(days_to_close(1000, Some(1)), 634..1000);
    }

    #[test]
    fn upstream_rows_count_under_their_own_scheme() {
        assert_eq!(id_scheme_of(wire::FLAG_UPSTREAM_RAW_IDS), UPSTREAM_SCHEME);
        assert_eq!(id_scheme_of(wire::FLAG_ID_SHA256), "sha256");
    }
}
