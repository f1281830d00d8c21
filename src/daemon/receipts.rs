//! What a collector's answer proves: the signed receipt (format and
//! signature check in `crate::wire::receipt`) checked against what this
//! installation sent, under the keys in `surveyclient_collector_key`, and
//! the state that the audit log's `result` line records for it.
//!
//! Pure: the report path, `surveyd forget` and `surveyd audit verify` all
//! decide through [`check`] and [`verify`], so "valid" means the same
//! thing when a report is sent and when the log is re-checked years later.

use serde_json::Value;

use crate::wire::receipt::{Kind, Problem, PublicKey, Signed};

/// What the receipt of one answer amounts to, as `receipt_state` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No receipt came, and none was required (no key configured).
    None,
    /// A well-formed receipt came, but no key is configured to check it.
    Unchecked,
    /// It verifies under a configured key and names what was sent.
    Valid,
    /// No receipt came although a key is configured.
    Missing,
    /// Something came that is not a valid receipt for what was sent.
    Invalid,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::None => "none",
            State::Unchecked => "unchecked",
            State::Valid => "valid",
            State::Missing => "missing",
            State::Invalid => "invalid",
        }
    }

    pub fn from_word(word: &str) -> Option<State> {
        [
            State::None,
            State::Unchecked,
            State::Valid,
            State::Missing,
            State::Invalid,
        ]
        .into_iter()
        .find(|state| state.word() == word)
    }
}

/// One answer's receipt, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The receipt as the collector sent it, when it parsed.
    pub receipt: Option<Signed>,
    pub state: State,
    /// Why the state is `missing` or `invalid`.
    pub problem: Option<Problem>,
    /// A key is configured and the receipt does not prove delivery: the
    /// report (or deletion) counts as failed.
    pub fails: bool,
}

impl Checked {
    /// `receipt valid`, `receipt invalid: why`, for logs and the CLI.
    pub fn describe(&self) -> String {
        match self.problem_text() {
            Some(why) => format!("receipt {}: {why}", self.state.word()),
            None => format!("receipt {}", self.state.word()),
        }
    }

    /// Why the receipt failed, made safe to show: see [`problem_text`].
    pub fn problem_text(&self) -> Option<String> {
        self.problem.as_ref().map(problem_text)
    }
}

/// A problem as one bounded, printable line. Its text can quote the
/// peer's bytes (a key id, a parser's complaint about a value), and it
/// goes into the journal, the terminal and systemd's `STATUS=`, where a
/// newline would start a notify variable of the peer's choosing.
pub fn problem_text(problem: &Problem) -> String {
    shown(&problem.to_string())
}

/// `text` (from a peer or from the audit log) as one bounded line.
pub fn shown(text: &str) -> String {
    crate::daemon::transport::reason_line(text.as_bytes()).unwrap_or_default()
}

/// Checks the collector's answer `body` (a 2xx's, bounded by the
/// transport) as the receipt of `kind` for the request whose body hashes
/// to `body_sha256`, filed under `uid` when the sender knows it. Without
/// `keys` a receipt is only parsed; with keys it must verify under one.
pub fn check(
    body: &[u8],
    keys: &[PublicKey],
    kind: Kind,
    body_sha256: &str,
    uid: Option<&str>,
) -> Checked {
    let required = !keys.is_empty();
    let refused = |receipt, state, problem| Checked {
        receipt,
        state,
        problem: Some(problem),
        fails: required,
    };
    match Signed::parse(body) {
        Ok(None) if required => refused(None, State::Missing, Problem::Missing),
        Ok(None) => Checked {
            receipt: None,
            state: State::None,
            problem: None,
            fails: false,
        },
        Err(problem) => refused(None, State::Invalid, problem),
        Ok(Some(signed)) if !required => Checked {
            receipt: Some(signed),
            state: State::Unchecked,
            problem: None,
            fails: false,
        },
        Ok(Some(signed)) => match verify(&signed, keys, kind, body_sha256, uid) {
            Ok(()) => Checked {
                receipt: Some(signed),
                state: State::Valid,
                problem: None,
                fails: false,
            },
            Err(problem) => refused(Some(signed), State::Invalid, problem),
        },
    }
}

/// Verifies `signed` under whichever of `keys` it names (a rotation lists
/// the old and the new key); a key id none of them has is another key.
pub fn verify(
    signed: &Signed,
    keys: &[PublicKey],
    kind: Kind,
    body_sha256: &str,
    uid: Option<&str>,
) -> Result<(), Problem> {
    let key = keys
        .iter()
        .find(|key| key.key_id() == signed.receipt.key_id)
        .ok_or_else(|| Problem::OtherKey {
            key_id: signed.receipt.key_id.clone(),
        })?;
    signed.verify(key, kind, body_sha256, uid)
}

/// The uid the collector files a report under, computed from the report
/// itself exactly as the collector does (hashed ids and program name), so
/// a receipt for another installation is caught. `None` for a body that
/// carries neither hashed identifier: the collector refuses those.
pub fn uid_of_report(body: &[u8]) -> Option<String> {
    let document: Value = serde_json::from_slice(body).ok()?;
    let stat = |name: &str| document["stats"][name]["value"].as_str();
    let machine = stat("machine_id_hash");
    let guid = stat("server_guid_hash");
    if machine.is_none() && guid.is_none() {
        return None;
    }
    Some(crate::wire::installation_uid(
        machine,
        guid,
        stat("program_name"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::Ed25519KeyPair;

    fn pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    const BODY: &[u8] =
        br#"{"stats":{"machine_id_hash":{"value":"aa"},"program_name":{"value":"p"}},"version":2}"#;

    #[test]
    fn each_answer_gets_the_state_its_receipt_earns() {
        let pair = pair();
        let key = PublicKey::from_key_pair(&pair);
        let sha = crate::wire::sha256_hex(BODY);
        let uid = uid_of_report(BODY).unwrap();
        assert_eq!(
            uid,
            crate::wire::installation_uid(Some("aa"), None, Some("p"))
        );
        let good = Signed::sign(&pair, Kind::Stored, &uid, &sha, 1).to_json();
        let keys = std::slice::from_ref(&key);

        let valid = check(good.as_bytes(), keys, Kind::Stored, &sha, Some(&uid));
        assert_eq!((valid.state, valid.fails), (State::Valid, false));
        let unchecked = check(good.as_bytes(), &[], Kind::Stored, &sha, Some(&uid));
        assert_eq!(
            (unchecked.state, unchecked.fails),
            (State::Unchecked, false)
        );
        let none = check(b"", &[], Kind::Stored, &sha, Some(&uid));
        assert_eq!((none.state, none.fails), (State::None, false));
        let missing = check(b"", keys, Kind::Stored, &sha, Some(&uid));
        assert_eq!((missing.state, missing.fails), (State::Missing, true));
        let junk = check(b"<html>", keys, Kind::Stored, &sha, Some(&uid));
        assert_eq!((junk.state, junk.fails), (State::Invalid, true));
        let junk_unkeyed = check(b"<html>", &[], Kind::Stored, &sha, Some(&uid));
        assert_eq!(
            (junk_unkeyed.state, junk_unkeyed.fails),
            (State::Invalid, false)
        );
        let other_body = check(good.as_bytes(), keys, Kind::Stored, &"0".repeat(64), None);
        assert!(matches!(other_body.problem, Some(Problem::Mismatch(_))));
        let other_uid = check(good.as_bytes(), keys, Kind::Stored, &sha, Some("x"));
        assert!(other_uid.fails);
    }

    #[test]
    fn during_a_rotation_either_key_verifies_and_a_third_does_not() {
        let (old, new, third) = (pair(), pair(), pair());
        let keys = [
            PublicKey::from_key_pair(&old),
            PublicKey::from_key_pair(&new),
        ];
        let sha = "ab".repeat(32);
        for signer in [&old, &new] {
            let signed = Signed::sign(signer, Kind::Deleted, "u", &sha, 7);
            assert_eq!(
                verify(&signed, &keys, Kind::Deleted, &sha, Some("u")),
                Ok(())
            );
        }
        let foreign = Signed::sign(&third, Kind::Deleted, "u", &sha, 7);
        assert!(matches!(
            verify(&foreign, &keys, Kind::Deleted, &sha, Some("u")),
            Err(Problem::OtherKey { .. })
        ));
    }

    #[test]
    fn a_problem_quoting_the_peer_is_shown_on_one_bounded_line() {
        let problem = Problem::OtherKey {
            key_id: format!("x\nMAINPID=1\nSTATUS=forged{}", "y".repeat(2000)),
        };
        let text = problem_text(&problem);
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("\\nMAINPID=1"), "{text}");
        assert!(text.len() < 600, "{}", text.len());
    }

    #[test]
    fn states_read_back_from_their_words() {
        for word in ["none", "unchecked", "valid", "missing", "invalid"] {
            assert_eq!(State::from_word(word).unwrap().word(), word);
        }
        assert_eq!(State::from_word("VALID"), None);
    }
}
