//! The writer's lock. `flock` on `audit.log.lock` alone can be defeated by
//! unlinking the file: the next writer creates a new one and locks that.
//! So the writer first locks the log's directory (which cannot be unlinked
//! or swapped under the open handle), then the lock file, and checks that
//! the file it locked is still the one at that name; `audit.log.lock` keeps
//! the holder's pid for the waiting process's message.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::dir::{still_at, Access, Create};
use super::*;

/// Held while the log is open for writing; dropping it lets go.
#[derive(Debug)]
pub(super) struct WriterLock {
    _dir: Flock<File>,
    file: Flock<File>,
    name: OsString,
}

/// Takes the writer's lock for the log `name` in `dir`, retrying until
/// `wait` is up.
pub(super) fn acquire(
    dir: &LogDir,
    log: &Path,
    name: &OsStr,
    wait: Duration,
) -> Result<WriterLock, AuditError> {
    let lock_name = sibling(name, ".lock");
    let lock_err = |source: io::Error| AuditError::Lock {
        path: dir.join(&lock_name),
        source,
    };
    let deadline = Instant::now() + wait;
    let locked_out = || AuditError::Locked {
        path: log.to_owned(),
        holder: holder(dir, &lock_name),
        waited: wait,
    };
    let mut handle = dir.handle().map_err(lock_err)?;
    let dir_lock = loop {
        match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break locked,
            Err((unlocked, errno)) if retryable(errno) => {
                if Instant::now() >= deadline {
                    return Err(locked_out());
                }
                handle = unlocked;
                thread::sleep(Duration::from_millis(50));
            }
            Err((_, errno)) => return Err(lock_err(errno.into())),
        }
    };
    let file = loop {
        // A surveyd from before the directory lock holds only the file.
        match lock_file(dir, &lock_name)? {
            Some(file) => break file,
            None if Instant::now() >= deadline => return Err(locked_out()),
            None => thread::sleep(Duration::from_millis(50)),
        }
    };
    Ok(WriterLock {
        _dir: dir_lock,
        file,
        name: lock_name,
    })
}

impl WriterLock {
    /// Checks that `audit.log.lock` is still the file this writer locked.
    /// If it was removed or replaced, locks the file now at that name (the
    /// directory lock has kept every other writer out meanwhile) and says
    /// so, for the log.
    pub(super) fn recheck(&mut self, dir: &LogDir) -> Result<bool, AuditError> {
        let lock_err = |source: io::Error| AuditError::Lock {
            path: dir.join(&self.name),
            source,
        };
        if still_at(dir, &self.name, &self.file).map_err(lock_err)? {
            return Ok(false);
        }
        match lock_file(dir, &self.name)? {
            Some(file) => {
                self.file = file;
                Ok(true)
            }
            None => Err(lock_err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the lock file was replaced by one another process holds",
            ))),
        }
    }
}

/// Opens (creating) and locks the lock file, checks it is still the file
/// at its name, and writes this process's pid into it. `None` while
/// another process holds it.
fn lock_file(dir: &LogDir, lock_name: &OsStr) -> Result<Option<Flock<File>>, AuditError> {
    let path = dir.join(lock_name);
    loop {
        let file = dir
            .open_file(lock_name, Access::ReadWrite, Create::IfMissing)
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, errno)) if retryable(errno) => return Ok(None),
            Err((_, errno)) => {
                return Err(AuditError::Lock {
                    path,
                    source: errno.into(),
                })
            }
        };
        // Locked a file that was unlinked or replaced meanwhile: start over.
        if !still_at(dir, lock_name, &locked).map_err(|source| AuditError::Lock {
            path: path.clone(),
            source,
        })? {
            continue;
        }
        // Only a hint for the error message of a process that has to wait,
        // so failing to write it is not worth failing over.
        let pid = format!("{}\n", std::process::id());
        let _ = locked
            .set_len(0)
            .and_then(|()| locked.write_all_at(pid.as_bytes(), 0));
        return Ok(Some(locked));
    }
}

fn retryable(errno: Errno) -> bool {
    errno == Errno::EWOULDBLOCK || errno == Errno::EINTR
}

/// The pid in the lock file, for the message of a writer that gave up.
fn holder(dir: &LogDir, lock_name: &OsStr) -> Option<u32> {
    let bytes = dir.read_small(lock_name, 32).ok()?;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}
