//! Exit codes of both programs, from sysexits.h, as admins' scripts and
//! systemd's `RestartPreventExitStatus=` expect them.

pub const OK: u8 = 0;
/// Command line usage error.
pub const USAGE: u8 = 64;
/// The audit log failed verification.
pub const DATAERR: u8 = 65;
/// The collector did not accept the report; the database is unavailable.
pub const UNAVAILABLE: u8 = 69;
pub const SOFTWARE: u8 = 70;
pub const OSERR: u8 = 71;
/// The audit log could not be written: nothing was sent.
pub const CANTCREAT: u8 = 73;
pub const IOERR: u8 = 74;
/// The configuration is invalid, or forbids what was asked.
pub const CONFIG: u8 = 78;
