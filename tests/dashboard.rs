//! The dashboard in a real browser (Debian's headless Chromium): the page
//! for a seeded installed base renders without console errors and with
//! JavaScript disabled, every chart is drawn with data, the page stays
//! under its weight budget, and screenshots are kept as test artifacts
//! (target/test-artifacts/dashboard*.png).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use surveyd::collector::dashboard::{self, charts};
use surveyd::collector::summary::{
    bucket_of, DayGroups, DayTotals, DayUsers, HourCount, Range, Summary, BUCKETS,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const PAGE_BUDGET: usize = 300 * 1024;
const FIGURES: [&str; 6] = [
    "versions",
    "new-gone",
    "osrelease",
    "userplugin",
    "users",
    "reports",
];

/// A seeded installed base: 2,000 installations over 90 days, arriving
/// over the first 60, upgrading through three versions, about one in ten
/// leaving; every active one reports every hour, except during a
/// three-hour outage on day 70.
fn seeded_summary(last_day: i64) -> Summary {
    const DAYS: i64 = 90;
    let first_day = last_day - DAYS + 1;
    let mut rng = StdRng::seed_from_u64(12);
    let os = [
        ("Debian GNU/Linux 12 (bookworm)", 45),
        ("Ubuntu 22.04.4 LTS", 25),
        ("Ubuntu 24.04.1 LTS", 15),
        ("Rocky Linux 9.4 (Blue Onyx)", 10),
        ("openSUSE Leap 15.6", 5),
    ];
    let plugins = [("db", 60), ("ldap", 35), ("unix", 5)];
    let pick = |rng: &mut StdRng, table: &[(&'static str, u32)]| {
        let mut roll = rng.gen_range(0..100);
        for &(name, weight) in table {
            if roll < weight {
                return name;
            }
            roll -= weight;
        }
        table[0].0
    };
    struct Installation {
        from: i64,
        until: i64,
        upgrades: [i64; 2],
        os: &'static str,
        plugin: &'static str,
        users: u64,
    }
    let installations: Vec<Installation> = (0..2000)
        .map(|_| {
            let from = first_day + rng.gen_range(0..60);
            let until = if rng.gen_ratio(1, 10) {
                from + rng.gen_range(5..30)
            } else {
                i64::MAX
            };
            Installation {
                from,
                until,
                upgrades: [
                    first_day + rng.gen_range(20..50),
                    first_day + rng.gen_range(55..120),
                ],
                os: pick(&mut rng, &os),
                plugin: pick(&mut rng, &plugins),
                users: 1 << rng.gen_range(0..12) | rng.gen_range(0..4),
            }
        })
        .collect();

    let mut s = Summary {
        generated_at: (last_day * 86_400 + 3600) as u64,
        from_day: first_day,
        to_day: last_day,
        min_group: 10,
        ..Summary::default()
    };
    for day in first_day..=last_day {
        let active: Vec<&Installation> = installations
            .iter()
            .filter(|i| i.from <= day && day < i.until)
            .collect();
        let mut groups: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
        let mut histogram = vec![0; BUCKETS];
        let mut sum = 0;
        for i in &active {
            let version = match i.upgrades.iter().filter(|&&u| u <= day).count() {
                0 => "8.7.25",
                1 => "8.7.30",
                _ => "9.0.2",
            };
            for (dim, value) in [
                ("program_name", "kopano-server"),
                ("program_version", version),
                ("osrelease", i.os),
                ("userplugin", i.plugin),
                ("id_scheme", "app-v1"),
            ] {
                *groups
                    .entry(dim)
                    .or_default()
                    .entry(value.to_owned())
                    .or_default() += 1;
            }
            histogram[bucket_of(i.users)] += 1;
            sum += i.users;
        }
        for (dim, groups) in groups {
            s.by.entry(dim.to_owned())
                .or_default()
                .push(DayGroups { day, groups });
        }
        let n = active.len() as u64;
        let outage = |h: i64| day == first_day + 70 && (9..12).contains(&h);
        let hours: Vec<HourCount> = (0..24)
            .filter(|&h| !outage(h))
            .map(|h| HourCount {
                hour: day * 24 + h,
                reports: n,
            })
            .collect();
        s.daily.push(DayTotals {
            day,
            active: n,
            new: installations.iter().filter(|i| i.from == day).count() as u64,
            gone: installations.iter().filter(|i| i.until == day).count() as u64,
            reports: hours.iter().map(|h| h.reports).sum(),
        });
        s.reports_per_hour.extend(hours);
        s.users.push(DayUsers {
            day,
            sum,
            histogram,
        });
    }
    s
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one headless Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs Chromium on `url` with `action` (--dump-dom, --screenshot=...) in
/// a profile of its own; bounded in time, and its whole process group (the
/// one it was started in) is ended after it. JavaScript stays on: headless
/// Chromium needs it itself to dump the DOM or take a screenshot; the
/// page has none (asserted on the DOM, and the admin listener's
/// Content-Security-Policy forbids any).
fn chromium(url: &str, size: (u32, u32), action: &str) -> Run {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(action)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status =
        common::exit_within_patience(&mut child, || std::thread::sleep(Duration::from_millis(50)));
    // Chromium's helpers live in the group it leads; none may outlive it.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    let run = Run {
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium {action} {url}: {status:?}\n{}",
        run.stderr
    );
    run
}

fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    common::skip("no /usr/bin/chromium (apt-get install chromium)");
    false
}

/// Console messages Chromium logged for the page: errors a page author
/// would see in the developer tools.
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect()
}

/// The `<svg>` of figure `id` in the dumped DOM.
fn figure_svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<figure id=\"{id}\""))
        .unwrap_or_else(|| panic!("figure {id} missing from the rendered page"));
    let fig = &dom[start..];
    let fig = &fig[..fig.find("</figure>").unwrap()];
    let svg_start = fig
        .find("<svg")
        .unwrap_or_else(|| panic!("figure {id} has no svg"));
    let svg = &fig[svg_start..];
    &svg[..svg.find("</svg>").expect("svg closed")]
}

/// Shapes drawn in one of the series colours: the data, not the frame.
fn data_marks(svg: &str) -> usize {
    let colours: Vec<String> = charts::PALETTE
        .iter()
        .chain([&charts::OTHER_COLOR])
        .map(|c| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2))
        .collect();
    svg.split('<')
        .filter(|el| {
            ["rect ", "polygon ", "polyline ", "path "]
                .iter()
                .any(|t| el.starts_with(t))
        })
        .filter(|el| {
            let el = el.to_ascii_uppercase();
            colours.iter().any(|c| el.contains(c.as_str()))
        })
        .count()
}

/// Everything the browser must show for a page of the seeded base.
fn check_rendered(url: &str, page_bytes: usize, shot_name: &str) {
    assert!(
        page_bytes < PAGE_BUDGET,
        "page weighs {page_bytes} bytes, budget {PAGE_BUDGET}"
    );
    let run = chromium(url, (1280, 800), "--dump-dom");
    let errors = console_errors(&run.stderr);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let dom = run.stdout;
    assert!(!dom.contains("<script"), "the page carries a script");
    let mut marks = BTreeMap::new();
    for id in FIGURES {
        marks.insert(id, data_marks(figure_svg(&dom, id)));
    }
    // Three versions stacked; two bars a week; five OS releases, three
    // plugins; several user buckets; one line.
    let least = BTreeMap::from([
        ("versions", 3),
        ("new-gone", 2 * 12),
        ("osrelease", 5),
        ("userplugin", 3),
        ("users", 5),
        ("reports", 1),
    ]);
    for (id, n) in &marks {
        assert!(
            *n >= least[id],
            "chart {id} has {n} data marks, expected at least {}: {marks:?}",
            least[id]
        );
    }

    let dir = artifacts();
    for (name, size) in [
        (shot_name.to_owned(), (1280, 800)),
        (format!("{shot_name}-full"), (1280, 2000)),
        (format!("{shot_name}-phone"), (390, 844)),
    ] {
        let png = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&png);
        let run = chromium(url, size, &format!("--screenshot={}", png.display()));
        let errors = console_errors(&run.stderr);
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        let bytes = std::fs::read(&png).expect("screenshot written");
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
    }
}

#[test]
fn seeded_page_renders_in_chromium_with_every_chart_and_no_errors() {
    if !chromium_available() {
        return;
    }
    let summary = seeded_summary(20_424);
    let page = dashboard::render(&summary, Range::Days30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.html");
    std::fs::write(&file, &page).unwrap();
    check_rendered(
        &format!("file://{}", file.display()),
        page.len(),
        "dashboard-seeded",
    );
}
