use std::collections::BTreeMap;

use super::*;
use crate::collector::summary::{DayGroups, DayTotals, DayUsers, HourCount, BUCKETS};

const FIGURES: [&str; 6] = [
    "versions",
    "new-gone",
    "osrelease",
    "userplugin",
    "users",
    "reports",
];

/// Twelve versions over ten days, one of them named like markup.
fn summary() -> Summary {
    let mut s = Summary {
        generated_at: 1_764_633_600,
        from_day: 20_415,
        to_day: 20_424,
        min_group: 10,
        ..Summary::default()
    };
    for day in s.from_day..=s.to_day {
        let versions: BTreeMap<String, u64> = (0..12)
            .map(|v| (format!("8.{v}.0"), 5 + v as u64))
            .chain([("<script>alert(1)</script>".to_owned(), 3)])
            .collect();
        let active = versions.values().sum();
        s.daily.push(DayTotals {
            day,
            active,
            new: 2,
            gone: 1,
            reports: active * 24,
        });
        s.by.entry("program_version".into())
            .or_default()
            .push(DayGroups {
                day,
                groups: versions,
            });
        for dim in ["osrelease", "userplugin"] {
            s.by.entry(dim.into()).or_default().push(DayGroups {
                day,
                groups: [("Debian GNU/Linux 12 (bookworm)".to_owned(), active - 20)]
                    .into_iter()
                    .chain([("Ubuntu 24.04 LTS".to_owned(), 20)])
                    .collect(),
            });
        }
        let mut histogram = vec![0; BUCKETS];
        histogram[3] = 40;
        histogram[5] = active - 45;
        histogram[9] = 5;
        s.users.push(DayUsers {
            day,
            sum: 3000,
            histogram,
        });
        for h in 0..24 {
            // Hour 5 of the third day had no reports: an outage.
            if !(day == s.from_day + 2 && h == 5) {
                s.reports_per_hour.push(HourCount {
                    hour: day * 24 + h,
                    reports: active,
                });
            }
        }
    }
    s
}

fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<figure id=\"{id}\""))
        .unwrap_or_else(|| panic!("no figure {id}"));
    let end = page[start..].find("</figure>").unwrap() + start;
    &page[start..end]
}

#[test]
fn every_chart_is_an_accessible_scalable_svg_with_a_table() {
    let page = render(&summary(), Range::Days30).unwrap();
    for id in FIGURES {
        let fig = section(&page, id);
        assert!(fig.contains("<figcaption"), "{id}");
        assert!(
            fig.contains(&format!(
                "<svg viewBox=\"0 0 {} {}\"",
                charts::WIDTH,
                charts::HEIGHT
            )),
            "{id}"
        );
        assert!(
            fig.contains("role=\"img\"") && fig.contains("<title"),
            "{id}"
        );
        assert!(
            !fig.contains("<svg width"),
            "{id}: fixed size left on the svg"
        );
        assert!(
            fig.contains("<details><summary>Data table</summary>"),
            "{id}"
        );
        assert!(fig.contains("<td>"), "{id}: empty table");
    }
}

#[test]
fn reported_names_are_escaped_everywhere() {
    let page = render(&summary(), Range::Days30).unwrap();
    assert!(
        !page.contains("<script"),
        "markup from a report reached the page"
    );
}

#[test]
fn versions_beyond_the_top_are_other_and_the_table_keeps_totals() {
    let page = render(&summary(), Range::Days30).unwrap();
    let fig = section(&page, "versions");
    // The 8 largest by name, everything else in "other".
    for v in 4..12 {
        assert!(
            fig.contains(&format!("<th scope=\"col\">8.{v}.0</th>")),
            "8.{v}.0"
        );
    }
    assert!(!fig.contains("<th scope=\"col\">8.3.0</th>"));
    assert!(fig.contains("<th scope=\"col\">other</th>"));
    let total: u64 = summary().daily[0].active;
    assert!(fig.contains(&format!("<td>{total}</td></tr>")), "{total}");
}

#[test]
fn the_page_loads_nothing_and_runs_nothing() {
    let page = render(&summary(), Range::Year).unwrap();
    for banned in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=",
    ] {
        assert!(!page.contains(banned), "{banned}");
    }
    let without_xmlns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_xmlns.contains("http://") && !without_xmlns.contains("https://"));
    assert!(page.contains("<a href=\"?range=1y\" aria-current=\"page\">"));
}

#[test]
fn an_outage_hour_is_drawn_as_zero() {
    let page = render(&summary(), Range::Days30).unwrap();
    let fig = section(&page, "reports");
    let s = summary();
    let full = s.daily[0].active * 24;
    let short = full - s.daily[0].active;
    assert!(
        fig.contains(&format!("<td>{short}</td>")),
        "the day with the gap"
    );
    assert!(fig.contains(&format!("<td>{full}</td>")));
}

#[test]
fn percentile_buckets_are_marked() {
    let page = render(&summary(), Range::Days30).unwrap();
    let fig = section(&page, "users");
    // 40 in 4–7, 95 in 16–31, 5 in 256–511 of 140: both marks in 16–31.
    assert!(fig.contains("<th scope=\"row\">16–31</th><td>"), "{fig}");
    assert!(fig.contains("<td>p50, p95</td>"));
}

#[test]
fn an_empty_summary_renders_a_page_without_charts() {
    let s = Summary {
        generated_at: 1_764_633_600,
        from_day: 20_395,
        to_day: 20_424,
        ..Summary::default()
    };
    let page = render(&s, Range::Days30).unwrap();
    for id in FIGURES {
        assert!(
            section(&page, id).contains("No data in this range yet."),
            "{id}"
        );
    }
}
