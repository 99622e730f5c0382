//! The OS layer of the libproc backend: libproc calls and nothing else.

use std::io;

use libproc::libproc::bsd_info::BSDInfo;
use libproc::libproc::file_info::{ListFDs, ProcFDType, pidfdinfo};
use libproc::libproc::net_info::{SocketFDInfo, SocketInfoKind, TcpSIState};
use libproc::libproc::proc_pid::{listpidinfo, pidinfo};
use libproc::processes::{ProcFilter, pids_by_type};

use super::logic::{ProcSource, RawListen, decode_inet};
use crate::detect::process_info::ProcessInfo;

/// The running macOS kernel.
pub(crate) struct Darwin;

impl Darwin {
    /// Whether the process table can be listed.
    pub(crate) fn probe() -> Result<(), String> {
        pids_by_type(ProcFilter::All)
            .map(drop)
            .map_err(|err| format!("proc_listpids failed: {err}"))
    }
}

impl ProcSource for Darwin {
    fn parents(&self) -> io::Result<Vec<(u32, u32)>> {
        let pids = pids_by_type(ProcFilter::All)?;
        Ok(pids
            .into_iter()
            .filter_map(|pid| {
                let info = pidinfo::<BSDInfo>(i32::try_from(pid).ok()?, 0).ok()?;
                Some((pid, info.pbi_ppid))
            })
            .collect())
    }

    fn listening(&self, pid: u32) -> Vec<RawListen> {
        let Ok(pid) = i32::try_from(pid) else {
            return Vec::new();
        };
        let Ok(info) = pidinfo::<BSDInfo>(pid, 0) else {
            return Vec::new();
        };
        let Ok(fds) = listpidinfo::<ListFDs>(pid, info.pbi_nfiles as usize) else {
            return Vec::new();
        };
        fds.into_iter()
            .filter(|fd| fd.proc_fdtype == ProcFDType::Socket as u32)
            .filter_map(|fd| listen_socket(pid, fd.proc_fd))
            .collect()
    }

    fn describe(&self, pid: u32) -> ProcessInfo {
        crate::detect::process_info::describe(pid)
    }
}

/// The fd's socket when it is a TCP socket in `TSI_S_LISTEN`.
fn listen_socket(pid: i32, fd: i32) -> Option<RawListen> {
    let info = pidfdinfo::<SocketFDInfo>(pid, fd).ok()?;
    if info.psi.soi_kind != SocketInfoKind::Tcp as i32 {
        return None;
    }
    // SAFETY: `soi_kind == SOCKINFO_TCP` says `pri_tcp` is the live field.
    let tcp = unsafe { info.psi.soi_proto.pri_tcp };
    if tcp.tcpsi_state != TcpSIState::Listen as i32 {
        return None;
    }
    let ini = tcp.tcpsi_ini;
    // SAFETY: both views of the union are plain bytes of one address.
    let (addr4, addr6) = unsafe {
        (
            ini.insi_laddr.ina_46.i46a_addr4.s_addr.to_ne_bytes(),
            ini.insi_laddr.ina_6.s6_addr,
        )
    };
    let (addr, port) = decode_inet(ini.insi_vflag, ini.insi_lport, addr4, addr6)?;
    Some(RawListen {
        so: info.psi.soi_so,
        addr,
        port,
    })
}
