//! Signed receipts: what the collector answers for every report it stored
//! (`stored`) and every deletion it carried out (`deleted`), and how either
//! end checks one. Ed25519 through ring; no I/O here: the collector keeps
//! its key pair, the daemon the published public key.
//!
//! A receipt answers with JSON,
//! `{"receipt":{"kind":K,"uid":U,"body_sha256":H,"time":T,"key_id":I},"sig":HEX}`,
//! and the signature covers [`Receipt::message`]: the fields one per line
//! after a fixed context string, so no JSON canonicalisation is needed to
//! check it and a receipt for one purpose can never pass for another.

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::sha256_hex;

/// How the collector's public key is written where the vendor publishes it
/// and in `surveyclient_collector_key`: this prefix, then 64 hex digits.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// The first line of every signed message.
const CONTEXT: &str = "surveyd-receipt-v1";
/// A receipt is a few hundred bytes; anything longer is not one.
pub const MAX_RECEIPT_BYTES: usize = 4096;

/// The collector's published key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// `ed25519:` followed by 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let hex_part = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            format!("an Ed25519 public key starts with {PUBLIC_KEY_PREFIX:?}, then 64 hex digits")
        })?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut key).map_err(|_| {
            "an Ed25519 public key has 64 hex digits after \"ed25519:\"".to_string()
        })?;
        Ok(PublicKey(key))
    }

    pub fn from_key_pair(pair: &Ed25519KeyPair) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(pair.public_key().as_ref());
        PublicKey(key)
    }

    /// The first 16 hex digits of the SHA-256 of the key's 32 bytes: names
    /// the key in every receipt, so a rotated key is told apart at a glance.
    pub fn key_id(&self) -> String {
        sha256_hex(&self.0)[..16].to_string()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0))
    }
}

/// What a receipt attests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The report whose body hashes to `body_sha256` is stored as row `uid`.
    Stored,
    /// Row `uid` is gone, at the request whose body hashes to `body_sha256`.
    Deleted,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Stored => "stored",
            Kind::Deleted => "deleted",
        }
    }
}

/// The signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub kind: Kind,
    pub uid: String,
    pub body_sha256: String,
    /// Unix seconds (UTC) at which the collector stored or deleted the row.
    pub time: u64,
    pub key_id: String,
}

impl Receipt {
    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{CONTEXT}\n{}\n{}\n{}\n{}\n{}",
            self.kind.word(),
            self.uid,
            self.body_sha256,
            self.time,
            self.key_id
        )
        .into_bytes()
    }
}

/// A receipt and its signature, as the collector answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub receipt: Receipt,
    /// 128 hex digits: the Ed25519 signature over [`Receipt::message`].
    pub sig: String,
}

/// Why a receipt does not prove what it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No receipt at all where one was required.
    Missing,
    /// Not a receipt: not JSON of the right shape, or too long.
    Malformed(String),
    /// Signed by another key than the one configured.
    OtherKey { key_id: String },
    /// The signature does not verify under the configured key.
    BadSignature,
    /// A valid receipt, but for something else: another kind, another body
    /// (a replay) or another installation.
    Mismatch(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => f.write_str("the collector answered without a receipt"),
            Problem::Malformed(why) => write!(f, "the receipt is malformed: {why}"),
            Problem::OtherKey { key_id } => write!(
                f,
                "the receipt is signed by key {key_id}, not by the configured surveyclient_collector_key"
            ),
            Problem::BadSignature => f.write_str("the receipt's signature does not verify"),
            Problem::Mismatch(why) => write!(f, "the receipt is for something else: {why}"),
        }
    }
}

impl Signed {
    /// Signs `receipt` (the collector's side). `receipt.key_id` must be
    /// the pair's key id; [`Signed::sign`] sets it.
    pub fn sign(
        pair: &Ed25519KeyPair,
        kind: Kind,
        uid: &str,
        body_sha256: &str,
        time: u64,
    ) -> Signed {
        let receipt = Receipt {
            kind,
            uid: uid.to_string(),
            body_sha256: body_sha256.to_string(),
            time,
            key_id: PublicKey::from_key_pair(pair).key_id(),
        };
        let sig = hex::encode(pair.sign(&receipt.message()).as_ref());
        Signed { receipt, sig }
    }

    /// A collector's answer body, bounded: an empty body (upstream's
    /// collector, or an older surveyd-collector) is `Ok(None)`.
    pub fn parse(body: &[u8]) -> Result<Option<Signed>, Problem> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if body.len() > MAX_RECEIPT_BYTES {
            return Err(Problem::Malformed(format!(
                "{} bytes, more than the {MAX_RECEIPT_BYTES} a receipt may have",
                body.len()
            )));
        }
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| Problem::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a receipt always serialises")
    }

    /// Checks the signature under `key` and that the receipt attests `kind`
    /// for the body hashing to `body_sha256` (and for `uid`, when the
    /// sender knows it).
    pub fn verify(
        &self,
        key: &PublicKey,
        kind: Kind,
        body_sha256: &str,
        uid: Option<&str>,
    ) -> Result<(), Problem> {
        if self.receipt.key_id != key.key_id() {
            return Err(Problem::OtherKey {
                key_id: self.receipt.key_id.clone(),
            });
        }
        let sig = hex::decode(&self.sig).map_err(|_| Problem::BadSignature)?;
        UnparsedPublicKey::new(&signature::ED25519, key.0)
            .verify(&self.receipt.message(), &sig)
            .map_err(|_| Problem::BadSignature)?;
        if self.receipt.kind != kind {
            return Err(Problem::Mismatch(format!(
                "a {} receipt where a {} one was expected",
                self.receipt.kind.word(),
                kind.word()
            )));
        }
        if self.receipt.body_sha256 != body_sha256 {
            return Err(Problem::Mismatch(format!(
                "it names body {}, but the body sent hashes to {body_sha256}",
                self.receipt.body_sha256
            )));
        }
        if let Some(uid) = uid {
            if self.receipt.uid != uid {
                return Err(Problem::Mismatch(format!(
                    "it names installation {}, not {uid}",
                    self.receipt.uid
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    const BODY: &str = "4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a";
    const UID: &str = "ef2d127de37b942baad06145e54b0c619a1f22327b2ebbcfbec78f5564afe39d";

    #[test]
    fn a_signed_receipt_verifies_under_its_key_and_round_trips_as_json() {
        let pair = pair();
        let key = PublicKey::from_key_pair(&pair);
        let signed = Signed::sign(&pair, Kind::Stored, UID, BODY, 1_764_633_600);
        let parsed = Signed::parse(signed.to_json().as_bytes()).unwrap().unwrap();
        assert_eq!(parsed, signed);
        assert_eq!(parsed.verify(&key, Kind::Stored, BODY, Some(UID)), Ok(()));
        assert_eq!(PublicKey::parse(&key.to_string()), Ok(key));
    }

    #[test]
    fn forged_replayed_or_foreign_receipts_fail() {
        let pair = pair();
        let key = PublicKey::from_key_pair(&pair);
        let signed = Signed::sign(&pair, Kind::Stored, UID, BODY, 1_764_633_600);

        let mut forged = signed.clone();
        forged.receipt.time += 1;
        assert_eq!(
            forged.verify(&key, Kind::Stored, BODY, Some(UID)),
            Err(Problem::BadSignature)
        );

        let other_body = "0".repeat(64);
        assert!(matches!(
            signed.verify(&key, Kind::Stored, &other_body, Some(UID)),
            Err(Problem::Mismatch(_))
        ));
        assert!(matches!(
            signed.verify(&key, Kind::Deleted, BODY, Some(UID)),
            Err(Problem::Mismatch(_))
        ));

        let other_key = PublicKey::from_key_pair(&super::tests::pair());
        assert!(matches!(
            signed.verify(&other_key, Kind::Stored, BODY, Some(UID)),
            Err(Problem::OtherKey { .. })
        ));
    }

    #[test]
    fn an_empty_answer_has_no_receipt_and_junk_is_malformed() {
        assert_eq!(Signed::parse(b""), Ok(None));
        assert_eq!(Signed::parse(b" \n"), Ok(None));
        assert!(matches!(
            Signed::parse(b"{\"receipt\":1}"),
            Err(Problem::Malformed(_))
        ));
        let long = vec![b'x'; MAX_RECEIPT_BYTES + 1];
        assert!(matches!(Signed::parse(&long), Err(Problem::Malformed(_))));
    }

    #[test]
    fn public_keys_must_be_prefixed_hex() {
        assert!(PublicKey::parse("00".repeat(32).as_str()).is_err());
        assert!(PublicKey::parse(&format!("ed25519:{}", "zz".repeat(32))).is_err());
        assert!(PublicKey::parse(&format!("ed25519:{}", "ab".repeat(31))).is_err());
        assert!(PublicKey::parse(&format!(" ed25519:{}\n", "AB".repeat(32))).is_ok());
    }
}
