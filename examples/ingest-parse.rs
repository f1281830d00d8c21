//! The collector's parse-and-validate step alone, without HTTP or the
//! database: `parse_report` over the payload mix of
//! benches/collector-bench.lua (70 % surveyd app-v1 payloads, 30 %
//! tab-indented upstream ones with raw ids). Prints the best of ROUNDS
//! rounds in reports per second and nanoseconds per report, so a change to
//! the parser can be compared with its parent commit on one machine:
//!
//!   cargo run --release --example ingest-parse [ROUNDS] [REPORTS]

use std::hint::black_box;
use std::time::Instant;

use surveyd::collector::ingest::parse_report;

/// A fixed sequence, so every build parses the same bodies.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap())
            .collect()
    }
}

fn surveyd(r: &mut Lcg) -> String {
    let s = |name: &str, value: &str| {
        format!(r#""{name}":{{"desc":"","type":"string","value":"{value}"}}"#)
    };
    let i = |name: &str, value: u64| {
        format!(r#""{name}":{{"desc":"","mode":"gauge","type":"int","value":{value}}}"#)
    };
    let parts = [
        i("usercnt_active", r.below(5001)),
        i("usercnt_contact", r.below(501)),
        i("usercnt_equipment", r.below(21)),
        i("usercnt_na_user", r.below(51)),
        i("usercnt_nonactive", r.below(101)),
        i("usercnt_room", r.below(31)),
        s("attachment_storage", "files"),
        s("id_scheme", "app-v1"),
        s("machine_id_hash", &r.hex(32)),
        s("osrelease", "Debian GNU/Linux 12 (bookworm)"),
        s("program_name", "kopano-server"),
        s("program_version", &format!("10.0.{}", r.below(10))),
        s("server_guid_hash", &r.hex(32)),
        s("userplugin", "ldap"),
        s("utsname", "Linux x86_64 6.1.0-18-amd64"),
    ];
    format!(r#"{{"stats":{{{}}},"version":2}}"#, parts.join(","))
}

fn upstream(r: &mut Lcg) -> String {
    let up = |name: &str, desc: &str, value: &str| {
        format!("\t\t\"{name}\" : \n\t\t{{\n\t\t\t\"desc\" : \"{desc}\",\n\t\t\t\"type\" : \"string\",\n\t\t\t\"value\" : \"{value}\"\n\t\t}}")
    };
    let upi = |name: &str, desc: &str, value: u64| {
        format!("\t\t\"{name}\" : \n\t\t{{\n\t\t\t\"desc\" : \"{desc}\",\n\t\t\t\"mode\" : \"counter\",\n\t\t\t\"type\" : \"int\",\n\t\t\t\"value\" : {value}\n\t\t}}")
    };
    let parts = [
        up("machine_id", "", &r.hex(32)),
        up(
            "osrelease",
            "Pretty operating system name",
            "Debian GNU/Linux 10 (buster)",
        ),
        up("program_name", "Program name", "kopano-server"),
        up(
            "program_version",
            "Program version",
            &format!("8.7.{}", r.below(31)),
        ),
        up("server_guid", "Server GUID", &r.hex(32)),
        upi("usercnt_active", "Active users", r.below(5001)),
        upi("usercnt_nonactive", "Non-active users", r.below(101)),
        up("userplugin", "User plugin", "db"),
        up(
            "utsname",
            "Pretty platform name",
            "Linux x86_64 4.19.0-6-amd64",
        ),
    ];
    format!(
        "{{\n\t\"stats\" : \n\t{{\n{}\n\t}},\n\t\"version\" : 2\n}}",
        parts.join(",\n")
    )
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap());
    let rounds = args.next().unwrap_or(7);
    let reports = args.next().unwrap_or(200_000);
    let mut r = Lcg(7919);
    let bodies: Vec<Vec<u8>> = (0..10_000)
        .map(|k| {
            if k % 10 < 7 {
                surveyd(&mut r)
            } else {
                upstream(&mut r)
            }
            .into_bytes()
        })
        .collect();
    for body in &bodies {
        parse_report(body).expect("the benchmark's payloads are valid");
    }
    let best = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for body in bodies.iter().cycle().take(reports) {
                black_box(parse_report(black_box(body)).is_ok());
            }
            start.elapsed()
        })
        .min()
        .unwrap();
    let ns = best.as_nanos() as f64 / reports as f64;
    println!(
        "parse_report: {:.0} reports/s, {ns:.0} ns/report (best of {rounds} rounds of {reports})",
        1e9 / ns
    );
}
