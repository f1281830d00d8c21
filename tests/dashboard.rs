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

/// A seeded installed base: 2,000 installations over `days` days (90 in
/// the brief), arriving over the first 60, upgrading through three
/// versions, about one in ten leaving; every active one reports every
/// hour, except during a three-hour outage on day 70.
fn seeded_summary(last_day: i64, days: i64) -> Summary {
    let first_day = last_day - days + 1;
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
/// `least`: the data marks each chart must have at least.
fn check_rendered(url: &str, page_bytes: usize, shot_name: &str, least: [(&str, usize); 6]) {
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
    let least = BTreeMap::from(least);
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
    let summary = seeded_summary(20_424, 90);
    let page = dashboard::render(&summary, Range::Days30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.html");
    std::fs::write(&file, &page).unwrap();
    check_rendered(
        &format!("file://{}", file.display()),
        page.len(),
        "dashboard-seeded",
        // Three versions stacked; two bars a week; five OS releases,
        // three plugins; several user buckets; one line.
        [
            ("versions", 3),
            ("new-gone", 2 * 12),
            ("osrelease", 5),
            ("userplugin", 3),
            ("users", 5),
            ("reports", 1),
        ],
    );
}

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const SUMMARY_PATH: &str = "/api/stats/v1/summary.json";
const SEED_DAYS: i64 = 14;
const SEED_INSTALLATIONS: usize = 2000;
/// Installations of a version too rare to publish under its name.
const RARE: usize = 3;
const RARE_VERSION: &str = "7.2.6-rare";

/// The collector's clock, moved by rewriting libfaketime's timestamp file
/// (read again on every call: FAKETIME_NO_CACHE). The monotonic clock
/// stays real, so the collector's timers behave.
struct Clock {
    file: PathBuf,
}

impl Clock {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", FAKETIME.to_owned()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
    }

    fn set(&self, unix_secs: i64) {
        let t = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(unix_secs as u64),
        )
        .to_string();
        // libfaketime's absolute form: "YYYY-MM-DD hh:mm:ss".
        let text = format!("{} {}\n", &t[..10], &t[11..19]);
        let tmp = self.file.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }
}

/// What installation `i` reports on day `d` of the seed, if it reports.
fn seed_report(i: usize, d: i64) -> Option<String> {
    let joined = (i % 7) as i64;
    // Each reports on about two days of three once it has joined.
    if d < joined || (i as i64 * 7 + d) % 3 == 0 {
        return None;
    }
    let version = if i < RARE {
        RARE_VERSION
    } else if d < 3 + (i % 5) as i64 {
        "8.7.25"
    } else if d < 8 + (i % 6) as i64 {
        "8.7.30"
    } else {
        "9.0.2"
    };
    let os = [
        "Debian GNU/Linux 12 (bookworm)",
        "Ubuntu 22.04.4 LTS",
        "Ubuntu 24.04.1 LTS",
        "Rocky Linux 9.4 (Blue Onyx)",
        "openSUSE Leap 15.6",
    ][i % 5];
    let plugin = ["db", "ldap", "db", "ldap", "unix"][i % 5 * 7 % 5];
    let machine = common::sha256_hex(format!("machine {i}"));
    let guid = common::sha256_hex(format!("guid {i}"));
    let users = (1i64 << (i % 11)) + (i % 3) as i64;
    let mut body: serde_json::Value = serde_json::from_str(&common::surveyd_payload(
        "sha256", &machine, &guid, version, users,
    ))
    .unwrap();
    body["stats"]["osrelease"]["value"] = os.into();
    body["stats"]["userplugin"]["value"] = plugin.into();
    Some(body.to_string())
}

/// The address of the admin listener, from the collector's log, where it
/// follows the public one; waits (bounded) for the line.
fn admin_addr(collector: &common::Collector) -> std::net::SocketAddr {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&collector.output()).into_owned();
        if let Some(rest) = text.split("admin listener on ").nth(1) {
            return rest.split(": ").next().unwrap().parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no admin listener in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> common::Response {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    common::http_exchange(stream, "GET", path, headers, b"")
}

/// Seeds SEED_DAYS days of reports through the real endpoint, the clock
/// moved to each hour in turn; returns the first day.
fn seed(collector: &common::Collector, clock: &Clock, last_day: i64) -> i64 {
    let first = last_day - SEED_DAYS + 1;
    for d in 0..SEED_DAYS {
        let bodies: Vec<String> = (0..SEED_INSTALLATIONS)
            .filter_map(|i| seed_report(i, d))
            .collect();
        // Four reporting hours a day, busiest in the morning.
        for (hour, share) in bodies.chunks(bodies.len().div_ceil(4)).enumerate() {
            clock.set((first + d) * 86_400 + (8 + 2 * hour as i64) * 3600);
            std::thread::scope(|s| {
                for part in share.chunks(share.len().div_ceil(8)) {
                    s.spawn(move || {
                        for body in part {
                            let r = collector.post(body);
                            assert_eq!(
                                r.status,
                                200,
                                "{}{}",
                                r.body,
                                String::from_utf8_lossy(&collector.output())
                            );
                        }
                    });
                }
            });
        }
    }
    first
}

fn faketime_available() -> bool {
    if Path::new(FAKETIME).exists() {
        return true;
    }
    common::skip("no libfaketime (apt-get install faketime)");
    false
}

#[test]
fn real_collector_serves_the_dashboard_on_admin_only_and_a_folded_summary_publicly() {
    if !chromium_available() || !faketime_available() {
        return;
    }
    common::for_each_backend(
        "real_collector_serves_the_dashboard",
        serves_dashboard_and_summary,
    );
}

fn serves_dashboard_and_summary(backend: common::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock {
        file: dir.path().join("faketime"),
    };
    let last_day = 20_424; // 2025-12-02
    clock.set((last_day - SEED_DAYS + 1) * 86_400 + 3600);
    let collector = common::Collector::start_with(
        &backend,
        common::Options {
            extra: "[rate_limit]\nenabled = false\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            env: clock.env(),
            nofile: None,
        },
    );
    let first = seed(&collector, &clock, last_day);
    clock.set(last_day * 86_400 + 23 * 3600);
    let admin = admin_addr(&collector);

    // The public port: never the dashboard, the summary folded.
    assert_eq!(get(collector.addr, "/", &[]).status, 404);
    let public = get(collector.addr, SUMMARY_PATH, &[]);
    assert_eq!(public.status, 200, "{}", public.body);
    let summary: serde_json::Value = serde_json::from_str(&public.body).unwrap();
    assert!(
        !public.body.contains(RARE_VERSION),
        "a version of {RARE} published"
    );
    for (dimension, days) in summary["by"].as_object().unwrap() {
        for day in days.as_array().unwrap() {
            for (value, n) in day["groups"].as_object().unwrap() {
                assert!(
                    value == "other" || n.as_u64().unwrap() >= 10,
                    "{dimension} {value} = {n} published"
                );
            }
        }
    }
    let days: Vec<&str> = summary["daily"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["active"].as_u64() > Some(0))
        .map(|d| d["day"].as_str().unwrap())
        .collect();
    assert_eq!(days.len(), SEED_DAYS as usize, "{days:?}");
    assert_eq!(
        *days[0],
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(first as u64 * 86_400)
        )
        .to_string()[..10],
        "the first seeded day"
    );

    // export prints the same series.
    let out = common::outside_systemd(&mut Command::new(common::BIN))
        .arg("-c")
        .arg(&collector.config_path)
        .arg("export")
        .envs(clock.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["daily", "by", "users", "reports_per_hour"] {
        assert_eq!(
            exported[key], summary[key],
            "export and summary.json differ in {key}"
        );
    }

    // The admin listener: the whole page, unfolded, in a real browser.
    let page = get(admin, "/", &[]);
    // Timed for the report (not checked): the first request for a range
    // loads its summary from the rollup, the next finds it cached.
    let started = std::time::Instant::now();
    get(admin, "/?range=1y", &[]);
    let loaded = started.elapsed();
    let started = std::time::Instant::now();
    get(admin, "/?range=1y", &[]);
    eprintln!(
        "{}: GET / {} bytes; GET /?range=1y {loaded:?} with the rollup query, \
         {:?} cached (debug build)",
        backend.name(),
        page.body.len(),
        started.elapsed()
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(RARE_VERSION),
        "the admin sees every version"
    );
    assert!(page
        .headers
        .to_ascii_lowercase()
        .contains("content-security-policy: default-src 'none'"));
    let shot = match backend.name() {
        "sqlite" => "dashboard".to_owned(),
        other => format!("dashboard-{other}"),
    };
    check_rendered(
        &format!("http://{admin}/"),
        page.body.len(),
        &shot,
        [
            ("versions", 3),
            ("new-gone", 2 * 2),
            ("osrelease", 5),
            ("userplugin", 3),
            ("users", 5),
            ("reports", 1),
        ],
    );

    let (status, _) = collector.stop();
    assert!(status.success());
}

#[test]
fn admin_listener_with_a_token_refuses_requests_without_it() {
    let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
    let backend = common::Backend::sqlite();
    let collector = common::Collector::start_with(
        &backend,
        common::Options {
            extra: &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"),
            ..common::Options::default()
        },
    );
    let admin = admin_addr(&collector);
    for auth in [
        None,
        Some("Bearer f00dfeedf00dfeedf00dfeedf00dfeee".to_owned()),
    ] {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        for path in ["/", SUMMARY_PATH] {
            let r = get(admin, path, &headers);
            assert_eq!(r.status, 401, "{path} {auth:?}");
            assert!(r
                .headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"));
        }
    }
    let bearer = format!("Bearer {token}");
    let r = get(admin, "/", &[("Authorization", &bearer)]);
    assert_eq!(
        r.status,
        200,
        "{}{}",
        r.body,
        String::from_utf8_lossy(&collector.output())
    );
    // Reports are not taken on the admin listener.
    let stream = std::net::TcpStream::connect(admin).unwrap();
    let r = common::http_exchange(
        stream,
        "POST",
        "/api/stats/v1/submit",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 404);
    let (status, out) = collector.stop();
    assert!(status.success());
    assert!(
        !String::from_utf8_lossy(&out).contains(token),
        "the token was logged"
    );
}

#[test]
fn admin_listener_off_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let backend = common::Backend::sqlite();
    let config = common::write_config(dir.path(), &backend, "[admin]\nlisten = \"0.0.0.0:0\"\n");
    for args in [&["serve"][..], &["check-config"][..]] {
        let out = common::run_cli(&config, args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("admin.token"), "{}", out.stderr);
    }
}

#[test]
fn two_years_of_history_stay_under_the_page_budget() {
    let summary = seeded_summary(20_424, 730);
    let started = std::time::Instant::now();
    let page = dashboard::render(&summary, Range::All).unwrap();
    // A figure for the report, not a check: timing depends on the machine.
    eprintln!(
        "730 days: page {} bytes, rendered in {:?} (debug build)",
        page.len(),
        started.elapsed()
    );
    assert!(
        page.len() < PAGE_BUDGET,
        "{} bytes for two years, budget {PAGE_BUDGET}",
        page.len()
    );
}
