//! Command output that never panics.
//!
//! `println!` and `eprintln!` panic when their stream cannot be written, and
//! Rust ignores SIGPIPE, so `attestation-broker check-config … | head -1` used
//! to end in a stack trace and exit code 101. Every command writes stdout
//! through [`emit`] (or [`write_stdout`]) and stderr through [`report!`]:
//!
//! - when the reader of stdout has gone away (`BrokenPipe`), the rest of the
//!   output is dropped quietly and the command exits with the code it had
//!   already decided (so `policy diff … | head` under `pipefail` still fails
//!   on a broadening);
//! - any other stdout write error is reported on stderr, exit [`EXIT_OUTPUT`];
//! - a failed write to stderr is ignored: there is no better place left to
//!   report it.

use std::io::{self, Write};
use std::process::ExitCode;

/// Exit code when stdout fails for a reason other than a closed pipe
/// (sysexits `EX_IOERR`).
pub const EXIT_OUTPUT: u8 = 74;

/// `eprintln!` that ignores a failed write instead of panicking.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use report;

/// Writes to the locked stdout and flushes. A closed pipe counts as success:
/// nobody is left to read the rest.
pub fn write_stdout(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes a command's output with [`write_stdout`] and returns `code`, or
/// [`EXIT_OUTPUT`] (with a line on stderr) when stdout failed otherwise.
pub fn emit(code: ExitCode, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> ExitCode {
    match write_stdout(write) {
        Ok(()) => code,
        Err(err) => {
            report!("error: cannot write to stdout: {err}");
            ExitCode::from(EXIT_OUTPUT)
        }
    }
}
