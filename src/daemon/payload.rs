//! The report payload: upstream kopano-server's version-2 JSON, the fields
//! surveyd sends (typed and limited by [`crate::wire`]), and the canonical
//! bytes (sorted keys, no whitespace) that are audited and sent. A value
//! the collector would refuse is fitted or left out here, with a warning,
//! before anything is audited: a report is never sent to be refused on
//! every retry.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use tracing::warn;

use crate::daemon::settings::Settings;
use crate::privacy::{bucket_count, IdScheme, RawId};
use crate::wire::{self, JsonType, Sender};

/// How a field is typed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Count,
}

/// The wire contract's entry for a field surveyd sends.
fn sendable(name: &str) -> Option<&'static wire::Field> {
    wire::field(name).filter(|f| f.sender != Sender::Upstream)
}

/// The type and the human description upstream's collector shows for each
/// field surveyd sends.
pub fn field_spec(name: &str) -> Option<(FieldType, &'static str)> {
    let field = sendable(name)?;
    let kind = match field.json_type {
        JsonType::String => FieldType::Text,
        JsonType::Int => FieldType::Count,
    };
    Some((kind, field.desc))
}

/// A text value as the collector will accept it, or `None` when it cannot
/// be made acceptable; `Some(Err)` says why the value had to change.
fn fit<'a>(field: &wire::Field, value: &'a str) -> Option<(Cow<'a, str>, Option<wire::Violation>)> {
    let fitted = field.fit_text(value)?;
    let why = field.check_text(value).err();
    Some((fitted, why))
}

/// `check-config`'s warnings about static facts (`surveyclient_program_*`)
/// the collector would refuse as they are: each names the key, the rule and
/// what is sent instead. A configured server GUID is hashed before sending,
/// so it always fits.
pub fn static_fact_warnings(settings: &Settings) -> Vec<String> {
    [
        (
            "surveyclient_program_name",
            "program_name",
            &settings.program_name,
        ),
        (
            "surveyclient_program_version",
            "program_version",
            &settings.program_version,
        ),
    ]
    .into_iter()
    .filter_map(|(key, name, value)| {
        let field = sendable(name)?;
        let value = value.as_deref()?;
        match fit(field, value) {
            Some((_, None)) => None,
            Some((fitted, Some(why))) => Some(format!(
                "{key}: the value {why}; reports carry it fitted to the wire limits \
                 ({} bytes, controls replaced by spaces, bidirectional formatting removed)",
                fitted.len()
            )),
            None => Some(format!(
                "{key}: the value cannot be sent; {name} is left out"
            )),
        }
    })
    .collect()
}

/// One collected fact, before privacy rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactValue {
    Text(String),
    Count(u64),
}

/// Everything collected for one report. Identifiers stay raw here and are
/// hashed only by [`build`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub machine_id: Option<RawId>,
    pub server_guid: Option<RawId>,
    /// Plain fields by wire name (`program_name`, `usercnt_active`, ...).
    pub values: BTreeMap<String, FactValue>,
}

/// The privacy choices that shape a payload.
#[derive(Debug, Clone)]
pub struct PayloadOptions {
    pub scheme: IdScheme,
    pub app_id: [u8; 16],
    pub bucket_counts: bool,
    pub omit: BTreeSet<String>,
}

/// A finished report: the exact bytes that are audited and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The field values, for display.
    pub fn stats(&self) -> Map<String, Value> {
        let value: Value =
            serde_json::from_slice(&self.bytes).expect("a payload is always valid JSON");
        match value.get("stats") {
            Some(Value::Object(stats)) => stats.clone(),
            _ => Map::new(),
        }
    }
}

/// Builds the payload: hashes identifiers, applies buckets and `omit`, and
/// serialises canonically (serde_json's map is ordered by key and `to_vec`
/// writes no whitespace), so equal facts always give equal bytes.
pub fn build(facts: &Facts, options: &PayloadOptions) -> Payload {
    let mut stats = Map::new();
    let mut put = |name: &str, value: FactValue| {
        if options.omit.contains(name) {
            return;
        }
        let Some(field) = sendable(name) else {
            return;
        };
        let entry = match (field.json_type, value) {
            (JsonType::String, FactValue::Text(text)) => match fit(field, &text) {
                Some((fitted, why)) => {
                    if let Some(why) = why {
                        warn!(
                            "{name}: the value {why}; sent fitted to the collector's limits \
                             ({} bytes, controls replaced by spaces, bidirectional formatting removed)",
                            fitted.len()
                        );
                    }
                    json!({"desc": field.desc, "type": "string", "value": fitted})
                }
                None => {
                    warn!(
                        "{name}: {}; left out of the report",
                        wire_reason(field, &text)
                    );
                    return;
                }
            },
            (JsonType::Int, FactValue::Count(n)) => {
                let n = if options.bucket_counts {
                    bucket_count(n)
                } else {
                    n
                };
                if let Err(why) = field.check_count(n) {
                    warn!("{name}: {why}; left out of the report");
                    return;
                }
                json!({"desc": field.desc, "type": "int", "mode": field.mode, "value": n})
            }
            // A source that gave text for a count (or the reverse) was
            // already rejected when it was read; never send a mistyped field.
            _ => return,
        };
        stats.insert(name.to_string(), entry);
    };

    let mut hashed_any = false;
    if let Some(id) = &facts.machine_id {
        put(
            wire::MACHINE_ID_HASH.name,
            FactValue::Text(id.hash(options.scheme, &options.app_id)),
        );
        hashed_any = true;
    }
    if let Some(guid) = &facts.server_guid {
        put(
            wire::SERVER_GUID_HASH.name,
            FactValue::Text(guid.hash(options.scheme, &options.app_id)),
        );
        hashed_any = true;
    }
    if hashed_any {
        put(
            wire::ID_SCHEME.name,
            FactValue::Text(options.scheme.wire_name().to_string()),
        );
    }
    // The identifier fields come only from the hashes above.
    let derived = [
        wire::MACHINE_ID_HASH,
        wire::SERVER_GUID_HASH,
        wire::ID_SCHEME,
    ];
    for (name, value) in &facts.values {
        if !derived.iter().any(|f| f.name == name) {
            put(name, value.clone());
        }
    }

    let document = json!({"version": wire::PAYLOAD_VERSION, "stats": Value::Object(stats)});
    Payload {
        bytes: serde_json::to_vec(&document).expect("JSON values always serialise"),
    }
}

/// Why a value that could not be fitted breaks its field's rule.
fn wire_reason(field: &wire::Field, value: &str) -> String {
    match field.check_text(value) {
        Err(why) => why.to_string(),
        Ok(()) => "the value does not fit".into(),
    }
}

/// Re-serialises a JSON document canonically: what `audit verify` and the
/// tests use to compare a logged body with the bytes sent.
pub fn canonical_bytes(document: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let value: Value = serde_json::from_slice(document)?;
    serde_json::to_vec(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> PayloadOptions {
        PayloadOptions {
            scheme: IdScheme::App,
            app_id: crate::privacy::parse_id128("187f157428b74898a629521121fa9f49").unwrap(),
            bucket_counts: false,
            omit: BTreeSet::new(),
        }
    }

    fn facts() -> Facts {
        let mut values = BTreeMap::new();
        values.insert(
            "program_name".into(),
            FactValue::Text("kopano-server".into()),
        );
        values.insert("usercnt_active".into(), FactValue::Count(123));
        values.insert(
            "utsname".into(),
            FactValue::Text("Linux x86_64 6.1.0".into()),
        );
        Facts {
            machine_id: Some(RawId::machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap()),
            server_guid: Some(RawId::server_guid("0A1B2C3D4E5F60718293A4B5C6D7E8F9").unwrap()),
            values,
        }
    }

    #[test]
    fn payload_is_version_2_canonical_and_without_raw_ids() {
        let payload = build(&facts(), &options());
        let text = std::str::from_utf8(payload.as_bytes()).unwrap();
        assert!(text.starts_with(r#"{"stats":{"id_scheme":{"desc":"How the IDs were hashed","type":"string","value":"app-v1"},"machine_id_hash":"#));
        assert!(text.ends_with(r#""version":2}"#));
        assert!(!text.contains("3d1219c7c4c5404aaa1f6d2a48adfda4"));
        assert!(!text
            .to_ascii_uppercase()
            .contains("0A1B2C3D4E5F60718293A4B5C6D7E8F9"));
        assert_eq!(
            canonical_bytes(payload.as_bytes()).unwrap(),
            payload.as_bytes()
        );
        let stats = payload.stats();
        assert_eq!(stats["usercnt_active"]["mode"], "gauge");
        assert_eq!(stats["usercnt_active"]["type"], "int");
        assert_eq!(stats["usercnt_active"]["value"], 123);
        assert_eq!(
            stats["machine_id_hash"]["value"],
            "89486aec0f674e60a910ceb32e2e2afc"
        );
        assert!(stats["program_name"].get("mode").is_none());
    }

    #[test]
    fn same_facts_give_same_bytes() {
        assert_eq!(build(&facts(), &options()), build(&facts(), &options()));
    }

    #[test]
    fn omitted_fields_and_buckets_are_applied() {
        let mut opts = options();
        opts.omit.insert("machine_id_hash".into());
        opts.omit.insert("utsname".into());
        opts.bucket_counts = true;
        let stats = build(&facts(), &opts).stats();
        assert!(!stats.contains_key("machine_id_hash"));
        assert!(!stats.contains_key("utsname"));
        assert!(stats.contains_key("server_guid_hash"));
        assert_eq!(stats["usercnt_active"]["value"], 120);
    }

    #[test]
    fn sha256_scheme_is_named_in_the_payload() {
        let mut opts = options();
        opts.scheme = IdScheme::Sha256;
        let stats = build(&facts(), &opts).stats();
        assert_eq!(stats["id_scheme"]["value"], "sha256");
        assert_eq!(
            stats["machine_id_hash"]["value"].as_str().unwrap().len(),
            64
        );
    }

    #[test]
    fn mistyped_or_unknown_values_are_never_sent() {
        let mut f = facts();
        f.values
            .insert("usercnt_room".into(), FactValue::Text("lots".into()));
        f.values
            .insert("secret_field".into(), FactValue::Text("x".into()));
        let stats = build(&f, &options()).stats();
        assert!(!stats.contains_key("usercnt_room"));
        assert!(!stats.contains_key("secret_field"));
    }

    /// The value the collector stored for wire field `name`, as JSON.
    fn stored(r: &crate::collector::ingest::Report, name: &str) -> Option<Value> {
        use crate::collector::ingest::Value as Stored;
        let field = wire::field(name).unwrap();
        if field.name == wire::ID_SCHEME.name {
            let scheme = IdScheme::ALL.into_iter().find(|s| r.flags & s.flag() != 0);
            return scheme.map(|s| Value::from(s.wire_name()));
        }
        assert!(
            wire::stored_index(field).is_some(),
            "{name} is sent but has no column"
        );
        match r.value(field)? {
            Stored::Text(t) => Some(Value::from(t.as_str())),
            Stored::Count(n) => Some(Value::from(*n)),
        }
    }

    /// Build with every field set to `text`/`count`, hand the bytes to the
    /// collector's parser, and check each field sent is stored as sent.
    fn round_trip(text: &str, count: u64, opts: &PayloadOptions) -> Map<String, Value> {
        let mut f = facts();
        for name in wire::SURVEYD_FIELD_NAMES {
            match field_spec(name).unwrap().0 {
                FieldType::Text => f
                    .values
                    .insert(name.to_string(), FactValue::Text(text.into())),
                FieldType::Count => f.values.insert(name.to_string(), FactValue::Count(count)),
            };
        }
        let payload = build(&f, opts);
        let report = crate::collector::ingest::parse_report(payload.as_bytes())
            .unwrap_or_else(|e| panic!("collector refused what surveyd built from {text:?}: {e}"));
        let stats = payload.stats();
        for (name, entry) in &stats {
            assert_eq!(
                stored(&report, name).as_ref(),
                Some(&entry["value"]),
                "{name} sent but not stored as sent"
            );
        }
        stats
    }

    #[test]
    fn every_field_surveyd_builds_is_accepted_and_stored_by_the_collector() {
        let hostile = format!(
            "{}\t\u{202E}\u{2028}\n\u{1b}[31m{}\u{85}",
            "é".repeat(100),
            "x".repeat(300)
        );
        for scheme in [IdScheme::App, IdScheme::Sha256] {
            for bucket_counts in [false, true] {
                let opts = PayloadOptions {
                    scheme,
                    bucket_counts,
                    ..options()
                };
                let all = round_trip("plain value", wire::MAX_COUNT, &opts);
                assert_eq!(
                    all.len(),
                    wire::SURVEYD_FIELD_NAMES.len(),
                    "in range: every field sent"
                );
                let longest = "é".repeat(wire::MAX_TEXT_BYTES / 2);
                let at_limit = round_trip(&longest, wire::MAX_COUNT, &opts);
                assert_eq!(at_limit[wire::OSRELEASE.name]["value"], longest.as_str());
                let fitted = round_trip(&hostile, 5 * wire::MAX_COUNT, &opts);
                let version = fitted["program_version"]["value"].as_str().unwrap();
                assert_eq!(version.len(), wire::MAX_TEXT_BYTES);
                assert!(version.starts_with(&format!("{} ", "é".repeat(100))));
                assert!(
                    !fitted.contains_key("usercnt_active"),
                    "out of range: left out"
                );
            }
        }
    }

    proptest::proptest! {
        /// Whatever text a fact source produces, the collector accepts the
        /// report built from it.
        #[test]
        fn no_text_fact_makes_the_collector_refuse_the_report(text in "(?s).{0,400}") {
            round_trip(&text, 7, &options());
        }
    }
}
