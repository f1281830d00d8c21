//! The server.cfg file format, read the way upstream Kopano's ECConfigImpl
//! reads it: `key = value` lines, `#` comments in the first column,
//! `!include` / `!propmap` directives and `$VARIABLE` values. This module
//! knows nothing about which keys exist; it returns every entry in file order
//! together with where it came from, and `settings` gives them meaning.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::safe_fs::{self, ReadErrorKind};

/// Deepest `!include` nesting accepted below the main file. Real Kopano
/// files nest one level (ldap.cfg includes ldap.openldap.cfg); the bound
/// keeps a chain of thousands of files from exhausting the stack or memory.
pub const MAX_INCLUDE_DEPTH: usize = 64;

/// Largest single config file. Kopano's server.cfg is about 40 KiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Largest total of the main file and all its includes together, so many
/// sibling includes cannot add up to unbounded memory either.
pub const MAX_TOTAL_BYTES: u64 = 16 * 1024 * 1024;

/// Where a line came from, shown as `file:line` in every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based, as editors count.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `key = value` line, after trimming and `$VARIABLE` substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub location: Location,
}

/// Everything that makes a configuration unusable. Each message names the
/// file (and line, where there is one) and says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; check the path given with -c/--config and its permissions", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("{location}: cannot include {}: {source}; fix the !include path (a relative path starts at the including file's directory)", path.display())]
    Include {
        location: Location,
        path: PathBuf,
        source: io::Error,
    },

    #[error("{location}: !include {} would nest more than {limit} levels deep; flatten the chain of included files", path.display())]
    IncludeTooDeep {
        location: Location,
        path: PathBuf,
        limit: usize,
    },

    #[error("{location}: !include {} would take the main file and its includes together past {limit} bytes; include fewer or smaller files", path.display())]
    TooMuchConfig {
        location: Location,
        path: PathBuf,
        limit: u64,
    },

    #[error("{location}: !include without a file name; write `!include PATH` or remove the line")]
    IncludeWithoutPath { location: Location },

    #[error("{location}: !include {} is an include cycle (that file is already being read); remove this !include", path.display())]
    IncludeCycle { location: Location, path: PathBuf },

    #[error("{location}: {} was already included at {first}; a file is read only once, remove one of the !include lines", path.display())]
    IncludedTwice {
        location: Location,
        path: PathBuf,
        first: Location,
    },

    #[error("{location}: {key} takes its value from environment variable {variable:?}, which is not set; set it in the service's environment or write the value directly")]
    UnsetVariable {
        location: Location,
        key: String,
        variable: String,
    },

    /// A value that the settings layer cannot accept.
    #[error("{key}: {value:?} {problem} (at {location}); {hint}")]
    Invalid {
        location: Location,
        key: &'static str,
        value: String,
        problem: String,
        hint: String,
    },
}

impl ConfigError {
    /// The line the error is about; `None` when the file itself could not
    /// be read. Used to point at the culprit in status lines.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Include { location, .. }
            | ConfigError::IncludeWithoutPath { location }
            | ConfigError::IncludeTooDeep { location, .. }
            | ConfigError::TooMuchConfig { location, .. }
            | ConfigError::IncludeCycle { location, .. }
            | ConfigError::IncludedTwice { location, .. }
            | ConfigError::UnsetVariable { location, .. }
            | ConfigError::Invalid { location, .. } => Some(location),
        }
    }
}

/// Looks up an environment variable for `$NAME` values.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment. Names that the OS cannot hold (empty, or with
/// `=` or NUL) are simply unset: std may panic on them and a config file
/// must never make us panic.
pub fn process_env(name: &str) -> Option<String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return None;
    }
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// A parsed configuration file with everything it included.
#[derive(Debug, Clone, Default)]
pub struct CfgFile {
    entries: Vec<Entry>,
    warnings: Vec<String>,
    files: Vec<PathBuf>,
}

impl CfgFile {
    /// Reads `path` (and its includes) with `$NAME` taken from the process
    /// environment.
    pub fn load(path: &Path) -> Result<CfgFile, ConfigError> {
        Self::load_with_env(path, &process_env)
    }

    /// Reads `path` (and its includes), looking `$NAME` values up in `env`.
    pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<CfgFile, ConfigError> {
        let mut loader = Loader::new(env);
        let (canonical, bytes) = open_target(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        loader.total_bytes = bytes.len() as u64;
        loader.read_bytes(&bytes, path, canonical)?;
        Ok(loader.finish())
    }

    /// Parses `text` as if it were the file `origin`; includes are resolved
    /// relative to `origin`'s directory. `origin` need not exist.
    pub fn parse_str(
        text: &str,
        origin: &Path,
        env: EnvLookup<'_>,
    ) -> Result<CfgFile, ConfigError> {
        let mut loader = Loader::new(env);
        let canonical = origin
            .canonicalize()
            .unwrap_or_else(|_| origin.to_path_buf());
        loader.total_bytes = text.len() as u64;
        loader.read_bytes(text.as_bytes(), origin, canonical)?;
        Ok(loader.finish())
    }

    /// The effective entry for `key`: the last one, as upstream lets a later
    /// line override an earlier one.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// Every entry in the order read, includes spliced in where they appear,
    /// overridden ones included.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Things that do not stop loading but deserve the admin's attention,
    /// each naming file:line.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The files read, main file first, then includes in the order opened.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// Resolves `path` to its canonical form and reads it, refusing anything
/// but a regular file of at most [`MAX_FILE_BYTES`]: a stray
/// `!include /dev/zero`, a FIFO or a huge file can neither hang the daemon
/// nor eat its memory.
///
/// Unlike every other file surveyd reads, a config file may be a symbolic
/// link: `/etc/kopano/server.cfg` linked to a managed copy is common, the
/// directories holding config files are root's, and upstream follows such
/// links too. The link is resolved first and the target is then opened
/// with `safe_fs` (no further link, non-blocking, regular, bounded), so
/// what is read is still a checked regular file.
fn open_target(path: &Path) -> io::Result<(PathBuf, Vec<u8>)> {
    let canonical = path.canonicalize()?;
    let bytes =
        safe_fs::read_regular(&canonical, MAX_FILE_BYTES).map_err(|err| match err.kind {
            ReadErrorKind::Io(err) => err,
            ReadErrorKind::Symlink => {
                io::Error::other("it was replaced by a symbolic link while being opened")
            }
            ReadErrorKind::NotRegular(what) => {
                io::Error::other(format!("is {what}, not a regular file"))
            }
            ReadErrorKind::TooLarge { limit } => io::Error::other(format!(
                "is larger than the limit of {limit} bytes for a config file"
            )),
        })?;
    Ok((canonical, bytes))
}

/// State of one load: the files being read (for cycle detection) and those
/// finished (to refuse reading one twice).
struct Loader<'a> {
    env: EnvLookup<'a>,
    entries: Vec<Entry>,
    warnings: Vec<String>,
    files: Vec<PathBuf>,
    /// Canonical paths of the files currently open, outermost first.
    stack: Vec<PathBuf>,
    /// Canonical path of every included file -> the `!include` that read it.
    included_at: HashMap<PathBuf, Location>,
    /// Bytes of every file read so far, against [`MAX_TOTAL_BYTES`].
    total_bytes: u64,
}

impl<'a> Loader<'a> {
    fn new(env: EnvLookup<'a>) -> Self {
        Loader {
            env,
            entries: Vec::new(),
            warnings: Vec::new(),
            files: Vec::new(),
            stack: Vec::new(),
            included_at: HashMap::new(),
            total_bytes: 0,
        }
    }

    fn finish(self) -> CfgFile {
        CfgFile {
            entries: self.entries,
            warnings: self.warnings,
            files: self.files,
        }
    }

    /// Parses one file's contents. `shown` is the path used in messages (as
    /// the user or the `!include` line wrote it); `canonical` identifies the
    /// file and anchors relative includes, as upstream resolves them against
    /// the real path of the including file.
    fn read_bytes(
        &mut self,
        bytes: &[u8],
        shown: &Path,
        canonical: PathBuf,
    ) -> Result<(), ConfigError> {
        self.files.push(shown.to_path_buf());
        let dir = match canonical.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        self.stack.push(canonical);

        // Upstream splits with fgets, so only '\n' ends a line; a CR before it
        // is removed by the trimming below.
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let location = Location {
                file: shown.to_path_buf(),
                line: index + 1,
            };
            // A comment may hold anything (an admin's Latin-1 umlaut, say),
            // so it is skipped before the bytes are even decoded.
            if raw.first() == Some(&b'#') {
                continue;
            }
            let line = match std::str::from_utf8(raw) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => {
                    self.warnings.push(format!(
                        "{location}: line is not valid UTF-8; invalid bytes were replaced by U+FFFD"
                    ));
                    String::from_utf8_lossy(raw)
                }
            };
            self.read_line(&line, &dir, location)?;
        }

        self.stack.pop();
        Ok(())
    }

    fn read_line(&mut self, line: &str, dir: &Path, location: Location) -> Result<(), ConfigError> {
        let trimmed = trim(line);
        if trimmed.is_empty() {
            return Ok(());
        }
        // Directives, like comments, count only in the first column (upstream
        // checks `line[0]`).
        if let Some(directive) = line.strip_prefix('!') {
            return self.read_directive(directive, dir, location);
        }
        let Some((key, value)) = line.split_once('=') else {
            let what = if trimmed.starts_with('#') {
                "`#` starts a comment only in the first column"
            } else {
                "line has no `=`"
            };
            self.warnings
                .push(format!("{location}: {what}; line ignored"));
            return Ok(());
        };
        let (key, value) = (trim(key), trim(value));
        if key.is_empty() {
            self.warnings.push(format!(
                "{location}: line has no key before `=`; line ignored"
            ));
            return Ok(());
        }
        if key.starts_with('#') {
            // Upstream reads `  # a = b` as the key "# a"; we do the same so a
            // file means what it meant to kopano-server, but say so.
            self.warnings.push(format!(
                "{location}: `#` starts a comment only in the first column; this line sets the key {key:?}"
            ));
        }
        let value = match value.strip_prefix('$') {
            Some(variable) => (self.env)(variable).ok_or_else(|| ConfigError::UnsetVariable {
                location: location.clone(),
                key: key.to_string(),
                variable: variable.to_string(),
            })?,
            None => value.to_string(),
        };
        self.entries.push(Entry {
            key: key.to_string(),
            value,
            location,
        });
        Ok(())
    }

    fn read_directive(
        &mut self,
        directive: &str,
        dir: &Path,
        location: Location,
    ) -> Result<(), ConfigError> {
        let (name, argument) = match directive.find([' ', '\t']) {
            Some(at) => (&directive[..at], trim(&directive[at..])),
            None => (trim(directive), ""),
        };
        match name {
            "include" => self.include(argument, dir, location),
            // Only the LDAP plugin reads property maps; they hold no settings
            // of ours, so the file is not even opened.
            "propmap" => Ok(()),
            _ => {
                self.warnings.push(format!(
                    "{location}: unknown directive !{name}; line ignored"
                ));
                Ok(())
            }
        }
    }

    fn include(
        &mut self,
        argument: &str,
        dir: &Path,
        location: Location,
    ) -> Result<(), ConfigError> {
        if argument.is_empty() {
            return Err(ConfigError::IncludeWithoutPath { location });
        }
        let path = dir.join(argument);
        // The stack holds the main file too, so this allows exactly
        // MAX_INCLUDE_DEPTH nested includes; reading is recursive, and this
        // bound is what keeps any input from overflowing the stack.
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfigError::IncludeTooDeep {
                location,
                path,
                limit: MAX_INCLUDE_DEPTH,
            });
        }
        let (canonical, bytes) = open_target(&path).map_err(|source| ConfigError::Include {
            location: location.clone(),
            path: path.clone(),
            source,
        })?;
        if self.total_bytes + bytes.len() as u64 > MAX_TOTAL_BYTES {
            return Err(ConfigError::TooMuchConfig {
                location,
                path,
                limit: MAX_TOTAL_BYTES,
            });
        }
        if self.stack.contains(&canonical) {
            return Err(ConfigError::IncludeCycle { location, path });
        }
        if let Some(first) = self.included_at.get(&canonical) {
            return Err(ConfigError::IncludedTwice {
                location,
                path,
                first: first.clone(),
            });
        }
        self.included_at.insert(canonical.clone(), location);
        self.total_bytes += bytes.len() as u64;
        self.read_bytes(&bytes, &path, canonical)
    }
}

/// Upstream trims exactly these four characters, no other white space.
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

#[cfg(test)]
mod tests;
