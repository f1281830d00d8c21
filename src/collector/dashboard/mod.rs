//! The admin dashboard: one self-contained HTML page (no script, no
//! external resource of any kind) with the installed base drawn as SVG on
//! the server by [`charts`]. Every chart is a `<figure>` with a title, a
//! caption and its numbers as a table in `<details>`, so it reads without
//! images too. The page is made from a [`Summary`], the same model as the
//! published summary, but unfolded: the admin listener is the vendor's own.

pub mod charts;
pub mod serve;

use std::collections::BTreeMap;
use std::fmt::Write;

use plotters::style::RGBColor;

use super::summary::{bucket_bounds, day_text, time_text, Range, Summary, OTHER};
use charts::{ChartError, Series, OTHER_COLOR, PALETTE};

/// Versions shown by name in the stacked chart; the rest are "other".
pub const TOP_VERSIONS: usize = 8;
/// Values shown by name in the share charts.
const TOP_SHARES: usize = 8;
/// Longer names are cut in the charts (the tables have them whole).
const CHART_NAME_CHARS: usize = 32;
/// More points than this in the hourly line are averaged in bins: more
/// would not be visible in the width of a screen, only heavier.
const MAX_LINE_POINTS: usize = 2400;
/// Daily tables longer than this show every 7th day.
const MAX_DAILY_ROWS: usize = 92;

const STYLE: &str = r#"
:root{color-scheme:light;--ink:#222;--muted:#5b5b5b;--line:#ddd;--accent:#4e79a7}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Liberation Sans",sans-serif;color:var(--ink);background:#f6f6f4}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Liberation Sans",sans-serif}
header{padding:12px 20px;background:#fff;border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:8px 24px;align-items:baseline}
h1{font-size:20px;margin:0}
nav a{display:inline-block;padding:3px 10px;margin-right:4px;border:1px solid var(--line);border-radius:4px;color:var(--accent);text-decoration:none}
nav a[aria-current=page]{background:var(--accent);color:#fff;border-color:var(--accent)}
.facts{margin:0;color:var(--muted)}
.facts b{color:var(--ink)}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,560px),1fr));gap:16px;padding:16px 20px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 12px;min-width:0}
figure svg{display:block;width:100%;height:auto}
figcaption{font-weight:600;margin-bottom:4px}
figcaption span{display:block;font-weight:400;color:var(--muted);font-size:13px}
details{margin-top:6px;font-size:13px}
details div{overflow-x:auto;max-height:320px}
table{border-collapse:collapse}
th,td{padding:2px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
.empty{color:var(--muted);padding:40px 0;text-align:center}
"#;

/// The whole page for `summary`, which covers `range`.
pub fn render(summary: &Summary, range: Range) -> Result<String, ChartError> {
    let mut page = String::with_capacity(256 * 1024);
    let latest = summary.daily.last();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Installed base · surveyd-collector</title><style>{STYLE}</style></head><body>\
         <header><h1>Installed base</h1><nav aria-label=\"Range\">"
    );
    for r in Range::ALL {
        let current = if r == range {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            page,
            "<a href=\"?range={}\"{current}>{}</a>",
            r.name(),
            r.label()
        );
    }
    let _ = write!(
        page,
        "</nav><p class=\"facts\">{} to {}: <b>{}</b> installations active on the last day; \
         generated {}</p></header><main>",
        // "all" starts in 1970: name the first day with data instead.
        day_text(
            summary
                .daily
                .first()
                .map_or(summary.from_day, |d| d.day.max(summary.from_day))
        ),
        day_text(summary.to_day),
        latest.map_or(0, |d| d.active),
        time_text(summary.generated_at as i64)
    );
    let days: Vec<i64> = summary.daily.iter().map(|d| d.day).collect();
    let day_label = day_labeller(&days);

    versions_figure(&mut page, summary, &days, &*day_label)?;
    new_and_gone_figure(&mut page, summary)?;
    for (dimension, title, id) in [
        ("osrelease", "OS release", "osrelease"),
        ("userplugin", "User plugin", "userplugin"),
    ] {
        shares_figure(&mut page, summary, dimension, title, id)?;
    }
    users_figure(&mut page, summary)?;
    reports_figure(&mut page, summary)?;
    page.push_str("</main></body></html>\n");
    Ok(page)
}

/// Labels for day positions: month and day when the range is short
/// enough for the year to be obvious.
fn day_labeller(days: &[i64]) -> Box<dyn Fn(&i64) -> String> {
    let span = days.last().zip(days.first()).map_or(0, |(l, f)| l - f);
    if span <= 92 {
        Box::new(|d| day_text(*d)[5..].to_owned())
    } else {
        Box::new(|d| day_text(*d))
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn chart_name(name: &str) -> String {
    if name.chars().count() <= CHART_NAME_CHARS {
        name.to_owned()
    } else {
        let mut cut: String = name.chars().take(CHART_NAME_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// One figure: the chart made accessible (its `<title>` names it, it
/// scales with the column), a caption and the table.
fn figure(page: &mut String, id: &str, title: &str, note: &str, svg: Option<String>, table: &str) {
    let _ = write!(
        page,
        "<figure id=\"{id}\" aria-labelledby=\"{id}-caption\">\
         <figcaption id=\"{id}-caption\">{}<span>{}</span></figcaption>",
        escape(title),
        escape(note)
    );
    match svg {
        Some(svg) => page.push_str(&accessible_svg(&svg, id, title)),
        None => page.push_str("<p class=\"empty\">No data in this range yet.</p>"),
    }
    let _ = write!(
        page,
        "<details><summary>Data table</summary><div>{table}</div></details></figure>"
    );
}

/// plotters' document with its fixed width and height replaced by a
/// viewBox that CSS scales, and a title for screen readers.
fn accessible_svg(svg: &str, id: &str, title: &str) -> String {
    let body = svg
        .split_once('>')
        .map_or(svg, |(_, rest)| rest)
        .trim_start();
    format!(
        "<svg viewBox=\"0 0 {} {}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" \
         aria-labelledby=\"{id}-title\"><title id=\"{id}-title\">{}</title>{body}",
        charts::WIDTH,
        charts::HEIGHT,
        escape(title)
    )
}

fn table(head: &[String], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let tag = if i == 0 { "th scope=\"row\"" } else { "td" };
            let close = if i == 0 { "th" } else { "td" };
            let _ = write!(out, "<{tag}>{}</{close}>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Which rows of a daily series the table shows.
fn table_rows(n: usize) -> (usize, &'static str) {
    if n > MAX_DAILY_ROWS {
        (7, " (every 7th day)")
    } else {
        (1, "")
    }
}

/// The groups of `dimension` per day, aligned with `days` (missing days
/// are empty).
fn groups_by_day(summary: &Summary, dimension: &str, days: &[i64]) -> Vec<BTreeMap<String, u64>> {
    let by_day: BTreeMap<i64, &BTreeMap<String, u64>> = summary
        .by
        .get(dimension)
        .map(|v| v.iter().map(|d| (d.day, &d.groups)).collect())
        .unwrap_or_default();
    days.iter()
        .map(|d| by_day.get(d).map(|g| (*g).clone()).unwrap_or_default())
        .collect()
}

/// The `top` values with the most installations over all `per_day`, most
/// first; everything else is "other".
fn top_values(per_day: &[BTreeMap<String, u64>], top: usize) -> Vec<String> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for groups in per_day {
        for (value, n) in groups {
            if value != OTHER {
                *totals.entry(value).or_default() += n;
            }
        }
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(top)
        .map(|(v, _)| v.to_owned())
        .collect()
}

fn color(i: usize, name: &str) -> RGBColor {
    if name == OTHER {
        OTHER_COLOR
    } else {
        PALETTE[i % PALETTE.len()]
    }
}

fn versions_figure(
    page: &mut String,
    summary: &Summary,
    days: &[i64],
    day_label: &dyn Fn(&i64) -> String,
) -> Result<(), ChartError> {
    let per_day = groups_by_day(summary, "program_version", days);
    let top = top_values(&per_day, TOP_VERSIONS);
    let mut names: Vec<String> = top.clone();
    let others: Vec<u64> = per_day
        .iter()
        .map(|g| {
            g.iter()
                .filter(|(v, _)| !top.contains(v))
                .map(|(_, n)| n)
                .sum()
        })
        .collect();
    let with_other = others.iter().any(|&n| n > 0);
    if with_other {
        names.push(OTHER.to_owned());
    }
    let chart_names: Vec<String> = names.iter().map(|n| chart_name(n)).collect();
    let layers: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            name: &chart_names[i],
            color: color(i, name),
            values: if name == OTHER && i == top.len() {
                others.clone()
            } else {
                per_day
                    .iter()
                    .map(|g| g.get(name).copied().unwrap_or(0))
                    .collect()
            },
        })
        .collect();
    let svg = (!days.is_empty())
        .then(|| charts::stacked_days(days, &layers, day_label, "active installations"))
        .transpose()?;
    let (step, note) = table_rows(days.len());
    let mut head = vec!["day".to_owned()];
    head.extend(names.iter().cloned());
    head.push("total".to_owned());
    let rows = days.iter().enumerate().step_by(step).map(|(i, d)| {
        let mut row = vec![day_text(*d)];
        let values: Vec<u64> = layers.iter().map(|l| l.values[i]).collect();
        row.extend(values.iter().map(u64::to_string));
        row.push(values.iter().sum::<u64>().to_string());
        row
    });
    figure(
        page,
        "versions",
        "Active installations per day, by version",
        &format!(
            "The {TOP_VERSIONS} versions with the most installations in the range; \
             the rest as \"other\"{note}."
        ),
        svg,
        &table(&head, rows),
    );
    Ok(())
}

fn new_and_gone_figure(page: &mut String, summary: &Summary) -> Result<(), ChartError> {
    let mut weeks: Vec<(i64, u64, u64)> = Vec::new();
    if let Some(first) = summary.daily.first().map(|d| d.day) {
        for d in &summary.daily {
            let start = first + (d.day - first).div_euclid(7) * 7;
            match weeks.last_mut() {
                Some(w) if w.0 == start => {
                    w.1 += d.new;
                    w.2 += d.gone;
                }
                _ => weeks.push((start, d.new, d.gone)),
            }
        }
    }
    let labels: Vec<String> = weeks
        .iter()
        .map(|w| day_text(w.0)[5..].to_owned())
        .collect();
    let new = Series {
        name: "new",
        color: PALETTE[2],
        values: weeks.iter().map(|w| w.1).collect(),
    };
    let gone = Series {
        name: "gone",
        color: PALETTE[3],
        values: weeks.iter().map(|w| w.2).collect(),
    };
    let svg = (!weeks.is_empty())
        .then(|| charts::paired_bars(&labels, &new, &gone, "installations"))
        .transpose()?;
    let rows = weeks
        .iter()
        .map(|w| vec![day_text(w.0), w.1.to_string(), w.2.to_string()]);
    figure(
        page,
        "new-gone",
        "New and gone installations per week",
        "Weeks start on the first day of the range; gone: not seen for the retention window.",
        svg,
        &table(&["week from".into(), "new".into(), "gone".into()], rows),
    );
    Ok(())
}

fn shares_figure(
    page: &mut String,
    summary: &Summary,
    dimension: &str,
    title: &str,
    id: &str,
) -> Result<(), ChartError> {
    let latest = summary
        .by
        .get(dimension)
        .and_then(|days| days.iter().rev().find(|d| !d.groups.is_empty()));
    let groups = latest.map(|d| d.groups.clone()).unwrap_or_default();
    let total: u64 = groups.values().sum();
    let top = top_values(std::slice::from_ref(&groups), TOP_SHARES);
    let mut items: Vec<(String, u64)> = top
        .iter()
        .map(|v| (v.clone(), groups.get(v).copied().unwrap_or(0)))
        .collect();
    let rest: u64 = total - items.iter().map(|i| i.1).sum::<u64>();
    if rest > 0 {
        items.push((OTHER.to_owned(), rest));
    }
    let share = |n: u64| n as f64 * 100.0 / total.max(1) as f64;
    let bars: Vec<(String, f64, RGBColor)> = items
        .iter()
        .enumerate()
        .map(|(i, (name, n))| (chart_name(name), share(*n), color(i, name)))
        .collect();
    let svg = (total > 0)
        .then(|| charts::share_bars(&bars, "share of active installations"))
        .transpose()?;
    let rows = items
        .iter()
        .map(|(name, n)| vec![name.clone(), n.to_string(), format!("{:.1} %", share(*n))]);
    let note = match latest {
        Some(d) => format!(
            "Share of the {total} installations active on {}.",
            day_text(d.day)
        ),
        None => "Share of active installations on the last day.".to_owned(),
    };
    figure(
        page,
        id,
        &format!("{title} (last day)"),
        &note,
        svg,
        &table(
            &[title.to_owned(), "installations".into(), "share".into()],
            rows,
        ),
    );
    Ok(())
}

/// "0", "4–7", "1k–2k": the users a bucket holds, compact enough for an
/// axis (k: 1024).
fn bucket_label(k: usize) -> String {
    match bucket_bounds(k) {
        (from, Some(below)) if below == from + 1 => short(from),
        (from, Some(below)) => format!("{}–{}", short(from), short(below - 1)),
        (from, None) => format!("{}+", short(from)),
    }
}

/// A count for an axis: 512, 1k, 2M (k: 1024).
fn short(v: u64) -> String {
    if v < 1000 {
        v.to_string()
    } else if v < 1 << 20 {
        format!("{}k", (v + 512) >> 10)
    } else {
        format!("{}M", (v + (1 << 19)) >> 20)
    }
}

/// The bucket the `p`-th percentile installation is in.
fn percentile_bucket(histogram: &[u64], p: u64) -> Option<usize> {
    let total: u64 = histogram.iter().sum();
    let mut seen = 0;
    histogram.iter().position(|&n| {
        seen += n;
        total > 0 && seen * 100 >= p * total
    })
}

fn users_figure(page: &mut String, summary: &Summary) -> Result<(), ChartError> {
    let latest = summary
        .users
        .iter()
        .rev()
        .find(|u| u.histogram.iter().any(|&n| n > 0));
    let histogram = latest.map(|u| u.histogram.clone()).unwrap_or_default();
    let first = histogram.iter().position(|&n| n > 0);
    let last = histogram.iter().rposition(|&n| n > 0);
    let (p50, p95) = (
        percentile_bucket(&histogram, 50),
        percentile_bucket(&histogram, 95),
    );
    let mut svg = None;
    let mut rows = Vec::new();
    let mut note = "Installations by how many active users they reported.".to_owned();
    if let (Some(first), Some(last), Some(u)) = (first, last, latest) {
        let buckets: Vec<(String, u64)> = (first..=last)
            .map(|k| (short(bucket_bounds(k).0), histogram[k]))
            .collect();
        let marks = (
            format!("p50: {}", bucket_label(p50.unwrap_or(first))),
            format!("p95: {}", bucket_label(p95.unwrap_or(first))),
        );
        svg = Some(charts::user_histogram(
            &buckets,
            p50.map(|k| k - first),
            p95.map(|k| k - first),
            (&marks.0, &marks.1),
        )?);
        let total: u64 = histogram.iter().sum();
        note = format!(
            "{total} installations on {} reporting {} active users; the median and the \
             95th percentile lie in the marked buckets ({}, {}).",
            day_text(u.day),
            u.sum,
            marks.0,
            marks.1
        );
        rows = (first..=last)
            .map(|k| {
                let mark = match (Some(k) == p50, Some(k) == p95) {
                    (true, true) => "p50, p95",
                    (true, false) => "p50",
                    (false, true) => "p95",
                    (false, false) => "",
                };
                vec![bucket_label(k), histogram[k].to_string(), mark.to_owned()]
            })
            .collect();
    }
    figure(
        page,
        "users",
        "Active users per installation (last day)",
        &note,
        svg,
        &table(
            &[
                "active users".into(),
                "installations".into(),
                "percentile".into(),
            ],
            rows,
        ),
    );
    Ok(())
}

fn reports_figure(page: &mut String, summary: &Summary) -> Result<(), ChartError> {
    let counts: BTreeMap<i64, u64> = summary
        .reports_per_hour
        .iter()
        .map(|h| (h.hour, h.reports))
        .collect();
    // Hours without a row had no report: the gaps are what this chart is
    // for, so they are drawn as zero.
    let (first, last) = match (counts.keys().next(), counts.keys().next_back()) {
        (Some(&f), Some(&l)) => (
            (summary.from_day * 24).max(f),
            (summary.to_day * 24 + 23).min(l),
        ),
        _ => (0, -1),
    };
    let hours: Vec<(i64, u64)> = (first..=last)
        .map(|h| (h, counts.get(&h).copied().unwrap_or(0)))
        .collect();
    let bin = hours.len().div_ceil(MAX_LINE_POINTS).max(1);
    let points: Vec<(i64, f64)> = hours
        .chunks(bin)
        .map(|c| {
            let sum: u64 = c.iter().map(|h| h.1).sum();
            (c[0].0, sum as f64 / c.len() as f64)
        })
        .collect();
    let span = last - first;
    let label = move |h: &i64| {
        let t = time_text(h * 3600);
        if span <= 72 {
            format!("{} {}h", &t[5..10], &t[11..13])
        } else if span <= 92 * 24 {
            t[5..10].to_owned()
        } else {
            t[..10].to_owned()
        }
    };
    let svg = (!points.is_empty())
        .then(|| charts::hourly_line(&points, &label, "reports per hour"))
        .transpose()?;
    let mut per_day: BTreeMap<i64, u64> = BTreeMap::new();
    for (h, n) in &hours {
        *per_day.entry(h.div_euclid(24)).or_default() += n;
    }
    let rows = per_day
        .iter()
        .map(|(d, n)| vec![day_text(*d), n.to_string()]);
    let note = if bin > 1 {
        format!("Averaged over {bin}-hour bins; hours without reports count as zero.")
    } else {
        "Hours without reports count as zero: a dip is an outage on one side.".to_owned()
    };
    figure(
        page,
        "reports",
        "Reports received per hour",
        &note,
        svg,
        &table(&["day".into(), "reports".into()], rows),
    );
    Ok(())
}

#[cfg(test)]
mod tests;
