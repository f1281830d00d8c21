//! The wire contract both programs speak, in one place: the submit path and
//! headers, and for every payload field its name, JSON type, mode,
//! description, limits and the payload version that introduced it. No I/O:
//! the daemon's payload builder fits its values to these limits before
//! anything is audited, the collector's ingest refuses what breaks them,
//! and the store keeps one column per stored field, so the two ends cannot
//! drift apart.

use std::borrow::Cow;

/// The payload `version` this contract describes: upstream's format,
/// which every field addition keeps.
pub const PAYLOAD_VERSION: u32 = 2;
/// The version of the field table: a field's [`Field::since`] is the
/// schema that introduced it. Consent is given to a schema, so a field
/// added by an upgrade is not sent until the admin acknowledges it.
pub const SCHEMA: u32 = 3;
/// The schema of upstream's fields, and what a report without
/// [`ACKNOWLEDGED_KEY`] (an upstream client) counts as having acknowledged.
pub const UPSTREAM_SCHEMA: u32 = 2;
/// Envelope key beside `version` and `stats`: the sender's [`SCHEMA`].
/// Envelope keys are not facts, so no field consent applies to them.
pub const SCHEMA_KEY: &str = "schema";
/// Envelope key: the schema the sender's admin acknowledged; the collector
/// refuses a report carrying a field newer than that.
pub const ACKNOWLEDGED_KEY: &str = "acknowledged";
/// Where every client, upstream or surveyd, posts its report.
pub const SUBMIT_PATH: &str = "/api/stats/v1/submit";
/// Upstream's marker header; the collector refuses a request without it.
pub const STATS_REQUEST_HEADER: &str = "X-Kopano-Stats-Request";
pub const STATS_REQUEST_VALUE: &str = "1";
pub const CONTENT_TYPE: &str = "application/json";

/// Upper bound for every count; anything larger is not a real installation
/// and would only pollute the aggregates.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Upper bound, in bytes of UTF-8, for every free-text fact.
pub const MAX_TEXT_BYTES: usize = 256;

/// How a field is typed on the wire (`"type"` of the stat entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `"type": "string"`, a JSON string value.
    String,
    /// `"type": "int"`, a JSON integer value.
    Int,
}

impl JsonType {
    pub fn wire_name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Int => "int",
        }
    }
}

/// Which clients send a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// surveyd and upstream kopano-server alike.
    Both,
    /// Only surveyd (hashed identifiers).
    Surveyd,
    /// Only upstream clients (raw identifiers, hashed on ingest).
    Upstream,
}

/// What a value may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Free text: at most `max_bytes` of UTF-8, no [`forbidden_char`].
    Text { max_bytes: usize },
    /// Lowercase hex digits, exactly one of these lengths.
    Hex { lengths: &'static [usize] },
    /// One of these exact words.
    OneOf(&'static [&'static str]),
    /// An integer in `min..=max`.
    Count { min: u64, max: u64 },
}

/// One payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub json_type: JsonType,
    /// `"mode"` surveyd writes; ints only. The collector also accepts
    /// `"counter"`, which upstream sends for the same counts.
    pub mode: Option<&'static str>,
    pub desc: &'static str,
    pub limit: Limit,
    /// The [`SCHEMA`] that introduced the field.
    pub since: u32,
    pub sender: Sender,
    /// The installation-table column the value ends up in; `None` for the
    /// raw identifiers and `id_scheme`, which only shape other columns.
    pub column: Option<&'static str>,
}

const TEXT: Limit = Limit::Text {
    max_bytes: MAX_TEXT_BYTES,
};
const COUNT: Limit = Limit::Count {
    min: 0,
    max: MAX_COUNT,
};
/// app-v1 ids are 32 hex digits, sha256 ones 64.
const ID_HASH: Limit = Limit::Hex { lengths: &[32, 64] };
pub const ID_SCHEMES: &[&str] = &["app-v1", "sha256"];

const fn text(name: &'static str, desc: &'static str, sender: Sender) -> Field {
    Field {
        name,
        json_type: JsonType::String,
        mode: None,
        desc,
        limit: TEXT,
        since: 2,
        sender,
        column: Some(name),
    }
}

const fn count(name: &'static str, desc: &'static str) -> Field {
    Field {
        name,
        json_type: JsonType::Int,
        mode: Some("gauge"),
        desc,
        limit: COUNT,
        since: 2,
        sender: Sender::Both,
        column: Some(name),
    }
}

/// Every field of the version-2 payload. Counts carry upstream's own
/// descriptions.
pub const FIELDS: &[Field] = &[
    Field {
        column: Some("machine_id_sha256"),
        limit: ID_HASH,
        ..text(
            "machine_id_hash",
            "Machine ID, hashed on the sending machine",
            Sender::Surveyd,
        )
    },
    Field {
        column: Some("server_guid_sha256"),
        limit: ID_HASH,
        ..text(
            "server_guid_hash",
            "Server GUID, hashed on the sending machine",
            Sender::Surveyd,
        )
    },
    Field {
        column: None,
        limit: Limit::OneOf(ID_SCHEMES),
        ..text("id_scheme", "How the IDs were hashed", Sender::Surveyd)
    },
    Field {
        column: None,
        ..text("machine_id", "Machine ID", Sender::Upstream)
    },
    Field {
        column: None,
        ..text("server_guid", "Server GUID", Sender::Upstream)
    },
    text("program_name", "Program name", Sender::Both),
    text("program_version", "Program version", Sender::Both),
    text("osrelease", "OS release", Sender::Both),
    text(
        "utsname",
        "Kernel name, architecture and release",
        Sender::Both,
    ),
    text("userplugin", "User plugin", Sender::Both),
    text("attachment_storage", "Attachment storage", Sender::Both),
    count("usercnt_active", "Number of active users"),
    count("usercnt_contact", "Number of contacts"),
    count("usercnt_equipment", "Number of equipment"),
    count("usercnt_na_user", "Number of non-active users"),
    count("usercnt_nonactive", "Number of total non-active objects"),
    count("usercnt_room", "Number of rooms"),
];

pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Characters no text fact may hold: C0 and C1 controls and DEL (they
/// break the one-line-per-row outputs), line and paragraph separators, and
/// the bidirectional formatting characters that make a cell display
/// something other than what it holds (Trojan Source, CVE-2021-42574).
pub fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Why a value breaks its field's limit. The wording names the rule, never
/// the value, so it can go back to a client as-is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TooLong { max_bytes: usize },
    ForbiddenChar,
    NotHex { lengths: &'static [usize] },
    NotOneOf(&'static [&'static str]),
    OutOfRange { min: u64, max: u64 },
    WrongType(JsonType),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TooLong { max_bytes } => write!(f, "longer than {max_bytes} bytes"),
            Violation::ForbiddenChar => f.write_str(
                "contains control, line-separator or bidirectional formatting characters",
            ),
            Violation::NotHex { lengths } => {
                let l: Vec<String> = lengths.iter().map(usize::to_string).collect();
                write!(f, "must be {} lowercase hex digits", l.join(" or "))
            }
            Violation::NotOneOf(words) => {
                let w: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
                write!(f, "must be {}", w.join(" or "))
            }
            Violation::OutOfRange { min, max } => write!(f, "out of range {min}..={max}"),
            Violation::WrongType(t) => write!(f, "value must be of type {}", t.wire_name()),
        }
    }
}

impl Field {
    /// Check a string value against this field's limit.
    pub fn check_text(&self, value: &str) -> Result<(), Violation> {
        match self.limit {
            Limit::Text { max_bytes } => {
                if value.len() > max_bytes {
                    Err(Violation::TooLong { max_bytes })
                } else if value.chars().any(forbidden_char) {
                    Err(Violation::ForbiddenChar)
                } else {
                    Ok(())
                }
            }
            Limit::Hex { lengths } => {
                let hex = value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if hex && lengths.contains(&value.len()) {
                    Ok(())
                } else {
                    Err(Violation::NotHex { lengths })
                }
            }
            Limit::OneOf(words) => {
                if words.contains(&value) {
                    Ok(())
                } else {
                    Err(Violation::NotOneOf(words))
                }
            }
            Limit::Count { .. } => Err(Violation::WrongType(JsonType::Int)),
        }
    }

    /// Check an integer value against this field's limit.
    pub fn check_count(&self, value: u64) -> Result<(), Violation> {
        match self.limit {
            Limit::Count { min, max } if (min..=max).contains(&value) => Ok(()),
            Limit::Count { min, max } => Err(Violation::OutOfRange { min, max }),
            _ => Err(Violation::WrongType(JsonType::String)),
        }
    }

    /// Make a text value acceptable, the sender's side of [`check_text`]:
    /// tabs, newlines and other controls or separators become a space,
    /// bidirectional formatting characters are dropped, and what is left is
    /// cut at a character boundary to the byte limit. `None` when the field
    /// has no free-text form that could be fitted (hashes, words, counts):
    /// such a value is left out instead.
    ///
    /// [`check_text`]: Field::check_text
    pub fn fit_text<'a>(&self, value: &'a str) -> Option<Cow<'a, str>> {
        match self.limit {
            Limit::Text { max_bytes } => {
                let mut out: Cow<str> = if value.chars().any(forbidden_char) {
                    Cow::Owned(
                        value
                            .chars()
                            .filter_map(|c| match c {
                                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                                    Some(' ')
                                }
                                c if forbidden_char(c) => None,
                                c => Some(c),
                            })
                            .collect(),
                    )
                } else {
                    Cow::Borrowed(value)
                };
                if out.len() > max_bytes {
                    let mut end = max_bytes;
                    while !out.is_char_boundary(end) {
                        end -= 1;
                    }
                    out = Cow::Owned(out[..end].to_owned());
                }
                Some(out)
            }
            _ => self.check_text(value).ok().map(|()| Cow::Borrowed(value)),
        }
    }
}

/// Lowercase hex SHA-256 of `data`: the audit chain's `prev` and
/// `body_sha256`, and the collector's hash of upstream's raw ids.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_field_is_typed_consistently() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(
                FIELDS[i + 1..].iter().all(|g| g.name != f.name),
                "{}",
                f.name
            );
            match f.limit {
                Limit::Count { .. } => {
                    assert_eq!(f.json_type, JsonType::Int, "{}", f.name);
                    assert_eq!(f.mode, Some("gauge"), "{}", f.name);
                }
                _ => {
                    assert_eq!(f.json_type, JsonType::String, "{}", f.name);
                    assert_eq!(f.mode, None, "{}", f.name);
                }
            }
            assert!(
                f.since >= UPSTREAM_SCHEMA && f.since <= SCHEMA,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn fitted_text_always_passes_the_check() {
        let f = field("program_version").unwrap();
        let long = "é".repeat(200);
        for raw in [
            "plain",
            "tab\there",
            "new\nline\r",
            "\u{202E}gpj.exe",
            "a\u{2028}b\u{2066}c\u{0085}d\u{7f}",
            long.as_str(),
        ] {
            let fitted = f.fit_text(raw).unwrap();
            assert_eq!(f.check_text(&fitted), Ok(()), "{raw:?} -> {fitted:?}");
        }
        assert_eq!(f.fit_text("tab\there").unwrap(), "tab here");
        assert_eq!(f.fit_text("\u{202E}abc").unwrap(), "abc");
        let cut = f.fit_text(&long).unwrap();
        assert_eq!(cut.len(), 256);
        assert!(long.starts_with(cut.as_ref()));
    }

    #[test]
    fn limits_refuse_what_they_describe() {
        let name = field("program_name").unwrap();
        assert_eq!(
            name.check_text(&"x".repeat(257)),
            Err(Violation::TooLong { max_bytes: 256 })
        );
        assert_eq!(name.check_text("a\u{202E}b"), Err(Violation::ForbiddenChar));
        assert_eq!(name.check_text("a\u{2028}b"), Err(Violation::ForbiddenChar));
        assert_eq!(name.check_text("a\u{9b}b"), Err(Violation::ForbiddenChar));
        assert!(name
            .check_text("Debian GNU/Linux 12 (bookworm) – ü")
            .is_ok());
        let hash = field("machine_id_hash").unwrap();
        assert!(hash.check_text(&"a".repeat(32)).is_ok());
        assert!(hash.check_text(&"a".repeat(64)).is_ok());
        assert!(hash.check_text(&"A".repeat(32)).is_err());
        assert!(hash.check_text(&"a".repeat(40)).is_err());
        assert_eq!(hash.fit_text("nothex"), None);
        let users = field("usercnt_active").unwrap();
        assert!(users.check_count(MAX_COUNT).is_ok());
        assert!(users.check_count(MAX_COUNT + 1).is_err());
    }
}
