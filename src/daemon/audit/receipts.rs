//! `surveyd audit verify`'s second half: every receipt recorded in the log
//! re-checked under the configured collector key(s), against what the log
//! says was sent (the body's hash recomputed from the logged body, the uid
//! recomputed from it, or a `forget` line's own uid and hash).

use std::collections::HashMap;
use std::fmt;

use super::reader::Entry;
use crate::daemon::receipts::{self, State};
use crate::wire::receipt::{Kind, PublicKey, Signed};
use crate::wire::sha256_hex;

/// What the receipt check covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptSummary {
    /// Whether any key was configured; without one nothing was checked.
    pub keyed: bool,
    /// Receipts that verify (with a key) or are recorded (without one).
    pub receipts: u64,
    /// Accepted requests without a receipt, answered while no key was
    /// configured (an upstream-style collector): nothing to check.
    pub not_required: u64,
    /// Accepted requests whose result predates receipt records.
    pub older: u64,
}

impl fmt::Display for ReceiptSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.keyed {
            write!(
                f,
                "receipts NOT checked: surveyclient_collector_key is not set \
                 ({} receipt(s) recorded); set it to the collector's published key to check them",
                self.receipts
            )?;
        } else {
            write!(
                f,
                "receipts OK: {} verify under the configured key(s)",
                self.receipts
            )?;
            if self.not_required > 0 {
                write!(
                    f,
                    "; {} accepted report(s) came without a receipt while no key was configured",
                    self.not_required
                )?;
            }
        }
        if self.older > 0 {
            write!(
                f,
                "; {} older result(s) were written before receipts were recorded",
                self.older
            )?;
        }
        Ok(())
    }
}

/// The first recorded receipt that does not prove what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {seq} (result {result_seq}): {why}")]
pub struct ReceiptFailure {
    /// `report` or `deletion request`.
    pub what: &'static str,
    /// The seq of the `send` or `forget` line.
    pub seq: u64,
    pub result_seq: u64,
    pub why: String,
}

/// Re-checks every receipt in `entries` (in log order) under `keys`.
/// Without keys, only counts what is recorded. With keys, a result that
/// recorded a missing or invalid receipt fails too: the collector's answer
/// did not prove delivery.
pub fn verify_receipts(
    entries: &[Entry],
    keys: &[PublicKey],
) -> Result<ReceiptSummary, ReceiptFailure> {
    let requests: HashMap<u64, &Entry> = entries
        .iter()
        .filter(|entry| entry.event == "send" || entry.event == "forget")
        .map(|entry| (entry.seq, entry))
        .collect();
    let mut summary = ReceiptSummary {
        keyed: !keys.is_empty(),
        ..ReceiptSummary::default()
    };
    for result in entries.iter().filter(|entry| entry.event == "result") {
        let Some(request) = result.of.and_then(|of| requests.get(&of)) else {
            continue;
        };
        if !result.status.is_some_and(|s| (200..300).contains(&s)) {
            continue;
        }
        let fail = |why: String| ReceiptFailure {
            what: if request.event == "forget" {
                "deletion request"
            } else {
                "report"
            },
            seq: request.seq,
            result_seq: result.seq,
            why,
        };
        let Some(state) = result.receipt_state.as_deref() else {
            summary.older += 1;
            continue;
        };
        let state = State::from_word(state)
            .ok_or_else(|| fail(format!("unknown receipt_state {state:?}")))?;
        let receipt = match &result.receipt {
            Some(raw) => Some(serde_json::from_str::<Signed>(raw.get()).map_err(|err| {
                fail(format!(
                    "the recorded receipt is malformed: {}",
                    receipts::shown(&err.to_string())
                ))
            })?),
            None => None,
        };
        if keys.is_empty() {
            summary.receipts += u64::from(receipt.is_some());
            continue;
        }
        let Some(receipt) = receipt else {
            match state {
                State::None => summary.not_required += 1,
                _ => {
                    return Err(fail(format!(
                        "no valid receipt: recorded as {}{}",
                        state.word(),
                        result
                            .receipt_problem
                            .as_deref()
                            .map(|why| format!(" ({})", receipts::shown(why)))
                            .unwrap_or_default()
                    )))
                }
            }
            continue;
        };
        let (kind, body_sha256, uid) = what_was_sent(request).map_err(fail)?;
        receipts::verify(&receipt, keys, kind, &body_sha256, uid.as_deref())
            .map_err(|problem| fail(receipts::problem_text(&problem)))?;
        summary.receipts += 1;
    }
    Ok(summary)
}

/// The receipt kind, body hash and uid a request's receipt must name,
/// taken from the log itself: a send's hash is recomputed from its body.
fn what_was_sent(request: &Entry) -> Result<(Kind, String, Option<String>), String> {
    if request.event == "forget" {
        let hash = request.body_sha256.clone().unwrap_or_default();
        return Ok((Kind::Deleted, hash, request.uid.clone()));
    }
    let body = request
        .body
        .as_ref()
        .ok_or("the send line has no body to check the receipt against")?;
    let canonical = serde_json::from_str::<serde_json::Value>(body.get())
        .and_then(|value| serde_json::to_vec(&value))
        .map_err(|err| format!("the logged body is not JSON: {err}"))?;
    Ok((
        Kind::Stored,
        sha256_hex(&canonical),
        receipts::uid_of_report(&canonical),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::reader::parse_line;
    use super::*;

    fn entries(lines: &[String]) -> Vec<Entry> {
        lines
            .iter()
            .map(|line| parse_line(line.as_bytes()).unwrap())
            .collect()
    }

    fn send(seq: u64) -> String {
        format!(
            r#"{{"seq":{seq},"time":"t","event":"send","url":"u","body":{{"version":2}},"body_sha256":"{}","prev":"p"}}"#,
            sha256_hex(br#"{"version":2}"#)
        )
    }

    #[test]
    fn older_results_and_answers_without_a_required_receipt_pass_but_a_recorded_failure_does_not() {
        let key = PublicKey::parse(&format!("ed25519:{}", "ab".repeat(32))).unwrap();
        let keys = std::slice::from_ref(&key);
        let lines = vec![
            send(1),
            r#"{"seq":2,"time":"t","event":"result","of":1,"status":204,"error":null,"duration_ms":3,"prev":"p"}"#.to_string(),
            send(3),
            r#"{"seq":4,"time":"t","event":"result","of":3,"status":200,"error":null,"duration_ms":3,"receipt":null,"receipt_state":"none","prev":"p"}"#.to_string(),
            send(5),
            r#"{"seq":6,"time":"t","event":"result","of":5,"status":500,"error":"x","duration_ms":3,"prev":"p"}"#.to_string(),
        ];
        let summary = verify_receipts(&entries(&lines), keys).unwrap();
        assert_eq!(
            (summary.older, summary.not_required, summary.receipts),
            (1, 1, 0)
        );

        let mut failed = lines.clone();
        failed.push(send(7));
        failed.push(r#"{"seq":8,"time":"t","event":"result","of":7,"status":200,"error":"e","duration_ms":3,"receipt":null,"receipt_state":"missing","receipt_problem":"no receipt","prev":"p"}"#.to_string());
        let failure = verify_receipts(&entries(&failed), keys).unwrap_err();
        assert_eq!(
            (failure.what, failure.seq, failure.result_seq),
            ("report", 7, 8)
        );
        assert!(
            failure.why.contains("missing (no receipt)"),
            "{}",
            failure.why
        );
        let unkeyed = verify_receipts(&entries(&failed), &[]).unwrap();
        assert!(
            !unkeyed.keyed,
            "without a key nothing is checked, so nothing fails"
        );
    }
}
