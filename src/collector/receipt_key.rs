//! The collector's receipt key: the Ed25519 key pair that signs every
//! receipt (`crate::wire::receipt` owns the format), kept as PKCS#8 in one
//! file (`receipt_key`, default [`DEFAULT_PATH`]). `serve` generates it on
//! first start; `key --generate` does the same for provisioning; every
//! other use only reads it.
//!
//! The file is the collector's identity towards every daemon that checks
//! receipts, so it is read as a secret must be: never through a link,
//! regular files only, bounded, and refused when anyone but its owner may
//! read it.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;

use crate::safe_fs;
use crate::sys::exit;
use crate::wire::receipt::{Kind, PublicKey, Signed};

pub const DEFAULT_PATH: &str = "/var/lib/surveyd-collector/receipt-key.pk8";
/// An Ed25519 PKCS#8 document is 85 bytes; anything much longer is not one.
const MAX_KEY_BYTES: u64 = 4096;

/// The loaded key pair and its public half.
pub struct ReceiptKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl ReceiptKey {
    fn from_pkcs8(path: &Path, pkcs8: &[u8]) -> Result<ReceiptKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| {
            KeyError::Invalid(format!(
                "{}: is not an Ed25519 PKCS#8 key ({e}); move it away and run \
                 `surveyd-collector key --generate` for a new one",
                path.display()
            ))
        })?;
        let public = PublicKey::from_key_pair(&pair);
        Ok(ReceiptKey { pair, public })
    }

    /// `ed25519:` and 64 hex digits: what daemons configure as
    /// `surveyclient_collector_key`.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, kind: Kind, uid: &str, body_sha256: &str, time: u64) -> Signed {
        Signed::sign(&self.pair, kind, uid, body_sha256, time)
    }
}

/// Why there is no usable key; [`KeyError::exit_code`] maps it to sysexits.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0}: no receipt key yet; `surveyd-collector serve` creates one on first start, \
         `surveyd-collector key --generate` creates one now"
    )]
    Absent(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Create(String),
}

impl KeyError {
    pub fn exit_code(&self) -> u8 {
        match self {
            KeyError::Absent(_) | KeyError::Invalid(_) => exit::CONFIG,
            KeyError::Create(_) => exit::CANTCREAT,
        }
    }
}

/// Read the key at `path`: a regular file (no link followed, no FIFO or
/// device), at most [`MAX_KEY_BYTES`], readable by its owner only.
pub fn load(path: &Path) -> Result<ReceiptKey, KeyError> {
    let file = safe_fs::open_regular(path).map_err(|e| {
        if e.is_not_found() {
            KeyError::Absent(path.to_owned())
        } else {
            KeyError::Invalid(e.to_string())
        }
    })?;
    let meta = file
        .metadata()
        .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
    if meta.mode() & 0o077 != 0 {
        return Err(KeyError::Invalid(format!(
            "{}: mode {:04o} lets other users read the receipt key; \
             `chmod 600 {0}` (and consider the key leaked: generate a new one)",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    let mut pkcs8 = Vec::new();
    file.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut pkcs8)
        .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
    if pkcs8.len() as u64 > MAX_KEY_BYTES {
        return Err(KeyError::Invalid(format!(
            "{}: is larger than the limit of {MAX_KEY_BYTES} bytes; not a receipt key",
            path.display()
        )));
    }
    ReceiptKey::from_pkcs8(path, &pkcs8)
}

/// Create a new key at `path`; an existing file (or link) there is an
/// error and is left alone.
pub fn generate(path: &Path) -> Result<ReceiptKey, KeyError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| KeyError::Create("the system random generator failed".into()))?;
    create_exclusively(path, pkcs8.as_ref()).map_err(|e| {
        KeyError::Create(if e.kind() == io::ErrorKind::AlreadyExists {
            format!(
                "{}: already exists; a key is never overwritten (to rotate, generate the \
                 new one under another name: see surveyd-collector(8))",
                path.display()
            )
        } else {
            format!("{}: cannot create the receipt key: {e}", path.display())
        })
    })?;
    ReceiptKey::from_pkcs8(path, pkcs8.as_ref())
}

/// [`load`], or on first start [`generate`]; `true` when it was generated.
/// Several collectors sharing one key file may start at once: whichever
/// creates it first wins, the others read that one.
pub fn load_or_generate(path: &Path) -> Result<(ReceiptKey, bool), KeyError> {
    match load(path) {
        Err(KeyError::Absent(_)) => match generate(path) {
            Ok(key) => Ok((key, true)),
            Err(KeyError::Create(_)) if path.exists() => load(path).map(|key| (key, false)),
            Err(e) => Err(e),
        },
        other => other.map(|key| (key, false)),
    }
}

/// Write `contents` to a temporary file (exclusive, 0600, no link
/// followed), fsync it, then link(2) it to `path`. link never follows
/// or replaces what is at `path`, so the key appears complete or not at
/// all, and a concurrent creator or a planted link makes this fail with
/// EEXIST instead of being overwritten or written through.
fn create_exclusively(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}", std::process::id()));
    let tmp = dir.join(name);
    // A leftover from a crash with our pid: remove_file does not follow
    // links, so this cannot touch another file.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    written?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_key_loads_back_with_the_same_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/receipt-key.pk8");
        let (made, generated) = load_or_generate(&path).unwrap();
        assert!(generated);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, generated) = load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(again.public(), made.public());
        assert!(matches!(generate(&path), Err(KeyError::Create(_))));
    }

    #[test]
    fn unsafe_or_foreign_files_are_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt-key.pk8");
        assert!(matches!(load(&path), Err(KeyError::Absent(_))));

        std::fs::write(&path, b"not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_or_generate(&path), Err(KeyError::Invalid(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");

        generate(&dir.path().join("good.pk8")).unwrap();
        let good = dir.path().join("good.pk8");
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&good).err().unwrap().to_string();
        assert!(e.contains("0640") && e.contains("chmod 600"), "{e}");

        let huge = dir.path().join("huge.pk8");
        std::fs::write(&huge, vec![0u8; 1 << 20]).unwrap();
        std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&huge).err().unwrap().to_string();
        assert!(e.contains("larger than the limit"), "{e}");

        let link = dir.path().join("link.pk8");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(matches!(load(&link), Err(KeyError::Invalid(_))));
        assert!(matches!(generate(&link), Err(KeyError::Create(_))));
    }
}
