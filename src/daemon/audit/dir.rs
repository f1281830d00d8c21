//! The log's directory, opened once: every file of the log is reached
//! relative to this handle with `O_NOFOLLOW`, so a link planted under one
//! of the log's names (`audit.log -> /etc/passwd`) is refused instead of
//! followed, and only regular files are accepted. The directory itself may
//! be reached through links (DynamicUser's `/var/log/surveyd` is one).

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::safe_fs::describe_type;

/// An open directory and the path it was opened by (for messages).
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// How a file of the log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    /// Read and append.
    Append,
    /// Read and write at any offset (the lock file).
    ReadWrite,
}

impl LogDir {
    /// Opens the directory `path` names, following links on the way.
    pub(super) fn open(path: &Path) -> io::Result<LogDir> {
        let fd = openat(
            None,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(LogDir {
            path: path.to_owned(),
            fd,
        })
    }

    /// Creates the directory (mode 0750) if it is missing, then opens it.
    pub(super) fn create_and_open(path: &Path) -> io::Result<LogDir> {
        DirBuilder::new().recursive(true).mode(0o750).create(path)?;
        LogDir::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub(super) fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's own owner and mode, as opened (not as named now).
    pub(super) fn metadata(&self) -> io::Result<fs::Metadata> {
        self.handle()?.metadata()
    }

    /// A second handle on the same open directory, for `flock`.
    /// Replaces the file `name` atomically: a fresh temporary file (never
    /// through a link), fsynced, renamed over the name, the directory
    /// fsynced. Readers see the old contents or all of the new.
    pub fn replace(&self, name: &OsStr, contents: &[u8]) -> io::Result<()> {
        let mut tmp = name.to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        match self.remove(&tmp) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let mut file = self.open_file(&tmp, Access::ReadWrite, Create::New)?;
        let written = file
            .write_all(contents)
            .and_then(|()| file.sync_all())
            .and_then(|()| self.rename(&tmp, name));
        if let Err(err) = written {
            let _ = self.remove(&tmp);
            return Err(err);
        }
        self.sync()
    }

    pub(super) fn handle(&self) -> io::Result<File> {
        Ok(File::from(self.fd.try_clone()?))
    }

    /// Opens `name` without following a link and checks it is a regular
    /// file. `create` makes it (mode 0640) if missing; `exclusive` insists
    /// on making it.
    pub(super) fn open_file(
        &self,
        name: &OsStr,
        access: Access,
        create: Create,
    ) -> io::Result<File> {
        let mut flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
        flags |= match access {
            Access::Read => OFlag::O_RDONLY,
            Access::Append => OFlag::O_RDWR | OFlag::O_APPEND,
            Access::ReadWrite => OFlag::O_RDWR,
        };
        // Opening a device can act on it (a tape rewinds); refuse anything
        // but a regular file by its name first, then check the opened file
        // itself, which is the one that counts.
        if let Some(stat) = self.stat(name)? {
            let kind = stat.st_mode & nix::libc::S_IFMT;
            if kind != nix::libc::S_IFREG && kind != nix::libc::S_IFLNK {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("is {}, not a regular file", describe_mode(kind)),
                ));
            }
        }
        flags |= match create {
            Create::No => OFlag::empty(),
            Create::IfMissing => OFlag::O_CREAT,
            Create::New => OFlag::O_CREAT | OFlag::O_EXCL,
        };
        let fd = openat(
            Some(self.fd.as_raw_fd()),
            name,
            flags,
            Mode::from_bits_truncate(0o640),
        )
        .map_err(|errno| match errno {
            Errno::ELOOP => io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a symbolic link, which is not followed; remove it",
            ),
            other => io::Error::from(other),
        })?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let file_type = file.metadata()?.file_type();
        if !file_type.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("is {}, not a regular file", describe_type(file_type)),
            ));
        }
        Ok(file)
    }

    /// Like [`LogDir::open_file`] for reading, with `None` for a missing file.
    pub(super) fn open_existing(&self, name: &OsStr) -> io::Result<Option<File>> {
        match self.open_file(name, Access::Read, Create::No) {
            Ok(file) => Ok(Some(file)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// What `name` is now, without following a link; `None` if missing.
    pub(super) fn stat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    pub(super) fn exists(&self, name: &OsStr) -> io::Result<bool> {
        Ok(self.stat(name)?.is_some())
    }

    pub(super) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let fd = Some(self.fd.as_raw_fd());
        renameat(fd, from, fd, to).map_err(io::Error::from)
    }

    pub(super) fn remove(&self, name: &OsStr) -> io::Result<()> {
        unlinkat(Some(self.fd.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from)
    }

    /// Makes renames and creations in the directory durable.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.handle()?.sync_all()
    }

    /// The names in the directory, listed through the handle: after root
    /// has become the directory's owner, the path may lead through a
    /// directory the owner cannot search (DynamicUser's /var/log/private).
    pub(super) fn names(&self) -> io::Result<Vec<OsString>> {
        let by_handle = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let entries = match fs::read_dir(&by_handle) {
            Ok(entries) => entries,
            // Without /proc, the path; names are opened through the handle
            // with O_NOFOLLOW whatever the path leads to by then.
            Err(err) if err.kind() == io::ErrorKind::NotFound => fs::read_dir(&self.path)?,
            Err(err) => return Err(err),
        };
        entries
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect()
    }

    /// Reads at most `limit` bytes of a small regular file (the lock's pid).
    pub(super) fn read_small(&self, name: &OsStr, limit: u64) -> io::Result<Vec<u8>> {
        let file = self.open_file(name, Access::Read, Create::No)?;
        let mut bytes = Vec::new();
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// What an `S_IFMT` file type is, in words, for errors.
fn describe_mode(kind: nix::libc::mode_t) -> &'static str {
    match kind {
        nix::libc::S_IFDIR => "a directory",
        nix::libc::S_IFIFO => "a FIFO",
        nix::libc::S_IFCHR => "a character device",
        nix::libc::S_IFBLK => "a block device",
        nix::libc::S_IFSOCK => "a socket",
        _ => "not a regular file",
    }
}

/// Whether opening may create the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Create {
    No,
    IfMissing,
    New,
}

/// Whether an open file is still the one at `name` in `dir` (not removed,
/// not replaced by another file).
pub(super) fn still_at(dir: &LogDir, name: &OsStr, file: &File) -> io::Result<bool> {
    let meta = file.metadata()?;
    if meta.nlink() == 0 {
        return Ok(false);
    }
    Ok(match dir.stat(name)? {
        Some(stat) => stat.st_dev == meta.dev() && stat.st_ino == meta.ino(),
        None => false,
    })
}
