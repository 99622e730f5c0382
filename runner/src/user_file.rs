//! Files a person names (the config file, a project's `.kandan/ports.toml`,
//! token files) are opened with that person's rights only: a service with
//! `CAP_DAC_READ_SEARCH` must not read a root-only file for an agent that
//! symlinked it into a project. The effective capabilities of the calling
//! thread are lowered around the `open` (PROTOCOL.md section 5,
//! "Privilege"); reading an open descriptor needs none. Lowering is the
//! kernel's own check, so it has no window between a check and the open
//! that an ownership test would have.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` read-only without capabilities. `nonblock`: a FIFO put
/// there does not block the open.
pub(crate) fn open(path: &Path, nonblock: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    if nonblock {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    }
    #[cfg(target_os = "linux")]
    return crate::caps::without_effective(|| options.open(path));
    #[cfg(not(target_os = "linux"))]
    options.open(path)
}

/// The whole of `path` as text, opened as [`open`] does, at most `limit`
/// bytes (`InvalidData` past it).
pub(crate) fn read_to_string(path: &Path, limit: u64) -> io::Result<String> {
    let file = open(path, false)?;
    read_limited(file, limit)
}

/// Up to `limit` bytes of `file` as text (`InvalidData` past it).
pub(crate) fn read_limited(file: File, limit: u64) -> io::Result<String> {
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(text)
}

/// Group or others may read the file behind `file` (as ssh checks a key).
pub(crate) fn readable_by_others(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.mode() & 0o044 != 0)
}

/// The uid that owns the file behind `file`.
pub(crate) fn owner(file: &File) -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_within_the_limit_and_sees_loose_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(read_to_string(&path, 3).unwrap(), "abc");
        let err = read_to_string(&path, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!readable_by_others(&open(&path, false).unwrap()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(readable_by_others(&open(&path, false).unwrap()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(readable_by_others(&open(&path, false).unwrap()));
    }
}
