//! The chain's ends, kept in the state dir: the oldest line still on disk
//! and the last line written. The hash chain proves that no line inside
//! the log changed; only these two points can show that lines were cut off
//! its head or its tail.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ChainPoint;
use crate::safe_fs;

/// Name of the file in the state dir.
pub const CHAIN_ENDS_FILE: &str = "audit-chain-ends";

/// The file is a few hundred bytes; anything much larger was planted.
const MAX_ENDS_FILE: u64 = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ChainEnds {
    /// The log these ends belong to; ends of another log are ignored.
    pub(super) log: PathBuf,
    pub(super) first_seq: u64,
    pub(super) first_hash: String,
    pub(super) last_seq: u64,
    pub(super) last_hash: String,
}

impl ChainEnds {
    pub(super) fn new(log: &Path, first: &ChainPoint, last: &ChainPoint) -> ChainEnds {
        ChainEnds {
            log: log.to_owned(),
            first_seq: first.seq,
            first_hash: first.hash.clone(),
            last_seq: last.seq,
            last_hash: last.hash.clone(),
        }
    }

    /// Reads the ends recorded for `log`: `None` when there are none yet or
    /// they belong to another log.
    pub(super) fn read(file: &Path, log: &Path) -> io::Result<Option<ChainEnds>> {
        let bytes = match safe_fs::read_regular(file, MAX_ENDS_FILE) {
            Ok(bytes) => bytes,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(io::Error::other(err.to_string())),
        };
        let ends: ChainEnds = serde_json::from_slice(&bytes).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a chain-ends record: {err}", file.display()),
            )
        })?;
        Ok((ends.log == log).then_some(ends))
    }

    pub(super) fn write(&self, file: &Path) -> io::Result<()> {
        let mut text = serde_json::to_vec(self).map_err(io::Error::other)?;
        text.push(b'\n');
        safe_fs::write_atomically(file, &text)
    }

    /// How the log's oldest and newest lines on disk contradict these ends,
    /// if they do. A log longer at either end than recorded is fine (a
    /// writer records its ends just after writing and just before pruning);
    /// a shorter one lost lines.
    pub(super) fn contradiction(
        &self,
        file: &Path,
        oldest: Option<&ChainPoint>,
        newest: Option<&ChainPoint>,
    ) -> Option<String> {
        let file = file.display();
        let (Some(oldest), Some(newest)) = (oldest, newest) else {
            return Some(format!(
                "the log has no lines, but {file} records seq {} to {} as written: the log was emptied or removed",
                self.first_seq, self.last_seq
            ));
        };
        if oldest.seq > self.first_seq
            || (oldest.seq == self.first_seq && oldest.hash != self.first_hash)
        {
            return Some(format!(
                "the oldest line present is seq {}, but {file} records seq {} (sha256 {}) as the oldest line on disk: lines were removed from the start of the log",
                oldest.seq,
                self.first_seq,
                short(&self.first_hash)
            ));
        }
        if newest.seq < self.last_seq
            || (newest.seq == self.last_seq && newest.hash != self.last_hash)
        {
            return Some(format!(
                "the newest line present is seq {}, but {file} records seq {} (sha256 {}) as the last line written: lines were removed from (or changed at) the end of the log",
                newest.seq,
                self.last_seq,
                short(&self.last_hash)
            ));
        }
        None
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
