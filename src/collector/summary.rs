//! The installed base as series over days: the one model the dashboard,
//! `GET /api/stats/v1/summary.json` and `surveyd-collector export` are all
//! made of, and the rules that make it safe to publish.
//!
//! [`Summary`] is what the rollup holds (the history reads it from there,
//! never from the installation table). [`Summary::publishable`] turns it
//! into [`Published`], the document served and exported: every group under
//! `min_group` installations is folded into "other", histogram buckets are
//! merged until each holds at least `min_group`, and no minimum or maximum
//! of anything is part of it. docs/summary.md describes the JSON.
//!
//! Days are UTC day numbers (`unix_secs / 86400`) inside and "YYYY-MM-DD" on
//! the wire; hours are `unix_secs / 3600` inside and RFC 3339 on the wire.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::Database;
use super::store::{Access, Store, StoreError};

/// The dimensions of [`Summary::by`], in the order they are shown.
pub const DIMENSIONS: [&str; 5] = [
    "program_name",
    "program_version",
    "osrelease",
    "userplugin",
    "id_scheme",
];

/// Groups too small to publish are counted under this name.
pub const OTHER: &str = "other";

/// Log2 buckets of active users: bucket 0 holds 0, bucket k holds
/// `2^(k-1) <= v < 2^k`; the last one also holds everything above.
pub const BUCKETS: usize = 33;

/// What `min_group` is unless the configuration says otherwise.
pub const DEFAULT_MIN_GROUP: u64 = 10;

/// The published document's format version, bumped on any incompatible
/// change to the JSON.
pub const FORMAT_VERSION: u32 = 1;

pub const SECS_PER_DAY: i64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Unix seconds.
    pub generated_at: u64,
    /// The inclusive range of days asked for.
    pub from_day: i64,
    pub to_day: i64,
    pub min_group: u64,
    /// Per day: installations active, new, gone; reports received.
    pub daily: Vec<DayTotals>,
    /// Per dimension (see [`DIMENSIONS`]), per day: active installations
    /// per value.
    pub by: BTreeMap<String, Vec<DayGroups>>,
    /// Per day: the sum of active users over active installations and
    /// their log2 histogram ([`BUCKETS`] buckets); installations without
    /// the count are in neither.
    pub users: Vec<DayUsers>,
    /// Reports per hour, to spot outages.
    pub reports_per_hour: Vec<HourCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    #[serde(with = "wire_day")]
    pub day: i64,
    pub active: u64,
    pub new: u64,
    pub gone: u64,
    pub reports: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayGroups {
    #[serde(with = "wire_day")]
    pub day: i64,
    pub groups: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUsers {
    pub day: i64,
    pub sum: u64,
    pub histogram: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCount {
    #[serde(with = "wire_hour")]
    pub hour: i64,
    pub reports: u64,
}

/// The range of days a page or an export covers, as `?range=` and
/// `--range` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Range {
    #[default]
    #[value(name = "30d")]
    Days30,
    #[value(name = "1y")]
    Year,
    #[value(name = "all")]
    All,
}

impl Range {
    pub const ALL: [Range; 3] = [Range::Days30, Range::Year, Range::All];

    pub fn parse(s: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Range::Days30 => "30d",
            Range::Year => "1y",
            Range::All => "all",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Range::Days30 => "30 days",
            Range::Year => "1 year",
            Range::All => "all",
        }
    }

    /// The inclusive days it covers, ending with `today`.
    pub fn days(self, today: i64) -> (i64, i64) {
        let from = match self {
            Range::Days30 => today - 29,
            Range::Year => today - 364,
            Range::All => 0,
        };
        (from, today)
    }
}

/// Where summaries come from: the history's rollup tables (implemented for
/// `store::Store` in the history).
pub trait SummarySource {
    fn load_summary(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> impl Future<Output = Result<Summary, StoreError>> + Send;
}

/// The database as a [`SummarySource`]: each load opens a read connection
/// of its own on a blocking thread and runs `Store::load_summary` (the
/// history's rollup query) there. The listeners cache what it returns, so
/// this happens at most once a minute per range, and neither a SQLite
/// query nor a slow PostgreSQL stalls the threads serving requests.
pub struct StoreSummaries {
    database: Database,
}

impl StoreSummaries {
    pub fn new(database: Database) -> StoreSummaries {
        StoreSummaries { database }
    }
}

impl SummarySource for StoreSummaries {
    fn load_summary(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> impl Future<Output = Result<Summary, StoreError>> + Send {
        let database = self.database.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError(format!("cannot start a reader: {e}")))?;
                rt.block_on(async {
                    let store = Store::open(&database, Access::Read).await?;
                    store.load_summary(from_day, to_day).await
                })
            })
            .await
            .map_err(|e| StoreError(format!("the summary reader failed: {e}")))?
        }
    }
}

/// The bucket that `users` active users fall in.
pub fn bucket_of(users: u64) -> usize {
    (u64::BITS - users.leading_zeros()).min(BUCKETS as u32 - 1) as usize
}

/// The users a bucket holds: `from <= v < below`; the last bucket has no
/// upper bound.
pub fn bucket_bounds(k: usize) -> (u64, Option<u64>) {
    match k {
        0 => (0, Some(1)),
        k if k >= BUCKETS - 1 => (1 << (BUCKETS - 2), None),
        k => (1 << (k - 1), Some(1 << k)),
    }
}

/// The publishable document; see docs/summary.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub format_version: u32,
    #[serde(with = "wire_time")]
    pub generated_at: u64,
    #[serde(with = "wire_day")]
    pub from: i64,
    #[serde(with = "wire_day")]
    pub to: i64,
    pub min_group: u64,
    pub daily: Vec<DayTotals>,
    pub by: BTreeMap<String, Vec<DayGroups>>,
    pub users: Vec<PublishedUsers>,
    pub reports_per_hour: Vec<HourCount>,
}

/// Active users on one day, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedUsers {
    #[serde(with = "wire_day")]
    pub day: i64,
    /// Installations that reported a count.
    pub installations: u64,
    /// Absent when fewer than `min_group` installations make it up.
    pub sum: Option<u64>,
    /// Each holds at least `min_group` installations.
    pub buckets: Vec<UsersBucket>,
    pub p50: Option<Bounds>,
    pub p95: Option<Bounds>,
}

/// Installations with `from <= active users < below` (no `below`: no upper
/// bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersBucket {
    pub from: u64,
    pub below: Option<u64>,
    pub installations: u64,
}

/// The bounds of the bucket a percentile falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    pub from: u64,
    pub below: Option<u64>,
}

impl Summary {
    /// The summary as it may be published: see the module comment. A
    /// `min_group` of 0 is taken as 1.
    pub fn publishable(&self, min_group: u64) -> Published {
        let min_group = min_group.max(1);
        let by = self
            .by
            .iter()
            .map(|(dimension, days)| {
                let days = days
                    .iter()
                    .map(|d| DayGroups {
                        day: d.day,
                        groups: fold_small_groups(&d.groups, min_group),
                    })
                    .collect();
                (dimension.clone(), days)
            })
            .collect();
        let users = self
            .users
            .iter()
            .map(|u| {
                let installations: u64 = u.histogram.iter().sum();
                let buckets = merge_buckets(&u.histogram, min_group);
                PublishedUsers {
                    day: u.day,
                    installations,
                    sum: (installations >= min_group).then_some(u.sum),
                    p50: percentile(&buckets, 50),
                    p95: percentile(&buckets, 95),
                    buckets,
                }
            })
            .collect();
        Published {
            format_version: FORMAT_VERSION,
            generated_at: self.generated_at,
            from: self.from_day,
            to: self.to_day,
            min_group,
            daily: self.daily.clone(),
            by,
            users,
            reports_per_hour: self.reports_per_hour.clone(),
        }
    }
}

/// Every group under `min_group` goes into [`OTHER`] (which stays even if
/// it is small itself: it names nobody); the total is unchanged.
pub fn fold_small_groups(groups: &BTreeMap<String, u64>, min_group: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut other = groups.get(OTHER).copied();
    for (value, &n) in groups {
        if value == OTHER {
            continue;
        }
        if n >= min_group {
            out.insert(value.clone(), n);
        } else if n > 0 {
            *other.get_or_insert(0) += n;
        }
    }
    if let Some(other) = other {
        out.insert(OTHER.to_owned(), other);
    }
    out
}

/// Merge neighbouring log2 buckets toward the median one until every
/// bucket holds at least `min_group` installations. Empty buckets at
/// either end are left out; none at all when the whole day has fewer than
/// `min_group`.
pub fn merge_buckets(histogram: &[u64], min_group: u64) -> Vec<UsersBucket> {
    let total: u64 = histogram.iter().sum();
    if total == 0 || total < min_group {
        return Vec::new();
    }
    let mut seen = 0;
    let median = histogram
        .iter()
        .position(|&n| {
            seen += n;
            seen * 2 >= total
        })
        .expect("a non-empty histogram has a median");

    // (first bucket, last bucket, installations), growing outward from the
    // ends; what is left over joins the median bucket.
    let mut ranges: Vec<(usize, usize, u64)> = Vec::new();
    let sweep = |indices: &mut dyn Iterator<Item = usize>| {
        let mut out = Vec::new();
        let mut open: Option<(usize, u64)> = None;
        for k in indices {
            let n = histogram[k];
            if n == 0 && open.is_none() {
                continue;
            }
            let (start, carry) = open.get_or_insert((k, 0));
            *carry += n;
            if *carry >= min_group {
                out.push((*start, k, *carry));
                open = None;
            }
        }
        (out, open)
    };
    let (low, low_rest) = sweep(&mut (0..median));
    let (high, high_rest) = sweep(&mut (median + 1..histogram.len()).rev());
    let mid_first = low_rest.map_or(median, |(start, _)| start);
    let mid_last = high_rest.map_or(median, |(start, _)| start);
    let mid_n = histogram[median]
        + low_rest.map_or(0, |(_, carry)| carry)
        + high_rest.map_or(0, |(_, carry)| carry);
    ranges.extend(low);
    ranges.push((mid_first, mid_last, mid_n));
    ranges.extend(high.into_iter().rev());

    // The median range can still be short when both sides were complete
    // just before it: it joins its smaller neighbour.
    let mid = ranges
        .iter()
        .position(|&(first, _, _)| first == mid_first)
        .expect("the median range is in the list");
    if ranges[mid].2 < min_group {
        let left = mid.checked_sub(1).map(|i| ranges[i].2);
        let right = ranges.get(mid + 1).map(|r| r.2);
        let into = match (left, right) {
            (Some(l), Some(r)) if r < l => mid + 1,
            (Some(_), _) => mid - 1,
            (None, Some(_)) => mid + 1,
            (None, None) => unreachable!("a lone range holds the whole total"),
        };
        let (a, b) = (ranges[mid], ranges[into]);
        ranges[into] = (a.0.min(b.0), a.1.max(b.1), a.2 + b.2);
        ranges.remove(mid);
    }

    ranges
        .into_iter()
        .map(|(first, last, installations)| UsersBucket {
            from: bucket_bounds(first).0,
            below: bucket_bounds(last).1,
            installations,
        })
        .collect()
}

/// The bounds of the bucket the `p`-th percentile installation falls in.
pub fn percentile(buckets: &[UsersBucket], p: u64) -> Option<Bounds> {
    let total: u64 = buckets.iter().map(|b| b.installations).sum();
    let mut seen = 0;
    buckets
        .iter()
        .find(|b| {
            seen += b.installations;
            seen * 100 >= p * total
        })
        .map(|b| Bounds {
            from: b.from,
            below: b.below,
        })
}

/// The UTC day `unix_secs` falls in.
pub fn day_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(SECS_PER_DAY)
}

/// "YYYY-MM-DD" for a day number.
pub fn day_text(day: i64) -> String {
    let mut s = time_text(day.max(0) * SECS_PER_DAY);
    s.truncate(10);
    s
}

/// RFC 3339 in UTC, seconds precision.
pub fn time_text(unix_secs: i64) -> String {
    // humantime formats four-digit years only.
    const LAST_SECOND_OF_9999: i64 = 253_402_300_799;
    let t = UNIX_EPOCH + Duration::from_secs(unix_secs.clamp(0, LAST_SECOND_OF_9999) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse_time(text: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339(text).map_err(|e| format!("{text:?}: {e}"))?;
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?
        .as_secs();
    i64::try_from(secs).map_err(|_| format!("{text:?} is out of range"))
}

/// The day number of "YYYY-MM-DD".
pub fn parse_day(text: &str) -> Result<i64, String> {
    if text.len() != 10 {
        return Err(format!("{text:?} is not a YYYY-MM-DD date"));
    }
    parse_time(&format!("{text}T00:00:00Z")).map(day_of)
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

mod wire_day {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(day: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::day_text(*day))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_day(&text).map_err(serde::de::Error::custom)
    }
}

mod wire_hour {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hour: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::time_text(hour.saturating_mul(3600)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text)
            .map(|secs| secs.div_euclid(3600))
            .map_err(serde::de::Error::custom)
    }
}

mod wire_time {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::time_text(i64::try_from(*secs).unwrap_or(i64::MAX)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text)
            .map(|secs| secs as u64)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
