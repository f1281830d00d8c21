//! The lines only the consent model writes: a report kept local (no
//! consent to upload) and the admin's consent answer. A child of the
//! writer, so it appends through the same single path.

use serde::Serialize;
use serde_json::value::RawValue;

use super::super::{now_rfc3339, sha256_hex, AuditError};
use super::{canonical_body, AuditLog};

/// A `send` line's shape with another event name: `local` records the
/// same bytes, kept on this machine.
#[derive(Serialize)]
struct LocalLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    body: &'a RawValue,
    body_sha256: &'a str,
    prev: &'a str,
}

#[derive(Serialize)]
struct ConsentLine<'a> {
    seq: u64,
    time: &'a str,
    event: &'static str,
    mode: &'a str,
    schema: u32,
    fields: &'a [String],
    url: &'a str,
    prev: &'a str,
}

impl AuditLog {
    /// Records a report that was built but, without consent to upload, is
    /// kept here: the exact bytes an upload would have sent.
    pub fn append_local(&mut self, body: &[u8]) -> Result<u64, AuditError> {
        self.recheck_lock()?;
        let body = canonical_body(body)?;
        let body_sha256 = sha256_hex(body.get().as_bytes());
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let line = serde_json::to_vec(&LocalLine {
            seq,
            time: &time,
            event: "local",
            body,
            body_sha256: &body_sha256,
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }

    /// Records the admin's `surveyd consent yes` or `no` before it takes
    /// effect: the mode, the schema and fields acknowledged, and the
    /// destination they were shown.
    pub fn append_consent(
        &mut self,
        mode: &str,
        schema: u32,
        fields: &[String],
        url: &str,
    ) -> Result<u64, AuditError> {
        self.recheck_lock()?;
        let seq = self.next_seq()?;
        let time = now_rfc3339();
        let line = serde_json::to_vec(&ConsentLine {
            seq,
            time: &time,
            event: "consent",
            mode,
            schema,
            fields,
            url,
            prev: &self.last.hash,
        });
        self.write_line(seq, line)
    }
}
