//! Turning a submitted body into a validated [`Report`]: the version-2
//! payload rules, both client generations (surveyd's hashed identifiers and
//! upstream kopano-server's raw ones), the `flags` bits and the row `uid`.
//!
//! Everything here is pure so that tests can call it directly. Raw
//! identifiers live only inside [`parse_report`]: they are hashed the moment
//! they are read and never copied into a `Report`, an error or a log line.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::wire::{self, IdScheme};

pub use crate::wire::{
    FLAG_ID_APP_V1, FLAG_ID_SHA256, FLAG_NO_MACHINE_ID, FLAG_NO_SERVER_GUID, FLAG_UPSTREAM_RAW_IDS,
};

/// What Kopano's Go survey client (ksurveyclient-go, used by kwmserverd
/// and others) sends as `server_guid` when it has none: BLAKE2b-256 of the
/// empty string. Every such installation sends the same value, so it
/// identifies nothing and counts as "no GUID".
pub const GO_CLIENT_NO_GUID: &str =
    "0E5751C026E543B2E8AB2EB06099DAA1D1E5DF47778F7787FAAB45CDF12FE3A8";

/// One validated report, ready to be stored. Holds no raw identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub uid: String,
    pub flags: i64,
    /// The value of each of [`wire::stored_fields`], in that order.
    pub values: Vec<Option<Value>>,
}

/// A validated field value, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Count(i64),
}

impl Report {
    pub fn value(&self, field: &wire::Field) -> Option<&Value> {
        self.values.get(wire::stored_index(field)?)?.as_ref()
    }

    pub fn text(&self, field: &wire::Field) -> Option<&str> {
        match self.value(field)? {
            Value::Text(t) => Some(t),
            Value::Count(_) => None,
        }
    }

    pub fn count(&self, field: &wire::Field) -> Option<i64> {
        match self.value(field)? {
            Value::Count(n) => Some(*n),
            Value::Text(_) => None,
        }
    }
}

/// Why a body was refused. The text goes back to the client as the one-line
/// 400 reason, so it names fields and rules but never echoes a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

fn reject(msg: impl Into<String>) -> Rejection {
    Rejection(msg.into())
}

pub use crate::wire::sha256_hex;

/// The installation key: lowercase hex SHA-256 over the machine id hash, a
/// newline, the server GUID hash, a newline and the program name (a missing
/// part counts as the empty string). Newline cannot occur in any part, so
/// the concatenation is unambiguous.
pub fn installation_uid(
    machine_id_sha256: Option<&str>,
    server_guid_sha256: Option<&str>,
    program_name: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    h.update(machine_id_sha256.unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(server_guid_sha256.unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(program_name.unwrap_or("").as_bytes());
    hex::encode(h.finalize())
}

// The payload is read in one pass into the types below, borrowing strings
// from the body. Their deserializers accept any JSON value and only record
// what kind it was, so a wrongly typed field never becomes a serde error
// (whose text would quote the value); the checks after parsing word every
// rejection themselves.

#[derive(Default)]
struct Envelope<'a> {
    version: Option<Field<'a>>,
    stats: Option<Stats<'a>>,
}

/// A JSON value as far as validation cares.
enum Field<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// An integer above i64::MAX.
    Huge,
    Other,
}

/// The stats this collector knows, by their index in [`wire::FIELDS`];
/// `None` in `known` when `stats` was not an object. Any other name is
/// skipped without being copied.
struct Stats<'a> {
    known: Option<Known<'a>>,
}

struct Known<'a>([Option<Entry<'a>>; wire::FIELDS.len()]);

impl<'a> Known<'a> {
    fn take(&mut self, field: &wire::Field) -> Option<Entry<'a>> {
        let i = wire::FIELDS.iter().position(|f| f.name == field.name);
        self.0[i.expect("every field the parser reads is in the wire contract")].take()
    }
}

/// One stat, `{"desc": .., "type": .., "mode": .., "value": ..}`, or
/// `None` when something other than an object stood in its place.
struct Entry<'a>(Option<EntryFields<'a>>);

#[derive(Default)]
struct EntryFields<'a> {
    kind: Option<Field<'a>>,
    desc: Option<Field<'a>>,
    mode: Option<Field<'a>>,
    value: Option<Field<'a>>,
}

/// A map key, borrowed unless it had escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Any JSON value that validation does not look into, read past with one
/// check: no object inside it repeats a key. A repeated key is read one
/// way by this collector and another by the next tool (first or last
/// wins), so it is refused wherever it occurs. Reading (not skipping) its
/// strings also checks their UTF-8 and escapes, which serde_json's own
/// skipping does not (a fuzz finding: tests/fuzz_regressions.rs).
struct Skipped;

/// The keys of one object so far; a repeat is an error.
#[derive(Default)]
struct SeenKeys<'a>(HashSet<Cow<'a, str>>);

impl<'a> SeenKeys<'a> {
    fn insert<E: de::Error>(&mut self, key: Cow<'a, str>) -> Result<(), E> {
        if !self.0.contains(key.as_ref()) {
            self.0.insert(key);
            return Ok(());
        }
        // Only the contract's own names are quoted: any other key could be
        // data the client never meant to echo.
        Err(match wire::field(&key) {
            Some(f) => E::custom(format!("duplicate key {}", f.name)),
            None if matches!(
                key.as_ref(),
                "version" | "stats" | "type" | "desc" | "mode" | "value"
            ) =>
            {
                E::custom(format!("duplicate key {key}"))
            }
            None => E::custom("duplicate key"),
        })
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skipped>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    let mut seen = SeenKeys::default();
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        seen.insert(key.clone())?;
        map.next_value::<Skipped>()?;
    }
    Ok(())
}

/// `Visitor` methods mapping booleans, floats, null and arrays to `$other`.
macro_rules! other_values {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            skip_seq(seq)?;
            Ok($other)
        }
    };
}

/// `Visitor` methods mapping every non-object value to `$other`.
macro_rules! non_object_scalars {
    ($other:expr) => {
        other_values!($other);
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skipped;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            non_object_scalars!(Skipped);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skipped, A::Error> {
                skip_map(map)?;
                Ok(Skipped)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Envelope<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<Envelope<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Envelope<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a payload object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'a>, A::Error> {
                let mut env = Envelope::default();
                let mut seen = SeenKeys::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    seen.insert(key.clone())?;
                    match key.as_ref() {
                        "version" => env.version = Some(map.next_value()?),
                        "stats" => env.stats = Some(map.next_value()?),
                        _ => {
                            map.next_value::<Skipped>()?;
                        }
                    }
                }
                Ok(env)
            }
        }
        deserializer.deserialize_map(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<Field<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            other_values!(Field::Other);
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field<'a>, E> {
                Ok(Field::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field<'a>, E> {
                Ok(i64::try_from(v).map_or(Field::Huge, Field::Int))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'a>, A::Error> {
                skip_map(map)?;
                Ok(Field::Other)
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Entry<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<Entry<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entry<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a stat entry")
            }
            non_object_scalars!(Entry(None));
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry<'a>, A::Error> {
                let mut e = EntryFields::default();
                let mut seen = SeenKeys::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    seen.insert(key.clone())?;
                    let slot = match key.as_ref() {
                        "type" => &mut e.kind,
                        "desc" => &mut e.desc,
                        "mode" => &mut e.mode,
                        "value" => &mut e.value,
                        _ => {
                            map.next_value::<Skipped>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Field<'a>>()?);
                }
                Ok(Entry(Some(e)))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Stats<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<Stats<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Stats<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of stats")
            }
            non_object_scalars!(Stats { known: None });
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stats<'a>, A::Error> {
                let mut stats = Known(std::array::from_fn(|_| None));
                let mut seen = SeenKeys::default();
                while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
                    seen.insert(name.clone())?;
                    let Some(i) = wire::FIELDS.iter().position(|f| f.name == name) else {
                        map.next_value::<Skipped>()?;
                        continue;
                    };
                    stats.0[i] = Some(map.next_value::<Entry<'a>>()?);
                }
                Ok(Stats { known: Some(stats) })
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// serde would also fill a struct from a JSON array, by position; only
/// objects are payloads.
fn is_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// Parse and validate one request body.
///
/// serde's messages for a value of the wrong type quote the value, so
/// they are never passed on: every rejection below is worded here, and
/// only syntax errors (which carry just a position) are quoted.
pub fn parse_report(body: &[u8]) -> Result<Report, Rejection> {
    if !is_object(body) {
        return Err(reject("payload is not a JSON object"));
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        // Besides syntax errors (which quote only a position) the parse
        // fails only on duplicate names, which quote only our own names.
        match msg.split(" at line ").next() {
            Some(dup) if e.is_data() => reject(format!("payload has a {dup}")),
            _ => reject(format!("malformed JSON: {msg}")),
        }
    })?;
    match envelope.version {
        None => return Err(reject("missing \"version\"")),
        Some(Field::Int(v)) if v == i64::from(wire::PAYLOAD_VERSION) => {}
        Some(Field::Int(v)) => {
            return Err(reject(format!(
                "unsupported version {v}; this collector accepts version {}",
                wire::PAYLOAD_VERSION
            )))
        }
        Some(_) => return Err(reject("\"version\" is not a supported integer")),
    }
    let mut stats = envelope
        .stats
        .ok_or_else(|| reject("missing \"stats\""))?
        .known
        .ok_or_else(|| reject("\"stats\" is not an object"))?;

    // The contract's limit allows only the schemes' own names.
    let scheme = string_stat(stats.take(&wire::ID_SCHEME), &wire::ID_SCHEME)?
        .and_then(|s| IdScheme::from_wire_name(&s));
    let raw_machine = stats.take(&wire::MACHINE_ID);
    let raw_guid = stats.take(&wire::SERVER_GUID);
    let upstream_style = raw_machine.is_some() || raw_guid.is_some();
    let raw_machine = raw_id_stat(raw_machine, &wire::MACHINE_ID)?;
    let raw_guid = raw_id_stat(raw_guid, &wire::SERVER_GUID)?
        .filter(|g| !g.eq_ignore_ascii_case(GO_CLIENT_NO_GUID));
    let hashed_machine = string_stat(stats.take(&wire::MACHINE_ID_HASH), &wire::MACHINE_ID_HASH)?;
    let hashed_guid = string_stat(stats.take(&wire::SERVER_GUID_HASH), &wire::SERVER_GUID_HASH)?;

    let surveyd_style = scheme.is_some() || hashed_machine.is_some() || hashed_guid.is_some();
    if surveyd_style && upstream_style {
        return Err(reject(
            "payload mixes raw machine_id/server_guid with hashed identifiers",
        ));
    }

    let (mut machine_id_sha256, mut server_guid_sha256, mut flags) = if surveyd_style {
        let scheme = scheme.ok_or_else(|| reject("hashed identifiers need stats.id_scheme"))?;
        let m = hashed_machine
            .map(|h| check_scheme(scheme, &wire::MACHINE_ID_HASH, h))
            .transpose()?;
        let g = hashed_guid
            .map(|h| check_scheme(scheme, &wire::SERVER_GUID_HASH, h))
            .transpose()?;
        (m, g, scheme.flag())
    } else {
        (
            raw_machine.map(|raw| sha256_hex(raw.as_bytes())),
            raw_guid.map(|raw| sha256_hex(raw.as_bytes())),
            FLAG_UPSTREAM_RAW_IDS,
        )
    };
    if machine_id_sha256.is_none() && server_guid_sha256.is_none() {
        return Err(reject(
            "no installation identifier: need a machine id or a server GUID",
        ));
    }
    if machine_id_sha256.is_none() {
        flags |= FLAG_NO_MACHINE_ID;
    }
    if server_guid_sha256.is_none() {
        flags |= FLAG_NO_SERVER_GUID;
    }

    let values = wire::stored_fields()
        .map(|field| {
            Ok(if field.name == wire::MACHINE_ID_HASH.name {
                machine_id_sha256.take().map(Value::Text)
            } else if field.name == wire::SERVER_GUID_HASH.name {
                server_guid_sha256.take().map(Value::Text)
            } else {
                match field.json_type {
                    wire::JsonType::String => {
                        string_stat(stats.take(field), field)?.map(|v| Value::Text(v.into_owned()))
                    }
                    wire::JsonType::Int => count_stat(stats.take(field), field)?.map(Value::Count),
                }
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    let mut report = Report {
        uid: String::new(),
        flags,
        values,
    };
    report.uid = installation_uid(
        report.text(&wire::MACHINE_ID_HASH),
        report.text(&wire::SERVER_GUID_HASH),
        report.text(&wire::PROGRAM_NAME),
    );
    Ok(report)
}

/// Hashes must have exactly the length their scheme produces (the wire
/// contract already made them lowercase hex), so that a client bug cannot
/// put one scheme's ids under another's flag.
fn check_scheme(
    scheme: IdScheme,
    field: &wire::Field,
    value: Cow<str>,
) -> Result<String, Rejection> {
    if value.len() == scheme.hex_len() {
        Ok(value.into_owned())
    } else {
        Err(reject(format!(
            "stats.{}: must be {} lowercase hex digits for {}",
            field.name,
            scheme.hex_len(),
            scheme.wire_name()
        )))
    }
}

/// The fields of stat `name`, checked to declare the contract's type.
fn entry<'a>(
    entry: Option<Entry<'a>>,
    field: &wire::Field,
) -> Result<Option<EntryFields<'a>>, Rejection> {
    let Some(Entry(fields)) = entry else {
        return Ok(None);
    };
    let name = field.name;
    let expected_type = field.json_type.wire_name();
    let e = fields.ok_or_else(|| reject(format!("stats.{name}: not an object")))?;
    match &e.kind {
        Some(Field::Str(t)) if t == expected_type => {}
        Some(_) => {
            return Err(reject(format!(
                "stats.{name}: type must be \"{expected_type}\""
            )))
        }
        None => return Err(reject(format!("stats.{name}: missing \"type\""))),
    }
    if e.desc.as_ref().is_some_and(|d| !matches!(d, Field::Str(_))) {
        return Err(reject(format!("stats.{name}: \"desc\" is not a string")));
    }
    Ok(Some(e))
}

/// A string stat within the wire contract's limits for `name`: length,
/// characters (no controls, separators or bidi formatting, which would
/// break or disguise the one-line-per-row outputs vendors read), shape.
fn string_stat<'a>(
    raw: Option<Entry<'a>>,
    field: &wire::Field,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    let name = field.name;
    let Some(e) = entry(raw, field)? else {
        return Ok(None);
    };
    let v = match e.value {
        Some(Field::Str(v)) => v,
        Some(_) => return Err(reject(format!("stats.{name}: value is not a string"))),
        None => return Err(reject(format!("stats.{name}: missing \"value\""))),
    };
    field
        .check_text(&v)
        .map_err(|why| reject(format!("stats.{name}: {why}")))?;
    Ok(Some(v))
}

/// A raw upstream identifier: an empty one means "none", never a hash of
/// the empty string.
fn raw_id_stat<'a>(
    raw: Option<Entry<'a>>,
    field: &wire::Field,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    Ok(string_stat(raw, field)?.filter(|v| !v.is_empty()))
}

fn count_stat(raw: Option<Entry>, field: &wire::Field) -> Result<Option<i64>, Rejection> {
    let name = field.name;
    let Some(e) = entry(raw, field)? else {
        return Ok(None);
    };
    // Upstream sends its on-demand counts both as gauges and as counters.
    match &e.mode {
        None => {}
        Some(Field::Str(m)) if m == "gauge" || m == "counter" => {}
        Some(_) => {
            return Err(reject(format!(
                "stats.{name}: mode must be \"gauge\" or \"counter\""
            )))
        }
    }
    // A negative or huge count is out of range like any other.
    let n = match e.value {
        Some(Field::Int(n)) => u64::try_from(n).unwrap_or(u64::MAX),
        Some(Field::Huge) => u64::MAX,
        Some(_) => return Err(reject(format!("stats.{name}: value is not an integer"))),
        None => return Err(reject(format!("stats.{name}: missing \"value\""))),
    };
    field
        .check_count(n)
        .map_err(|why| reject(format!("stats.{name}: {why}")))?;
    Ok(Some(n as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW_MID: &str = "3d12a7c5e0f84b6c9a1b2c3d4e5f6a7b";
    const RAW_GUID: &str = "8c4b8d1e-77aa-4c2b-9f00-1234567890ab";

    fn upstream_body() -> String {
        format!(
            "{{\n\t\"stats\" : \n\t{{\n\t\t\"machine_id\" : \n\t\t{{\n\t\t\t\"desc\" : \"\",\n\t\t\t\"type\" : \"string\",\n\t\t\t\"value\" : \"{RAW_MID}\"\n\t\t}},\n\t\t\"server_guid\" : \n\t\t{{\n\t\t\t\"desc\" : \"Server GUID\",\n\t\t\t\"type\" : \"string\",\n\t\t\t\"value\" : \"{RAW_GUID}\"\n\t\t}},\n\t\t\"program_name\" : \n\t\t{{\n\t\t\t\"desc\" : \"Program name\",\n\t\t\t\"type\" : \"string\",\n\t\t\t\"value\" : \"kopano-server\"\n\t\t}},\n\t\t\"usercnt_active\" : \n\t\t{{\n\t\t\t\"desc\" : \"Number of active users\",\n\t\t\t\"mode\" : \"counter\",\n\t\t\t\"type\" : \"int\",\n\t\t\t\"value\" : 42\n\t\t}}\n\t}},\n\t\"version\" : 2\n}}"
        )
    }

    #[test]
    fn upstream_raw_ids_are_hashed_and_flagged() {
        let r = parse_report(upstream_body().as_bytes()).unwrap();
        assert_eq!(
            r.text(&wire::MACHINE_ID_HASH),
            Some(sha256_hex(RAW_MID.as_bytes()).as_str())
        );
        assert_eq!(
            r.text(&wire::SERVER_GUID_HASH),
            Some(sha256_hex(RAW_GUID.as_bytes()).as_str())
        );
        assert_eq!(r.flags, FLAG_UPSTREAM_RAW_IDS);
        assert_eq!(r.count(&wire::USERCNT_ACTIVE), Some(42));
        let debug = format!("{r:?}");
        assert!(!debug.contains(RAW_MID) && !debug.contains(RAW_GUID));
    }

    #[test]
    fn sha256_client_and_upstream_map_to_the_same_uid() {
        let up = parse_report(upstream_body().as_bytes()).unwrap();
        let body = serde_json::json!({"version": 2, "stats": {
            "id_scheme": {"desc": "", "type": "string", "value": "sha256"},
            "machine_id_hash": {"desc": "", "type": "string", "value": sha256_hex(RAW_MID.as_bytes())},
            "server_guid_hash": {"desc": "", "type": "string", "value": sha256_hex(RAW_GUID.as_bytes())},
            "program_name": {"desc": "", "type": "string", "value": "kopano-server"},
        }});
        let sd = parse_report(body.to_string().as_bytes()).unwrap();
        assert_eq!(sd.uid, up.uid);
        assert_eq!(sd.flags, FLAG_ID_SHA256);
    }

    #[test]
    fn app_v1_hash_must_be_32_hex_and_missing_guid_is_flagged() {
        let ok = serde_json::json!({"version": 2, "stats": {
            "id_scheme": {"type": "string", "value": "app-v1"},
            "machine_id_hash": {"type": "string", "value": "0123456789abcdef0123456789abcdef"},
        }});
        let r = parse_report(ok.to_string().as_bytes()).unwrap();
        assert_eq!(r.flags, FLAG_ID_APP_V1 | FLAG_NO_SERVER_GUID);
        let bad = serde_json::json!({"version": 2, "stats": {
            "id_scheme": {"type": "string", "value": "app-v1"},
            "machine_id_hash": {"type": "string", "value": RAW_GUID},
        }});
        let e = parse_report(bad.to_string().as_bytes()).unwrap_err();
        assert!(!e.0.contains(RAW_GUID), "{e}");
    }

    #[test]
    fn rejections_name_the_problem_without_echoing_values() {
        let cases = [
            (r#"{"version":2,"stats":"#.to_owned(), "malformed JSON"),
            (
                r#"{"version":3,"stats":{}}"#.to_owned(),
                "unsupported version 3",
            ),
            (
                format!(
                    r#"{{"version":2,"stats":{{"machine_id":{{"type":"string","value":"{RAW_MID}"}},"usercnt_active":{{"type":"int","mode":"gauge","value":1000000001}}}}}}"#
                ),
                "usercnt_active: out of range",
            ),
            (
                format!(
                    r#"{{"version":2,"stats":{{"machine_id":{{"type":"int","value":"{RAW_MID}"}}}}}}"#
                ),
                "machine_id: type must be \"string\"",
            ),
            (
                r#"{"version":2,"stats":{"program_name":{"type":"string","value":"x"}}}"#
                    .to_owned(),
                "no installation identifier",
            ),
        ];
        for (body, want) in cases {
            let e = parse_report(body.as_bytes()).unwrap_err();
            assert!(e.0.contains(want), "{body}: {e}");
            assert!(!e.0.contains(RAW_MID));
        }
    }

    #[test]
    fn unknown_stats_and_fields_are_ignored() {
        let body = format!(
            r#"{{"version":2,"extra":true,"stats":{{"machine_id":{{"type":"string","value":"{RAW_MID}","unit":"x"}},"sql_select":{{"type":"real","mode":"counter","value":1.5}}}}}}"#
        );
        assert!(parse_report(body.as_bytes()).is_ok());
    }

    proptest::proptest! {
        /// Whatever raw id arrives, and whether the payload is accepted or
        /// refused, the raw value is in neither the report nor the reason.
        #[test]
        fn raw_ids_never_survive_parsing(
            raw in "[g-z]{8,300}",
            count in proptest::prop_oneof![proptest::strategy::Just(1i64), proptest::strategy::Just(-1i64)],
        ) {
            let body = format!(
                r#"{{"version":2,"stats":{{"machine_id":{{"type":"string","value":"{raw}"}},"server_guid":{{"type":"string","value":"{raw}"}},"usercnt_active":{{"type":"int","value":{count}}}}}}}"#
            );
            let seen = match parse_report(body.as_bytes()) {
                Ok(r) => format!("{r:?}"),
                Err(e) => e.0,
            };
            proptest::prop_assert!(!seen.contains(&raw));
        }
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused() {
        let mid = format!(r#""machine_id":{{"type":"string","value":"{RAW_MID}"}}"#);
        for body in [
            format!(r#"{{"version":2,"version":2,"stats":{{{mid}}}}}"#),
            format!(r#"{{"version":2,"stats":{{{mid},{mid}}}}}"#),
            format!(
                r#"{{"version":2,"stats":{{"machine_id":{{"type":"string","value":"a","value":"{RAW_MID}"}}}}}}"#
            ),
            format!(r#"{{"version":2,"stats":{{{mid},"x":{{"k":1}},"x":{{"k":2}}}}}}"#),
            format!(
                r#"{{"version":2,"extra":[{{"{RAW_GUID}":1,"{RAW_GUID}":2}}],"stats":{{{mid}}}}}"#
            ),
        ] {
            let e = parse_report(body.as_bytes()).unwrap_err();
            assert!(e.0.contains("duplicate key"), "{body}: {e}");
            assert!(!e.0.contains(RAW_GUID) && !e.0.contains(RAW_MID), "{e}");
        }
    }

    #[test]
    fn go_client_placeholder_guid_counts_as_no_guid() {
        for guid in [
            GO_CLIENT_NO_GUID.to_owned(),
            GO_CLIENT_NO_GUID.to_lowercase(),
        ] {
            let body = format!(
                r#"{{"version":2,"stats":{{"machine_id":{{"type":"string","value":"{RAW_MID}"}},"server_guid":{{"type":"string","value":"{guid}"}}}}}}"#
            );
            let r = parse_report(body.as_bytes()).unwrap();
            assert_eq!(r.text(&wire::SERVER_GUID_HASH), None);
            assert_eq!(r.flags, FLAG_UPSTREAM_RAW_IDS | FLAG_NO_SERVER_GUID);
        }
    }

    #[test]
    fn bidi_and_separator_characters_are_refused() {
        for bad in [r"\u202e", r"\u2028", r"\u2066", r"\u0085", r"\t"] {
            let body = format!(
                r#"{{"version":2,"stats":{{"machine_id":{{"type":"string","value":"{RAW_MID}"}},"osrelease":{{"type":"string","value":"a{bad}b"}}}}}}"#
            );
            let e = parse_report(body.as_bytes()).unwrap_err();
            assert!(
                e.0.starts_with("stats.osrelease: contains control"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn uid_is_sha256_of_newline_joined_parts() {
        assert_eq!(
            installation_uid(Some("a"), None, Some("p")),
            sha256_hex(b"a\n\np")
        );
    }
}
