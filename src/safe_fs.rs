//! Opening files the way a program run as root must: the file itself is
//! never reached through a symbolic link, only regular files are read, and
//! every read is bounded. Directories named on the way may be links
//! (systemd's DynamicUser makes `/var/log/surveyd` one); the last component
//! never is.
//!
//! Reads open with `O_NONBLOCK`, so a FIFO or a device planted where a file
//! was expected is refused at `fstat` instead of blocking the opener, and
//! with a size limit, so `/dev/zero` or a growing file cannot eat memory.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be read safely. Displays with the path.
#[derive(Debug)]
pub struct ReadError {
    pub path: PathBuf,
    pub kind: ReadErrorKind,
}

#[derive(Debug)]
pub enum ReadErrorKind {
    /// The path names a symbolic link, which is not followed.
    Symlink,
    /// Not a regular file (a FIFO, a device, a socket, a directory).
    NotRegular(&'static str),
    /// Larger than the limit for this kind of file.
    TooLarge {
        limit: u64,
    },
    Io(io::Error),
}

impl ReadError {
    /// The file does not exist (as opposed to existing and being refused).
    pub fn is_not_found(&self) -> bool {
        matches!(&self.kind, ReadErrorKind::Io(err) if err.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            ReadErrorKind::Symlink => write!(
                f,
                "{path}: is a symbolic link, which is not followed; name the file it points to"
            ),
            ReadErrorKind::NotRegular(what) => {
                write!(f, "{path}: is {what}, not a regular file")
            }
            ReadErrorKind::TooLarge { limit } => {
                write!(f, "{path}: is larger than the limit of {limit} bytes")
            }
            ReadErrorKind::Io(err) => write!(f, "{path}: {err}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ReadErrorKind::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// What a file type is, in words, for errors.
pub fn describe_type(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Opens `path` for reading without following a link in its last
/// component and without blocking, and checks it is a regular file.
///
/// The type is checked with `lstat` before the open as well as with `fstat`
/// after it: opening a device can have effects of its own (`/dev/watchdog`
/// arms the hardware watchdog, a tape device rewinds), so a device is
/// refused without being opened. The two must name the same inode, so a
/// file swapped in between is refused too.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let error = |kind| ReadError {
        path: path.to_path_buf(),
        kind,
    };
    let before = std::fs::symlink_metadata(path).map_err(|err| error(ReadErrorKind::Io(err)))?;
    if before.file_type().is_symlink() {
        return Err(error(ReadErrorKind::Symlink));
    }
    if !before.file_type().is_file() {
        return Err(error(ReadErrorKind::NotRegular(describe_type(
            before.file_type(),
        ))));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK | libc_flags::O_NOCTTY)
        .open(path)
        .map_err(|err| {
            if err.raw_os_error() == Some(libc_flags::ELOOP) {
                error(ReadErrorKind::Symlink)
            } else {
                error(ReadErrorKind::Io(err))
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|err| error(ReadErrorKind::Io(err)))?;
    if !meta.file_type().is_file() {
        return Err(error(ReadErrorKind::NotRegular(describe_type(
            meta.file_type(),
        ))));
    }
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(error(ReadErrorKind::Io(io::Error::other(
            "was replaced while being opened",
        ))));
    }
    Ok(file)
}

/// Reads a whole regular file of at most `limit` bytes (see the module
/// comment). A file that grows past the limit while being read is refused
/// too.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path)?;
    let error = |kind| ReadError {
        path: path.to_path_buf(),
        kind,
    };
    let len = file
        .metadata()
        .map_err(|err| error(ReadErrorKind::Io(err)))?
        .len();
    if len > limit {
        return Err(error(ReadErrorKind::TooLarge { limit }));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| error(ReadErrorKind::Io(err)))?;
    if bytes.len() as u64 > limit {
        return Err(error(ReadErrorKind::TooLarge { limit }));
    }
    Ok(bytes)
}

/// [`read_regular`], as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    let bytes = read_regular(path, limit)?;
    String::from_utf8(bytes).map_err(|_| ReadError {
        path: path.to_path_buf(),
        kind: ReadErrorKind::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "is not valid UTF-8",
        )),
    })
}

/// Writes a small file so that readers see either the old contents or all
/// of the new: a fresh temporary file (created exclusively, so a link
/// planted under its name is not followed), fsynced, renamed over `path`
/// (which replaces a link at `path` rather than writing through it), and
/// the directory fsynced.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    // A leftover from a crashed writer with our pid: remove() does not
    // follow links, so this cannot touch another file.
    match std::fs::remove_file(&tmp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc_flags::O_NOFOLLOW)
        .open(&tmp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(err) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    File::open(dir)?.sync_all()
}

/// The flags std does not name, from the platform's C headers via nix.
mod libc_flags {
    pub const O_NOFOLLOW: i32 = nix::libc::O_NOFOLLOW;
    pub const O_NONBLOCK: i32 = nix::libc::O_NONBLOCK;
    pub const O_NOCTTY: i32 = nix::libc::O_NOCTTY;
    pub const ELOOP: i32 = nix::libc::ELOOP;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\n").unwrap();
        assert_eq!(read_regular(&path, 6).unwrap(), b"hello\n");
    }

    #[test]
    fn refuses_a_symlink_in_the_last_component_but_follows_directory_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/f"), b"x").unwrap();
        symlink("real", dir.path().join("linked")).unwrap();
        symlink("f", dir.path().join("real/link")).unwrap();
        assert_eq!(
            read_regular(&dir.path().join("linked/f"), 10).unwrap(),
            b"x"
        );
        let err = read_regular(&dir.path().join("real/link"), 10).unwrap_err();
        assert!(matches!(err.kind, ReadErrorKind::Symlink), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read_regular(&path, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: is a FIFO, not a regular file", path.display())
        );
    }

    #[test]
    fn refuses_a_device_and_a_directory() {
        let err = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(
            matches!(err.kind, ReadErrorKind::NotRegular("a character device")),
            "{err}"
        );
        let err = read_regular(Path::new("/"), 10).unwrap_err();
        assert!(
            matches!(err.kind, ReadErrorKind::NotRegular("a directory")),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_file_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert!(read_regular(&path, 5).is_ok());
        let err = read_regular(&path, 4).unwrap_err();
        assert!(
            matches!(err.kind, ReadErrorKind::TooLarge { limit: 4 }),
            "{err}"
        );
    }

    #[test]
    fn atomic_write_replaces_a_planted_link_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("state");
        symlink(&victim, &path).unwrap();
        write_atomically(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(read_regular(&path, 10).unwrap(), b"new\n");
    }
}
