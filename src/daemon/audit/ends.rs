//! The chain's ends, kept in the state dir: the oldest line still on disk
//! and the last line written. The hash chain proves that no line inside
//! the log changed; only these two points can show that lines were cut off
//! its head or its tail.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{file_name, parent_dir, ChainPoint, LogDir};
use crate::safe_fs;

/// The file is a few hundred bytes; anything much larger was planted.
const MAX_ENDS_FILE: u64 = 16 * 1024;

/// The writer's handle on the ends file: its directory, opened once (as
/// root, before `send` becomes the directory's owner, who may not be able
/// to reach it by path), and its name there.
#[derive(Debug)]
pub struct EndsFile {
    dir: LogDir,
    name: OsString,
}

impl EndsFile {
    /// Opens the directory of the ends file at `path`, creating it (mode
    /// 0750) if missing.
    pub fn open(path: &Path) -> io::Result<EndsFile> {
        let name = file_name(path).map_err(|err| io::Error::other(err.to_string()))?;
        Ok(EndsFile {
            dir: LogDir::create_and_open(&parent_dir(path))?,
            name,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.dir.open_existing(&self.name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(MAX_ENDS_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_ENDS_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("is larger than the limit of {MAX_ENDS_FILE} bytes"),
            ));
        }
        Ok(Some(bytes))
    }

    fn write(&self, contents: &[u8]) -> io::Result<()> {
        self.dir.replace(&self.name, contents)
    }
}

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

    /// Reads the ends recorded for `log` (by path, for the readers):
    /// `None` when there are none yet or they belong to another log.
    pub(super) fn read(file: &Path, log: &Path) -> io::Result<Option<ChainEnds>> {
        match safe_fs::read_regular(file, MAX_ENDS_FILE) {
            Ok(bytes) => Self::parse(&bytes, log),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(io::Error::other(err.to_string())),
        }
    }

    /// [`ChainEnds::read`] for the writer, through its handle.
    pub(super) fn read_in(file: &EndsFile, log: &Path) -> io::Result<Option<ChainEnds>> {
        match file.read()? {
            Some(bytes) => Self::parse(&bytes, log),
            None => Ok(None),
        }
    }

    fn parse(bytes: &[u8], log: &Path) -> io::Result<Option<ChainEnds>> {
        let ends: ChainEnds = serde_json::from_slice(bytes).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a chain-ends record: {err}"),
            )
        })?;
        Ok((ends.log == log).then_some(ends))
    }

    pub(super) fn write(&self, file: &EndsFile) -> io::Result<()> {
        let mut text = serde_json::to_vec(self).map_err(io::Error::other)?;
        text.push(b'\n');
        file.write(&text)
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
