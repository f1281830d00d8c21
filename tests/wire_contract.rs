//! Both ends of the wire contract agree, for every field in its table: a
//! payload the daemon builds, with every field it can send at the most the
//! contract allows, is accepted by the real collector and each value lands
//! unchanged in its column, on SQLite and PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use surveyd::daemon::payload::{build, FactValue, Facts, PayloadOptions};
use surveyd::privacy::{parse_id128, RawId};
use surveyd::wire::{self, IdScheme, JsonType};

/// Every field surveyd sends, at its limit: the longest text (two-byte
/// characters, so a cut in the wrong place would show) and the largest
/// count.
fn extreme_facts(machine_id: &str, guid: &str) -> Facts {
    let longest = "é".repeat(wire::MAX_TEXT_BYTES / 2);
    let values: BTreeMap<String, FactValue> = wire::SURVEYD_FIELD_NAMES
        .iter()
        .map(|name| {
            let value = match wire::field(name).unwrap().json_type {
                JsonType::String => FactValue::Text(longest.clone()),
                JsonType::Int => FactValue::Count(wire::MAX_COUNT),
            };
            (name.to_string(), value)
        })
        .collect();
    Facts {
        machine_id: Some(RawId::machine_id(machine_id).unwrap()),
        server_guid: Some(RawId::server_guid(guid).unwrap()),
        values,
    }
}

#[test]
fn every_field_surveyd_sends_is_stored_as_sent() {
    for_each_backend("every_field_surveyd_sends_is_stored_as_sent", |backend| {
        let c = Collector::start(&backend);
        let mut sent = Vec::new();
        for (scheme, mid) in [
            (IdScheme::App, "3d1219c7c4c5404aaa1f6d2a48adfda4"),
            (IdScheme::Sha256, "4e2320d8d5d6515bbb2f7e3b59beaeb5"),
        ] {
            let options = PayloadOptions {
                scheme,
                app_id: parse_id128("187f157428b74898a629521121fa9f49").unwrap(),
                bucket_counts: false,
                omit: BTreeSet::new(),
            };
            let payload = build(
                &extreme_facts(mid, "0A1B2C3D4E5F60718293A4B5C6D7E8F9"),
                &options,
            );
            let stats = payload.stats();
            assert_eq!(
                stats.keys().collect::<Vec<_>>(),
                wire::SURVEYD_FIELD_NAMES
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>(),
                "the daemon sends every field it can at the limit"
            );
            let body = String::from_utf8(payload.as_bytes().to_vec()).unwrap();
            let r = c.post(&body);
            assert_eq!(r.status, 204, "{}: {scheme:?}: {r:?}", backend.name());
            sent.push((scheme, stats));
        }
        let rows = c.rows();
        assert_eq!(rows.len(), sent.len(), "{}", backend.name());
        for (scheme, stats) in sent {
            let mid_column = wire::MACHINE_ID_HASH.column.unwrap();
            let row = rows
                .iter()
                .find(|row| row[mid_column] == stats[wire::MACHINE_ID_HASH.name]["value"])
                .unwrap_or_else(|| panic!("{}: no row for {scheme:?}", backend.name()));
            for (name, entry) in &stats {
                let field = wire::field(name).unwrap();
                if field.name == wire::ID_SCHEME.name {
                    assert_ne!(row["flags"].as_i64().unwrap() & scheme.flag(), 0);
                    continue;
                }
                let column = field
                    .column
                    .unwrap_or_else(|| panic!("{name} is sent but has no column"));
                assert_eq!(
                    row.get(column),
                    Some(&entry["value"]),
                    "{}: {name} sent but not stored as sent",
                    backend.name()
                );
            }
        }
        let (status, _) = c.stop();
        assert!(status.success());
    });
}
