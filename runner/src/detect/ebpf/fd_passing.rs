//! One message with file descriptors over a Unix stream socket
//! (`SCM_RIGHTS`): how the loader child hands the runner its maps and
//! attachments.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// At most this many descriptors in one message (seven maps and six links
/// are sent; room for kernels that attach through perf events instead).
const MAX_FDS: usize = 32;

/// Sends `payload` with `fds` attached to its first byte.
pub(super) fn send(socket: &UnixStream, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(!payload.is_empty() && fds.len() <= MAX_FDS);
    let fd_bytes = std::mem::size_of_val(fds);
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut control = vec![0u64; control_words()];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the
    // sendmsg call, and the cmsg written fits the buffer (CMSG_SPACE).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
        libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The rest, if any (the descriptors went with the first bytes).
    io::Write::write_all(&mut &*socket, &payload[sent as usize..])
}

/// Receives what [`send`] sent, reading until the sender closes its end.
pub(super) fn receive(socket: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut first = [0u8; 4096];
    let mut control = vec![0u64; control_words()];
    let mut iov = libc::iovec {
        iov_base: first.as_mut_ptr().cast(),
        iov_len: first.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: as in `send`; the kernel fills at most `msg_controllen` bytes
    // and every SCM_RIGHTS descriptor it reports is new and ours to own.
    let read = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = (control.len() * 8) as _;
        let read = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if read < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data: *const RawFd = libc::CMSG_DATA(cmsg).cast();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("descriptors were cut off"));
        }
        read as usize
    };
    let mut payload = first[..read].to_vec();
    if read > 0 {
        (&*socket).read_to_end(&mut payload)?;
    }
    Ok((payload, fds))
}

fn control_words() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    let bytes = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    (bytes as usize).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// Descriptors arrive as new descriptors of the same open files.
    #[test]
    fn descriptors_and_payload_arrive() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let (pipe_r, mut pipe_w) = io::pipe().unwrap();
        let payload = vec![b'x'; 10_000];
        let sender = std::thread::spawn(move || {
            send(&a, &payload, &[file.as_raw_fd(), pipe_r.as_raw_fd()]).unwrap();
        });
        let (got, fds) = receive(&b).unwrap();
        sender.join().unwrap();
        assert_eq!(got.len(), 10_000);
        assert_eq!(fds.len(), 2);
        io::Write::write_all(&mut pipe_w, b"hi").unwrap();
        let mut read = [0u8; 2];
        let mut received = std::fs::File::from(fds[1].as_fd().try_clone_to_owned().unwrap());
        received.read_exact(&mut read).unwrap();
        assert_eq!(&read, b"hi");
    }

    /// A sender that closes without a word gives an empty payload.
    #[test]
    fn a_closed_sender_gives_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let (got, fds) = receive(&b).unwrap();
        assert!(got.is_empty() && fds.is_empty());
    }
}
