//! Loading in a short-lived child process. aya 0.14's `EbpfLoader::new()`
//! reads and parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, 5.5 MB)
//! although our tracepoint programs need no CO-RE, and that peak would stay
//! the runner's `VmHWM` for good (~28 MB against ~10 MB without it). So
//! the runner executes itself again (`/proc/self/exe`, marked by its
//! `argv[0]`); the child loads the object with the runner's globals,
//! attaches the tracepoints, hands the maps and the attachments over as
//! descriptors (`SCM_RIGHTS`) and exits. The runner waits for it and reaps
//! it; the programs stay attached for as long as it holds the descriptors.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Map, MapData},
};

use super::fd_passing;
use super::loader::{self, LoadError, Loaded, MAPS, Request};

/// `argv[0]` of the loader child: no option a user could type.
const ARG0: &str = "kandan-runner-ebpf-loader";

/// How long a load may take (the verifier is slow on a loaded machine).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Set when this binary's `main` serves the loader child (the runner);
/// other users of the library (tests) load in their own process.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// First thing in `main`: in the loader child, loads, answers and exits;
/// in the runner, makes [`loader::load`] use the child.
pub(crate) fn run_if_asked() {
    let mut args = std::env::args_os();
    if args.next().as_deref() != Some(ARG0.as_ref()) {
        ENABLED.store(true, Ordering::Relaxed);
        return;
    }
    std::process::exit(serve(args.collect()));
}

pub(super) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// In the runner: starts the child, takes its descriptors, reaps it.
pub(super) fn load(request: Request) -> Result<Loaded, LoadError> {
    let (ours, theirs) = UnixStream::pair().map_err(LoadError::Spawn)?;
    let mut child = Command::new("/proc/self/exe")
        .arg0(ARG0)
        .args(encode(request))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(LoadError::Spawn)?;
    let received = ours
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| fd_passing::receive(&ours));
    if received.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let (payload, mut fds) = received.map_err(LoadError::Handover)?;
    match payload.split_first() {
        Some((b'+', _)) if fds.len() > MAPS.len() => {
            let links = fds.split_off(MAPS.len());
            let maps = MAPS
                .iter()
                .zip(fds)
                .map(|(&name, fd)| {
                    MapData::from_fd(fd)
                        .and_then(Map::from_map_data)
                        .map_err(|source| LoadError::Map { name, source })
                })
                .collect::<Result<Vec<_>, _>>()?;
            loader::assemble(maps, Arc::new(links))
        }
        Some((b'-', message)) => Err(LoadError::Child(
            String::from_utf8_lossy(message).into_owned(),
        )),
        _ => Err(LoadError::ChildEnded(match status {
            Ok(status) => status.to_string(),
            Err(err) => err.to_string(),
        })),
    }
}

/// The runner's pid (for the child's check) and the request.
fn encode(request: Request) -> [String; 4] {
    [
        std::process::id().to_string(),
        request.self_pid.to_string(),
        request.ring_bytes.to_string(),
        u8::from(request.watch_cgroups).to_string(),
    ]
}

fn decode(args: &[OsString]) -> Option<(u32, Request)> {
    let number = |i: usize| args.get(i)?.to_str()?.parse::<u32>().ok();
    (args.len() == 4).then_some(())?;
    let request = Request {
        self_pid: number(1)?,
        ring_bytes: number(2)?,
        watch_cgroups: number(3)? == 1,
    };
    Some((number(0)?, request))
}

/// In the child: loads and sends `+` with the maps' descriptors (in
/// [`MAPS`] order) then the attachments', or `-` and the error. Returns the
/// exit code.
fn serve(args: Vec<OsString>) -> i32 {
    // SAFETY: stdin is the socket the runner passed (it is nothing else
    // when argv[0] is ours), owned by nobody else in this process.
    let socket = UnixStream::from(unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(libc::STDIN_FILENO)
    });
    let Some((runner, request)) = decode(&args) else {
        return 2;
    };
    // Never outlive the runner; its pid is checked, as it may have died
    // before the prctl.
    // SAFETY: prctl with integer arguments; getppid has no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() as u32 != runner {
            return 3;
        }
    }
    let sent = match loader::attach_here(request)
        .and_then(|ebpf| descriptors(&ebpf).map(|fds| (ebpf, fds)))
    {
        Ok((ebpf, fds)) => {
            let sent = fd_passing::send(&socket, b"+", &fds);
            // Exit without running aya's drops: a detach would disable the
            // perf events the runner now shares.
            std::mem::forget(ebpf);
            sent
        }
        Err(err) => {
            let message = format!("-{}", crate::error_chain(&err));
            fd_passing::send(&socket, message.as_bytes(), &[])
        }
    };
    i32::from(sent.is_err())
}

/// The maps' descriptors in [`MAPS`] order, then every attachment: the BPF
/// links (or, on kernels without perf links, the perf events that hold the
/// programs), found among this fresh process's descriptors.
fn descriptors(ebpf: &Ebpf) -> Result<Vec<RawFd>, LoadError> {
    let mut fds = Vec::new();
    for name in MAPS {
        let data = match ebpf.map(name) {
            Some(
                Map::RingBuf(data) | Map::PerCpuArray(data) | Map::HashMap(data) | Map::Array(data),
            ) => data,
            _ => return Err(LoadError::MissingMap(name)),
        };
        fds.push(data.fd().as_fd().as_raw_fd());
    }
    let attachments = std::fs::read_dir("/proc/self/fd")
        .map_err(LoadError::Handover)?
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| {
                matches!(
                    target.to_str(),
                    Some("anon_inode:bpf_link" | "anon_inode:[perf_event]")
                )
            })
        })
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok());
    fds.extend(attachments);
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_the_command_line() {
        let request = Request {
            self_pid: 4242,
            ring_bytes: 1 << 18,
            watch_cgroups: true,
        };
        let args: Vec<OsString> = encode(request).into_iter().map(OsString::from).collect();
        assert_eq!(decode(&args), Some((std::process::id(), request)));
        assert_eq!(decode(&args[..3]), None);
    }
}
