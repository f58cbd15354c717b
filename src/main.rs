//! The `rgunicorn` binary: everything happens in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    rgunicorn::entry::main_binary()
}
