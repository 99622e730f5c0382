//! Reading `--token-file`: without capabilities ([`crate::user_file`]),
//! with a warning when group or others may read it (as ssh warns about a
//! key), and `-` for standard input. The system service hands the token on
//! standard input (`StandardInput=file:`, opened by systemd as root), so
//! the file stays root's 0600 and the service user, the tree included,
//! cannot open it; once read, fd 0 becomes /dev/null, so no descendant
//! inherits it (PROTOCOL.md section 5, "Privilege").

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// A token is a line; larger files are not token files.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// The text of the token file `path` (`-`: standard input).
pub(crate) fn read(path: &Path) -> io::Result<String> {
    if path == Path::new("-") {
        return read_stdin();
    }
    let file = crate::user_file::open(path, false)?;
    if crate::user_file::readable_by_others(&file) {
        tracing::warn!(
            "--token-file {}: group or others can read it; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    crate::user_file::read_limited(file, MAX_TOKEN_FILE)
}

/// Reads the token from fd 0, then puts /dev/null in its place.
fn read_stdin() -> io::Result<String> {
    let file = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    if crate::user_file::readable_by_others(&file) {
        // Its name, for the fix (Linux; elsewhere "the file").
        let name = std::fs::read_link("/proc/self/fd/0")
            .map_or_else(|_| "the file".to_owned(), |path| path.display().to_string());
        tracing::warn!(
            "--token-file -: {name} on standard input: group or others can read it; run `chmod 600 {name}`"
        );
    }
    let text = crate::user_file::read_limited(file, MAX_TOKEN_FILE);
    let null = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
    // SAFETY: dup2 of two descriptors we hold; fd 0 is replaced atomically.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    text
}
