//! The rules of docs/architecture.md, checked on the source: which rooms may
//! import which, no import circle between the daemon's modules, and no
//! module over 800 lines outside tests. A change that breaks a rule fails
//! here, with the file and the import named.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn is_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap();
    name == "tests.rs" || name.ends_with("_tests.rs") || rel.contains("/tests/")
}

/// The code of a file without its `#[cfg(test)] mod tests { ... }` block
/// (always last in this code base) and without comment lines.
fn code_lines(text: &str) -> Vec<&str> {
    let end = text.find("#[cfg(test)]\nmod tests {").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect()
}

/// `crate::a::b` paths a file names, as `a` or `a::b` for `daemon`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let segs: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap()
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            match segs.as_slice() {
                ["daemon", sub, ..] => out.insert(format!("daemon::{sub}")),
                ["daemon"] => out.insert("daemon".to_string()),
                [top, ..] => out.insert(top.to_string()),
                [] => false,
            };
        }
    }
    out
}

/// The room a source file belongs to: `collector`, `daemon::<module>`, or a
/// shared top-level module (`wire`, `privacy`, `sys`, `safe_fs`).
fn room(rel: &str) -> String {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    match parts.as_slice() {
        ["daemon", "mod"] => "daemon".to_string(),
        ["daemon", module, ..] => format!("daemon::{module}"),
        [top, ..] => top.to_string(),
        [] => unreachable!(),
    }
}

#[test]
fn no_module_is_over_800_lines_outside_tests() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|(rel, _)| !is_test_file(rel))
        .filter_map(|(rel, text)| {
            let end = text.find("#[cfg(test)]\nmod tests {").unwrap_or(text.len());
            let n = text[..end].lines().count();
            (n > MAX_LINES).then(|| format!("src/{rel}: {n} lines"))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn shared_modules_import_neither_program_and_the_programs_not_each_other() {
    let shared = ["wire", "privacy", "sys", "safe_fs", "exit", "logging"];
    let mut broken = Vec::new();
    for (rel, text) in sources().iter().filter(|(rel, _)| !is_test_file(rel)) {
        let from = room(rel);
        for to in crate_paths(text) {
            let to_top = to.split("::").next().unwrap();
            let allowed = match from.split("::").next().unwrap() {
                // Below everything: only each other.
                r if shared.contains(&r) => shared.contains(&to_top),
                "collector" => to_top == "collector" || shared.contains(&to_top),
                "daemon" => to_top == "daemon" || shared.contains(&to_top),
                _ => true,
            };
            if !allowed {
                broken.push(format!("src/{rel} ({from}) imports crate::{to}"));
            }
        }
    }
    assert!(broken.is_empty(), "imports against the rules: {broken:#?}");
}

#[test]
fn the_daemons_modules_import_no_circle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources().iter().filter(|(rel, _)| !is_test_file(rel)) {
        let from = room(rel);
        if !from.starts_with("daemon::") {
            continue;
        }
        for to in crate_paths(text) {
            if to.starts_with("daemon::") && to != from {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge; the circle is printed.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut circle = path[i..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
    assert!(
        graph.contains_key("daemon::service"),
        "the scan found the daemon's imports"
    );
}
