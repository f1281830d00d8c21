//! The raw identifiers of the scratch installation, which must never leave
//! it, and the hashes that may.

use sha2::{Digest, Sha256};

/// The raw machine id of the scratch installation: it must never leave it.
pub const RAW_MACHINE_ID: &str = "5e1f0c2a9b8d47e6a3c4b2d1f0e9a8b7";
/// A raw server GUID configured statically: it must never leave either.
pub const RAW_GUID: &str = "C0FFEE00DEADBEEF0123456789ABCDEF";
/// The default application id of the `app` scheme.
pub const APP_ID: &str = "187f157428b74898a629521121fa9f49";

pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(bytes.as_ref()))
}

/// The collector's `uid` of an installation: one row per machine, server
/// and program.
pub fn installation_uid(machine_hash: &str, guid_hash: &str) -> String {
    sha256_hex(format!("{machine_hash}\n{guid_hash}\nkopano-server"))
}

/// `sd_id128_get_app_specific()` as systemd computes it, for checking
/// what surveyd sent.
pub fn systemd_app_specific(id_hex: &str, app_id_hex: &str) -> String {
    use hmac::{Hmac, Mac};
    let key = hex::decode(id_hex.replace('-', "")).unwrap();
    let app = hex::decode(app_id_hex).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&app);
    let mut id = mac.finalize().into_bytes()[..16].to_vec();
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    hex::encode(id)
}

/// Fails if any form of a raw identifier occurs in `bytes`.
pub fn assert_no_raw_ids(what: &str, bytes: &[u8]) {
    for raw in [RAW_MACHINE_ID, RAW_GUID] {
        assert_no_id(what, bytes, raw, "a raw identifier");
    }
}

/// Fails if the 128-bit id `id_hex` (32 hex digits) occurs in `bytes`, in
/// either case, plain or in UUID form; `name` says what it is.
pub fn assert_no_id(what: &str, bytes: &[u8], id_hex: &str, name: &str) {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let id = id_hex.to_ascii_lowercase();
    let dashed = format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    );
    assert!(!text.contains(&id), "{what} contains {name}");
    assert!(
        !text.contains(&dashed),
        "{what} contains {name} (UUID form)"
    );
}
