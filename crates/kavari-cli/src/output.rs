//! What the commands print: one line at a time to stdout. A reader that
//! stopped reading (`kavari tail orders | head`) ends the command quietly
//! with status 0, as it asked; any other write failure ends it with 1.

use std::fmt;
use std::io::Write;

/// Writes one line to stdout.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("kavari: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the commands: see [`line`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;
