//! Privacy: how identifiers are hashed on this machine before anything
//! leaves it, and how counts are coarsened when the admin asks for buckets.
//!
//! The `app` scheme is bit-for-bit systemd's
//! `sd_id128_get_machine_app_specific()`, so an admin can reproduce the value
//! sent with `systemd-id128 machine-id --app-specific=APP_ID`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Which hashing scheme turns identifiers into what is sent: the wire
/// contract's, so the daemon's choice and the collector's reading of it are
/// one type.
pub use crate::wire::IdScheme;

/// An identifier read from the machine. Its raw value is only reachable
/// through [`RawId::hash`]: `Debug` is redacted so a stray `{:?}` in a log
/// line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawId(String);

impl std::fmt::Debug for RawId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawId(<redacted>)")
    }
}

/// Why a machine id was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineIdProblem {
    Empty,
    Uninitialized,
    Malformed,
    /// All zeros: systemd refuses it as a machine id (SD_ID128_NULL), and
    /// every machine with it would send the same hash.
    Null,
}

impl std::fmt::Display for MachineIdProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MachineIdProblem::Empty => "it is empty",
            MachineIdProblem::Uninitialized => {
                "it says \"uninitialized\" (first boot not finished)"
            }
            MachineIdProblem::Malformed => "it is not 32 hexadecimal digits",
            MachineIdProblem::Null => "it is all zeros, the null id that systemd refuses",
        })
    }
}

impl RawId {
    /// A machine id as `/etc/machine-id` holds it: 32 lowercase hex digits
    /// and a newline. Anything else is refused rather than hashed, so an
    /// empty or placeholder id never turns into a "valid" hash that many
    /// machines would share.
    pub fn machine_id(contents: &str) -> Result<RawId, MachineIdProblem> {
        let id = contents.trim();
        if id.is_empty() {
            return Err(MachineIdProblem::Empty);
        }
        if id == "uninitialized" {
            return Err(MachineIdProblem::Uninitialized);
        }
        match parse_id128(id) {
            None => return Err(MachineIdProblem::Malformed),
            Some(_) if id.contains('-') => return Err(MachineIdProblem::Malformed),
            Some(bytes) if bytes == [0; 16] => return Err(MachineIdProblem::Null),
            Some(_) => {}
        }
        Ok(RawId(id.to_ascii_lowercase()))
    }

    /// A server GUID: either 32 hex digits (dashes allowed, as Kopano
    /// stores it) or any other non-empty string.
    pub fn server_guid(value: &str) -> Option<RawId> {
        let value = value.trim();
        (!value.is_empty()).then(|| RawId(value.to_string()))
    }

    /// The raw value, for the one place that must compare it: tests.
    #[cfg(test)]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The form that leaves the machine under `scheme`.
    pub fn hash(&self, scheme: IdScheme, app_id: &[u8; 16]) -> String {
        match scheme {
            IdScheme::App => match parse_id128(&self.0) {
                Some(key) => hex::encode(app_specific_id(&key, app_id)),
                None => hex::encode(app_specific_id(self.0.as_bytes(), app_id)),
            },
            IdScheme::Sha256 => hex::encode(Sha256::digest(self.upstream_form().as_bytes())),
        }
    }

    /// The string upstream kopano-server would have sent: the machine id as
    /// read, a binary GUID as 32 uppercase hex digits.
    fn upstream_form(&self) -> String {
        match parse_id128(&self.0) {
            Some(bytes) if self.0.len() != 32 || self.0.bytes().any(|b| b.is_ascii_uppercase()) => {
                hex::encode_upper(bytes)
            }
            _ => self.0.clone(),
        }
    }
}

/// The application id deletion secrets are derived with. It differs from
/// every `surveyclient_app_id`, so the secret cannot be computed from
/// anything a report carries.
pub const DELETION_APP_ID: [u8; 16] = [
    0x5a, 0x1d, 0x0c, 0x8e, 0x3b, 0x7f, 0x4e, 0x2a, 0x9c, 0x6d, 0x1f, 0x0e, 0x8b, 0x4a, 0x7c, 0x3d,
];

impl RawId {
    /// The installation's deletion secret: HMAC-SHA256 keyed with the
    /// machine id's 16 bytes over [`DELETION_APP_ID`], all 32 bytes (no
    /// truncation: it is a secret, not an id). Only a deletion request ever
    /// reveals it; reports carry its [`crate::wire::deletion_commitment`].
    pub fn deletion_secret(&self) -> [u8; 32] {
        let key = parse_id128(&self.0);
        let key: &[u8] = match &key {
            Some(bytes) => bytes,
            None => self.0.as_bytes(),
        };
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
        mac.update(&DELETION_APP_ID);
        mac.finalize().into_bytes().into()
    }
}

/// 16 bytes from 32 hex digits, dashes ignored (the UUID form).
pub fn parse_id128(text: &str) -> Option<[u8; 16]> {
    let digits: String = text.chars().filter(|&c| c != '-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(&digits, &mut out).ok()?;
    Some(out)
}

/// systemd's `sd_id128_get_app_specific()`: HMAC-SHA256 keyed with the base
/// id over the application id, truncated to 16 bytes, then marked as a
/// random (version 4, RFC 4122 variant) UUID.
pub fn app_specific_id(base: &[u8], app_id: &[u8; 16]) -> [u8; 16] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(base).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(app_id);
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// A count as sent with `surveyclient_bucket_counts`: 0 to 9 exact, larger
/// numbers rounded down to two significant digits (123 → 120, 4567 → 4500),
/// so the value names the lower edge of its bucket.
pub fn bucket_count(n: u64) -> u64 {
    if n < 10 {
        return n;
    }
    let mut scale = 1;
    while n / scale >= 100 {
        scale *= 10;
    }
    n / scale * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: [u8; 16] = [
        0x18, 0x7f, 0x15, 0x74, 0x28, 0xb7, 0x48, 0x98, 0xa6, 0x29, 0x52, 0x11, 0x21, 0xfa, 0x9f,
        0x49,
    ];

    #[test]
    fn app_scheme_sets_uuid_v4_bits_and_differs_from_raw_id() {
        let id = RawId::machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
        let hashed = id.hash(IdScheme::App, &APP);
        assert_eq!(hashed.len(), 32);
        assert_ne!(hashed, id.expose());
        assert_eq!(&hashed[12..13], "4", "version nibble");
        assert!(
            matches!(&hashed[16..17], "8" | "9" | "a" | "b"),
            "variant bits"
        );
    }

    #[test]
    fn app_scheme_matches_a_value_computed_by_systemd() {
        // `systemd-id128 machine-id --app-specific=187f157428b74898a629521121fa9f49`
        // on a machine whose /etc/machine-id is 3d1219c7c4c5404aaa1f6d2a48adfda4.
        let id = RawId::machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap();
        assert_eq!(
            id.hash(IdScheme::App, &APP),
            "89486aec0f674e60a910ceb32e2e2afc"
        );
    }

    #[test]
    fn sha256_scheme_hashes_the_string_upstream_sends() {
        let id = RawId::machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
        assert_eq!(
            id.hash(IdScheme::Sha256, &APP),
            hex::encode(Sha256::digest(b"3d1219c7c4c5404aaa1f6d2a48adfda4"))
        );
        let guid = RawId::server_guid("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9").unwrap();
        assert_eq!(
            guid.hash(IdScheme::Sha256, &APP),
            hex::encode(Sha256::digest(b"0A1B2C3D4E5F60718293A4B5C6D7E8F9"))
        );
    }

    #[test]
    fn guid_with_dashes_hashes_like_its_bytes() {
        let dashed = RawId::server_guid("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9").unwrap();
        let plain = RawId::server_guid("0A1B2C3D4E5F60718293A4B5C6D7E8F9").unwrap();
        assert_eq!(
            dashed.hash(IdScheme::App, &APP),
            plain.hash(IdScheme::App, &APP)
        );
        let text = RawId::server_guid("not-a-guid").unwrap();
        assert_eq!(
            text.hash(IdScheme::App, &APP),
            hex::encode(app_specific_id(b"not-a-guid", &APP))
        );
    }

    #[test]
    fn unusable_machine_ids_are_refused_not_hashed() {
        assert_eq!(RawId::machine_id(""), Err(MachineIdProblem::Empty));
        assert_eq!(RawId::machine_id(" \n"), Err(MachineIdProblem::Empty));
        assert_eq!(
            RawId::machine_id("uninitialized\n"),
            Err(MachineIdProblem::Uninitialized)
        );
        assert_eq!(RawId::machine_id("xyz"), Err(MachineIdProblem::Malformed));
        assert_eq!(
            RawId::machine_id("00000000000000000000000000000000\n"),
            Err(MachineIdProblem::Null)
        );
        assert!(RawId::server_guid("  ").is_none());
    }

    #[test]
    fn debug_output_never_shows_the_raw_id() {
        let id = RawId::machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap();
        assert!(!format!("{id:?}").contains("3d1219c7"));
    }

    #[test]
    fn buckets_keep_small_counts_and_two_significant_digits() {
        let cases = [
            (0, 0),
            (7, 7),
            (9, 9),
            (10, 10),
            (99, 99),
            (100, 100),
            (123, 120),
            (4567, 4500),
            (1_000_001, 1_000_000),
        ];
        for (n, want) in cases {
            assert_eq!(bucket_count(n), want, "bucket of {n}");
        }
    }

    #[test]
    fn the_deletion_secret_is_stable_distinct_from_the_ids_and_committed_by_its_hash() {
        let id = RawId::machine_id("4b4b3c3e7e0d4b6e9f2a1c0d8e7f6a5b\n").unwrap();
        let secret = id.deletion_secret();
        assert_eq!(secret, id.deletion_secret());
        let other = RawId::machine_id("5b4b3c3e7e0d4b6e9f2a1c0d8e7f6a5b").unwrap();
        assert_ne!(secret, other.deletion_secret());
        let commitment = crate::wire::deletion_commitment(&secret);
        assert_eq!(commitment.len(), 64);
        assert_ne!(commitment, hex::encode(secret));
    }
}
