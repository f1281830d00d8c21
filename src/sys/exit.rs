//! Exit codes of both programs, from sysexits.h, as admins' scripts and
//! systemd's `RestartPreventExitStatus=` expect them.

pub const OK: u8 = 0;
/// Command line usage error.
pub const USAGE: u8 = 64;
/// The audit log failed verification.
pub const DATAERR: u8 = 65;
/// The collector did not accept the report; the database is unavailable.
pub const UNAVAILABLE: u8 = 69;
/// A bug in surveyd (systemd's Restart= brings the service back).
pub const SOFTWARE: u8 = 70;
/// The system refused a resource: a runtime, a signal handler, a socket.
pub const OSERR: u8 = 71;
/// The audit log could not be written: nothing was sent. From the
/// service, also a log that only the admin can make writable again.
pub const CANTCREAT: u8 = 73;
pub const IOERR: u8 = 74;
/// The configuration is invalid, or forbids what was asked. The units'
/// RestartPreventExitStatus=78 keeps a service that ends so stopped.
pub const CONFIG: u8 = 78;
