//! The listener helper: one long-lived process in the watched tree that
//! opens and closes listeners on command, timestamping each `listen()`.
//!
//! Protocol, one line each way (stdin / stdout):
//! `open PORT` -> `opened PORT BEFORE_NS AFTER_NS` or `error PORT ERRNO`;
//! `close PORT` -> `closed PORT`; `storm RATE SECONDS` -> `stormed COUNT`
//! (listen and close on 127.0.0.1 with a kernel-picked port, RATE times per
//! second). EOF on stdin ends it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::clock::monotonic_ns;
use super::guard::Guarded;

/// Runs the helper side until stdin closes.
pub fn serve() -> Result<()> {
    let stdin = io::stdin().lock();
    let mut out = io::stdout().lock();
    let mut open: HashMap<u16, OwnedFd> = HashMap::new();
    for line in stdin.lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["open", port] => {
                let port: u16 = port.parse().context("bad port")?;
                match listen_on(port) {
                    Ok((fd, before, after)) => {
                        open.insert(port, fd);
                        format!("opened {port} {before} {after}")
                    }
                    Err(err) => format!("error {port} {}", err.raw_os_error().unwrap_or(0)),
                }
            }
            ["close", port] => {
                let port: u16 = port.parse().context("bad port")?;
                open.remove(&port);
                format!("closed {port}")
            }
            ["storm", rate, seconds] => {
                let count = storm(rate.parse()?, seconds.parse()?);
                format!("stormed {count}")
            }
            _ => format!("error bad-command {line}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// A listening socket on 127.0.0.1:`port` (0: the kernel picks), with the
/// monotonic time right before and right after `listen()`.
fn listen_on(port: u16) -> io::Result<(OwnedFd, u64, u64)> {
    // SAFETY: plain socket calls on an fd we own; the sockaddr outlives bind.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let before = monotonic_ns();
        let listened = libc::listen(fd.as_raw_fd(), 16);
        let after = monotonic_ns();
        if listened < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((fd, before, after))
    }
}

/// `rate` listen/close per second for `seconds`, paced on a fixed schedule.
fn storm(rate: u64, seconds: u64) -> u64 {
    let period = 1_000_000_000 / rate.max(1);
    let start = monotonic_ns();
    let mut count = 0;
    for i in 0..rate * seconds {
        let due = start + i * period;
        let now = monotonic_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        if listen_on(0).is_ok() {
            count += 1;
        }
    }
    count
}

/// When a listener went up, as the helper measured it.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub before_ns: u64,
    pub after_ns: u64,
}

/// The harness side: a running helper.
pub struct Helper {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    // Last: dropping closes stdin first, so the helper ends by itself.
    guard: Guarded,
}

impl Helper {
    /// Starts `bench_exe helper`.
    pub fn spawn(bench_exe: &Path, name: &str) -> Result<Self> {
        let mut command = Command::new(bench_exe);
        command
            .arg("helper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut guard = Guarded::spawn(command, name)?;
        let stdin = guard.child().stdin.take().context("helper stdin")?;
        let stdout = BufReader::new(guard.child().stdout.take().context("helper stdout")?);
        Ok(Helper {
            stdin,
            stdout,
            guard,
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn ask(&mut self, request: &str) -> Result<String> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let mut reply = String::new();
        if self.stdout.read_line(&mut reply)? == 0 {
            bail!("{} ended while asked `{request}`", self.guard.name());
        }
        Ok(reply.trim().to_string())
    }

    /// Listens on `port`; `None` when the port is taken (or listen failed).
    pub fn open(&mut self, port: u16) -> Result<Option<Opened>> {
        let reply = self.ask(&format!("open {port}"))?;
        let words: Vec<&str> = reply.split_whitespace().collect();
        match words.as_slice() {
            ["opened", _, before, after] => Ok(Some(Opened {
                before_ns: before.parse()?,
                after_ns: after.parse()?,
            })),
            ["error", ..] => Ok(None),
            _ => bail!("helper: unexpected reply {reply:?}"),
        }
    }

    pub fn close(&mut self, port: u16) -> Result<()> {
        self.ask(&format!("close {port}")).map(drop)
    }

    /// Runs a storm and blocks until it is over; the number of listeners.
    pub fn storm(&mut self, rate: u64, seconds: u64) -> Result<u64> {
        let reply = self.ask(&format!("storm {rate} {seconds}"))?;
        match reply.strip_prefix("stormed ") {
            Some(count) => Ok(count.parse()?),
            None => bail!("helper: unexpected reply {reply:?}"),
        }
    }
}
