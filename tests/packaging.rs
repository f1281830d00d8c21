//! The package test (packaging/test.sh): builds the .deb and .rpm packages,
//! runs lintian and rpm checks, and proves the packages in a booted Debian
//! 12 container (install, report, reload, upgrade, purge, exposure).
//!
//! It takes minutes and needs root, so it runs when CI=true (where it must
//! run) or when SURVEYD_TEST_PACKAGES=1, and says SKIP otherwise. The
//! checks of the package sources against the program run always.

mod common;

use std::process::Command;

use surveyd::wire::{self, Sender};

#[test]
fn packages_build_pass_lintian_and_work_in_a_booted_debian() {
    let wanted = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("SURVEYD_TEST_PACKAGES").as_deref() == Ok("1");
    if !wanted {
        eprintln!(
            "SKIP: the package test takes minutes; set SURVEYD_TEST_PACKAGES=1 to run it \
             (CI runs it)"
        );
        return;
    }
    if !common::is_root() {
        return common::skip("the package test needs root (debootstrap, systemd-nspawn)");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/test.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "packaging/test.sh failed: {stderr}");
    assert!(stdout.contains("lintian: 0 errors, 0 warnings"));
}

/// The debconf question is where an admin decides, so it must name every
/// fact an upload can carry: a field added to the wire contract without
/// being added to the question's text fails here.
#[test]
fn the_debconf_question_names_every_fact_surveyd_can_send() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/debian/surveyd/templates"
    );
    let templates = std::fs::read_to_string(path).unwrap();
    assert!(templates.contains("Template: surveyd/upload_consent\nType: boolean\nDefault: false\n"));
    let words: Vec<&str> = templates
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let missing: Vec<&str> = wire::FIELDS
        .iter()
        .filter(|field| field.sender != Sender::Upstream)
        .map(|field| field.name)
        .filter(|name| !words.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "{path} does not name {missing:?}, which surveyd sends"
    );
    for pointer in ["`surveyd preview`", "`surveyd consent`", "${url}"] {
        assert!(templates.contains(pointer), "{path} lacks {pointer}");
    }
}
