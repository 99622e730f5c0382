//! User accounts through the system's user database (NSS, so LDAP and
//! systemd-homed users count, not only /etc/passwd).

use std::ffi::{CStr, CString};

/// The user a system service runs as when `--run-as` is absent: the one
/// behind `sudo` ($SUDO_USER), else the one running this process.
pub(crate) fn invoking_user() -> Option<String> {
    if let Some(user) = std::env::var("SUDO_USER")
        .ok()
        .filter(|user| !user.is_empty())
    {
        return Some(user);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    lookup(|pwd, buf, len, result| {
        // SAFETY: the pointers are valid for the call, `len` is `buf`'s size.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })
}

/// True when `name` is a user of this system.
pub(crate) fn exists(name: &str) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    lookup(|pwd, buf, len, result| {
        // SAFETY: as above; `name` is a valid C string for the call.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result) }
    })
    .is_some()
}

/// Runs a `getpw*_r` call, growing the buffer on ERANGE; the user's name.
fn lookup(
    call: impl Fn(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> Option<String> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: passwd is plain data; all-zero is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), len, &mut result);
        if rc == libc::ERANGE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points into `buf`, NUL-terminated.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_and_a_made_up_name_does_not() {
        assert!(exists("root"));
        assert!(!exists("no-such-user-kandan-4242"));
        assert!(!exists("nul\0name"));
    }
}
