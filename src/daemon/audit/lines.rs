//! The shape of each audit log line as the writer serialises it, keys in
//! the order they appear on disk (see the format in `audit/mod.rs`).

use serde::Serialize;
use serde_json::value::RawValue;

use crate::wire::receipt::Signed;

#[derive(Serialize)]
pub(super) struct SendLine<'a> {
    pub(super) seq: u64,
    pub(super) time: &'a str,
    pub(super) event: &'static str,
    pub(super) url: &'a str,
    pub(super) body: &'a RawValue,
    pub(super) body_sha256: &'a str,
    pub(super) prev: &'a str,
}

#[derive(Serialize)]
pub(super) struct ResultLine<'a> {
    pub(super) seq: u64,
    pub(super) time: &'a str,
    pub(super) event: &'static str,
    pub(super) of: u64,
    pub(super) status: Option<u16>,
    pub(super) error: Option<&'a str>,
    pub(super) duration_ms: u64,
    /// Only on results that got an answer to check a receipt in; older
    /// result lines have none of the three.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) receipt: Option<Option<&'a Signed>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) receipt_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) receipt_problem: Option<&'a str>,
    pub(super) prev: &'a str,
}

/// What a `result` line records about the answer's receipt.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptRecord<'a> {
    /// The receipt as the collector sent it, when it parsed.
    pub receipt: Option<&'a Signed>,
    /// `none`, `unchecked`, `valid`, `missing` or `invalid`.
    pub state: &'a str,
    /// Why it is `missing` or `invalid`.
    pub problem: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct ForgetLine<'a> {
    pub(super) seq: u64,
    pub(super) time: &'a str,
    pub(super) event: &'static str,
    pub(super) url: &'a str,
    pub(super) uid: &'a str,
    pub(super) body_sha256: &'a str,
    pub(super) prev: &'a str,
}

#[derive(Serialize)]
pub(super) struct RecoveredLine<'a> {
    pub(super) seq: u64,
    pub(super) time: &'a str,
    pub(super) event: &'static str,
    pub(super) torn_bytes: u64,
    pub(super) saved_to: &'a str,
    pub(super) prev: &'a str,
}

#[derive(Serialize)]
pub(super) struct NewChainLine<'a> {
    pub(super) seq: u64,
    pub(super) time: &'a str,
    pub(super) event: &'static str,
    pub(super) set_aside: &'a [String],
    pub(super) old_last_seq: Option<u64>,
    pub(super) old_last_hash: Option<&'a str>,
    pub(super) prev: &'a str,
}
