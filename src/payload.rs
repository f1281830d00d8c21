//! The report payload: upstream kopano-server's version-2 JSON, its field
//! names, and the canonical bytes (sorted keys, no whitespace) that are
//! audited and sent.

/// Every field a report can carry, by its name on the wire.
pub const FIELD_NAMES: &[&str] = &[
    "machine_id_hash",
    "server_guid_hash",
    "id_scheme",
    "program_name",
    "program_version",
    "osrelease",
    "utsname",
    "userplugin",
    "attachment_storage",
    "usercnt_active",
    "usercnt_contact",
    "usercnt_equipment",
    "usercnt_na_user",
    "usercnt_nonactive",
    "usercnt_room",
];

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::privacy::{bucket_count, IdScheme, RawId};

/// How a field is typed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Count,
}

/// The type and the human description upstream's collector shows for each
/// field. Counts carry upstream's own descriptions.
pub fn field_spec(name: &str) -> Option<(FieldType, &'static str)> {
    use FieldType::*;
    Some(match name {
        "machine_id_hash" => (Text, "Machine ID, hashed on the sending machine"),
        "server_guid_hash" => (Text, "Server GUID, hashed on the sending machine"),
        "id_scheme" => (Text, "How the IDs were hashed"),
        "program_name" => (Text, "Program name"),
        "program_version" => (Text, "Program version"),
        "osrelease" => (Text, "OS release"),
        "utsname" => (Text, "Kernel name, architecture and release"),
        "userplugin" => (Text, "User plugin"),
        "attachment_storage" => (Text, "Attachment storage"),
        "usercnt_active" => (Count, "Number of active users"),
        "usercnt_contact" => (Count, "Number of contacts"),
        "usercnt_equipment" => (Count, "Number of equipment"),
        "usercnt_na_user" => (Count, "Number of non-active users"),
        "usercnt_nonactive" => (Count, "Number of total non-active objects"),
        "usercnt_room" => (Count, "Number of rooms"),
        _ => return None,
    })
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
        let Some((kind, desc)) = field_spec(name) else {
            return;
        };
        let entry = match (kind, value) {
            (FieldType::Text, FactValue::Text(text)) => {
                json!({"desc": desc, "type": "string", "value": text})
            }
            (FieldType::Count, FactValue::Count(n)) => {
                let n = if options.bucket_counts {
                    bucket_count(n)
                } else {
                    n
                };
                json!({"desc": desc, "type": "int", "mode": "gauge", "value": n})
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
            "machine_id_hash",
            FactValue::Text(id.hash(options.scheme, &options.app_id)),
        );
        hashed_any = true;
    }
    if let Some(guid) = &facts.server_guid {
        put(
            "server_guid_hash",
            FactValue::Text(guid.hash(options.scheme, &options.app_id)),
        );
        hashed_any = true;
    }
    if hashed_any {
        put(
            "id_scheme",
            FactValue::Text(options.scheme.wire_name().to_string()),
        );
    }
    for (name, value) in &facts.values {
        if !matches!(
            name.as_str(),
            "machine_id_hash" | "server_guid_hash" | "id_scheme"
        ) {
            put(name, value.clone());
        }
    }

    let document = json!({"version": 2, "stats": Value::Object(stats)});
    Payload {
        bytes: serde_json::to_vec(&document).expect("JSON values always serialise"),
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
}
