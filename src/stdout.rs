//! Writing command output: a reader that went away (`taskyard task show 1 | head -3`) ends the
//! command quietly, as it does other command-line tools, instead of a panic on the closed pipe.

use std::io::Write;

/// `println!` for what a command prints (see the module doc).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes one line of command output; exits quietly when the reader has gone.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}
