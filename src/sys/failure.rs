//! How a command or a service ends when it did not succeed.

use std::fmt::{self, Display};
use std::process::ExitCode;

use super::notify;

/// A command or a service failed: the sysexits code the process ends
/// with, and what to tell the admin: what failed, where, what to do.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Display) -> Failure {
        Failure {
            code,
            message: message.to_string(),
        }
    }

    pub fn code(&self) -> u8 {
        self.code
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Ends an admin command: a failure's message goes to standard error,
/// prefixed with the program's name, and its code becomes the exit status.
pub fn end_command(program: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{program}: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

/// Ends a service: a failure is logged (the journal, under systemd) and
/// left in STATUS, so `systemctl status` shows why the unit failed next
/// to its exit status.
pub fn end_service(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            tracing::error!("{failure}");
            notify::status(&format!("failed: {failure}"));
            ExitCode::from(failure.code)
        }
    }
}
