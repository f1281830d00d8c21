//! The wire contract both programs speak, in one place: the submit path and
//! headers, and for every payload field its name, JSON type, mode,
//! description, limits and the payload version that introduced it. No I/O:
//! the daemon's payload builder fits its values to these limits before
//! anything is audited, the collector's ingest refuses what breaks them,
//! and the store keeps one column per stored field, so the two ends cannot
//! drift apart.

use std::borrow::Cow;

pub mod receipt;

/// The payload `version` this contract describes.
pub const PAYLOAD_VERSION: u32 = 2;
/// Where every client, upstream or surveyd, posts its report.
pub const SUBMIT_PATH: &str = "/api/stats/v1/submit";
/// Upstream's marker header; the collector refuses a request without it.
pub const STATS_REQUEST_HEADER: &str = "X-Kopano-Stats-Request";
pub const STATS_REQUEST_VALUE: &str = "1";
pub const CONTENT_TYPE: &str = "application/json";
/// Where an installation asks for its row to be deleted, proving with its
/// deletion secret that it is that installation:
/// `{"uid":HEX64,"secret":HEX64}`, answered with a signed `deleted` receipt.
pub const DELETE_PATH: &str = "/api/stats/v1/delete";

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
    /// The payload version that introduced the field.
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
/// How a client hashed the identifiers it sends: the `id_scheme` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdScheme {
    /// systemd's application-specific id (HMAC-SHA256, UUID v4 bits).
    App,
    /// SHA-256 of the identifier as upstream kopano-server would send it,
    /// the same value the collector computes from upstream's raw ids.
    Sha256,
}

impl IdScheme {
    pub const ALL: [IdScheme; 2] = [IdScheme::App, IdScheme::Sha256];

    /// The value of the `id_scheme` field.
    pub const fn wire_name(self) -> &'static str {
        match self {
            IdScheme::App => "app-v1",
            IdScheme::Sha256 => "sha256",
        }
    }

    pub fn from_wire_name(name: &str) -> Option<IdScheme> {
        IdScheme::ALL.into_iter().find(|s| s.wire_name() == name)
    }

    /// surveyd's `surveyclient_id_hash` value choosing this scheme.
    pub const fn config_name(self) -> &'static str {
        match self {
            IdScheme::App => "app",
            IdScheme::Sha256 => "sha256",
        }
    }

    /// How many lowercase hex digits an id hashed this way has.
    pub const fn hex_len(self) -> usize {
        match self {
            IdScheme::App => 32,
            IdScheme::Sha256 => 64,
        }
    }

    /// The bit the collector sets in a row's `flags` for this scheme.
    pub const fn flag(self) -> i64 {
        match self {
            IdScheme::App => FLAG_ID_APP_V1,
            IdScheme::Sha256 => FLAG_ID_SHA256,
        }
    }
}

// The bits of the stored `flags` column: how a row's ids came to be and
// which were missing, so readers of the table know what is comparable.

/// The report came from upstream kopano-server: `machine_id`/`server_guid`
/// arrived raw and were replaced by their SHA-256 on ingest.
pub const FLAG_UPSTREAM_RAW_IDS: i64 = 1;
/// surveyd `id_scheme = app-v1`: the id columns hold systemd-style
/// app-specific ids (32 hex), not comparable with SHA-256 ones.
pub const FLAG_ID_APP_V1: i64 = 2;
/// surveyd `id_scheme = sha256`: the id columns hold SHA-256 of the raw ids
/// computed by the client, the same values upstream reports produce here.
pub const FLAG_ID_SHA256: i64 = 4;
/// The report carried no machine id (the client had none, or omitted it).
pub const FLAG_NO_MACHINE_ID: i64 = 8;
/// The report carried no server GUID (or the Go client's placeholder).
pub const FLAG_NO_SERVER_GUID: i64 = 16;

const ID_HASH: Limit = Limit::Hex {
    lengths: &[IdScheme::App.hex_len(), IdScheme::Sha256.hex_len()],
};
const ID_SCHEMES: &[&str] = &[IdScheme::App.wire_name(), IdScheme::Sha256.wire_name()];

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

// Every field of the version-2 payload, each name written once: code that
// needs a field refers to its constant. Counts carry upstream's own
// descriptions.

pub const MACHINE_ID_HASH: Field = Field {
    column: Some("machine_id_sha256"),
    limit: ID_HASH,
    ..text(
        "machine_id_hash",
        "Machine ID, hashed on the sending machine",
        Sender::Surveyd,
    )
};
pub const SERVER_GUID_HASH: Field = Field {
    column: Some("server_guid_sha256"),
    limit: ID_HASH,
    ..text(
        "server_guid_hash",
        "Server GUID, hashed on the sending machine",
        Sender::Surveyd,
    )
};
pub const ID_SCHEME: Field = Field {
    column: None,
    limit: Limit::OneOf(ID_SCHEMES),
    ..text("id_scheme", "How the IDs were hashed", Sender::Surveyd)
};
/// Upstream's raw machine id; stored hashed, in [`MACHINE_ID_HASH`]'s column.
pub const MACHINE_ID: Field = Field {
    column: None,
    ..text("machine_id", "Machine ID", Sender::Upstream)
};
/// Upstream's raw GUID; stored hashed, in [`SERVER_GUID_HASH`]'s column.
pub const SERVER_GUID: Field = Field {
    column: None,
    ..text("server_guid", "Server GUID", Sender::Upstream)
};
pub const PROGRAM_NAME: Field = text("program_name", "Program name", Sender::Both);
pub const PROGRAM_VERSION: Field = text("program_version", "Program version", Sender::Both);
pub const OSRELEASE: Field = text("osrelease", "OS release", Sender::Both);
pub const UTSNAME: Field = text(
    "utsname",
    "Kernel name, architecture and release",
    Sender::Both,
);
pub const USERPLUGIN: Field = text("userplugin", "User plugin", Sender::Both);
pub const ATTACHMENT_STORAGE: Field =
    text("attachment_storage", "Attachment storage", Sender::Both);
pub const USERCNT_ACTIVE: Field = count("usercnt_active", "Number of active users");
pub const USERCNT_CONTACT: Field = count("usercnt_contact", "Number of contacts");
pub const USERCNT_EQUIPMENT: Field = count("usercnt_equipment", "Number of equipment");
pub const USERCNT_NA_USER: Field = count("usercnt_na_user", "Number of non-active users");
pub const USERCNT_NONACTIVE: Field =
    count("usercnt_nonactive", "Number of total non-active objects");
pub const USERCNT_ROOM: Field = count("usercnt_room", "Number of rooms");

/// Every field of the version-2 payload.
pub const FIELDS: &[Field] = &[
    MACHINE_ID_HASH,
    SERVER_GUID_HASH,
    ID_SCHEME,
    MACHINE_ID,
    SERVER_GUID,
    PROGRAM_NAME,
    PROGRAM_VERSION,
    OSRELEASE,
    UTSNAME,
    USERPLUGIN,
    ATTACHMENT_STORAGE,
    USERCNT_ACTIVE,
    USERCNT_CONTACT,
    USERCNT_EQUIPMENT,
    USERCNT_NA_USER,
    USERCNT_NONACTIVE,
    USERCNT_ROOM,
];

const fn surveyd_field_count() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < FIELDS.len() {
        if !matches!(FIELDS[i].sender, Sender::Upstream) {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The names of every field surveyd can send (all but upstream's raw ids),
/// in [`FIELDS`] order.
pub const SURVEYD_FIELD_NAMES: [&str; surveyd_field_count()] = {
    let mut names = [""; surveyd_field_count()];
    let (mut i, mut n) = (0, 0);
    while i < FIELDS.len() {
        if !matches!(FIELDS[i].sender, Sender::Upstream) {
            names[n] = FIELDS[i].name;
            n += 1;
        }
        i += 1;
    }
    names
};

/// A column of the collector's installation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The installation key the collector derives from the ids.
    Uid,
    /// When the installation first reported (Unix seconds).
    FirstSeen,
    /// When it last reported (Unix seconds).
    LastUpdate,
    /// The `FLAG_*` bits.
    Flags,
    /// What this payload field held, as validated.
    Field(&'static Field),
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Uid => "uid",
            Column::FirstSeen => "first_seen",
            Column::LastUpdate => "last_update",
            Column::Flags => "flags",
            Column::Field(f) => f.column.expect("TABLE lists only fields with a column"),
        }
    }
}

/// The installation table's columns in table order, the order `report`
/// shows them in: the seed's columns first, then the ones added since. The
/// store's migrations must create exactly these (a test holds them to it).
pub const TABLE: &[Column] = &[
    Column::Uid,
    Column::Field(&MACHINE_ID_HASH),
    Column::Field(&SERVER_GUID_HASH),
    Column::FirstSeen,
    Column::LastUpdate,
    Column::Field(&USERCNT_ACTIVE),
    Column::Field(&USERCNT_CONTACT),
    Column::Field(&USERCNT_EQUIPMENT),
    Column::Field(&USERCNT_NA_USER),
    Column::Field(&USERCNT_NONACTIVE),
    Column::Field(&USERPLUGIN),
    Column::Field(&OSRELEASE),
    Column::Field(&UTSNAME),
    Column::Field(&PROGRAM_NAME),
    Column::Field(&PROGRAM_VERSION),
    Column::Flags,
    Column::Field(&USERCNT_ROOM),
    Column::Field(&ATTACHMENT_STORAGE),
];

/// The payload fields the table stores, in table order: what position `i`
/// of a stored row's field values holds.
pub fn stored_fields() -> impl Iterator<Item = &'static Field> {
    TABLE.iter().filter_map(|c| match c {
        Column::Field(f) => Some(*f),
        _ => None,
    })
}

/// Where `field`'s value sits among [`stored_fields`], if it is stored.
pub fn stored_index(field: &Field) -> Option<usize> {
    stored_fields().position(|f| f.name == field.name)
}

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

/// What a report carries so that only its installation can later have its
/// row deleted: the SHA-256 of the deletion secret (the secret itself is
/// revealed only in the deletion request).
pub fn deletion_commitment(secret: &[u8]) -> String {
    sha256_hex(secret)
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
            assert!(f.since <= PAYLOAD_VERSION);
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

    #[test]
    fn the_table_stores_every_field_surveyd_sends_once() {
        let names: Vec<&str> = TABLE.iter().map(|c| c.name()).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(name), "{name} twice in TABLE");
        }
        for f in stored_fields() {
            assert_eq!(
                field(f.name),
                Some(f),
                "{} is stored but not in FIELDS",
                f.name
            );
        }
        for name in SURVEYD_FIELD_NAMES {
            let f = field(name).unwrap();
            assert!(
                f.name == ID_SCHEME.name || stored_index(f).is_some(),
                "{name} is sent but the collector does not store it"
            );
        }
        for scheme in IdScheme::ALL {
            assert_eq!(IdScheme::from_wire_name(scheme.wire_name()), Some(scheme));
            assert!(MACHINE_ID_HASH
                .check_text(&"a".repeat(scheme.hex_len()))
                .is_ok());
        }
    }
}
