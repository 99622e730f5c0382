//! The runner loads its eBPF programs in a short-lived child process, so
//! that aya's parse of the kernel's BTF never counts in the runner's peak
//! RSS (privileged; `--test-threads=1`).

use std::time::Duration;

use integration_tests::bench::procstat::{peak_rss_kib, rss_kib, stat};
use integration_tests::support::{ebpf_watch_of_sleep, privileged};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_btf_parse_stays_out_of_the_runner() {
    if !privileged("the_btf_parse_stays_out_of_the_runner") {
        return;
    }
    let runner = ebpf_watch_of_sleep(WAIT).await;
    let pid = runner.id().unwrap();
    // The programs stay attached through the descriptors handed over.
    let links = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| t.to_str() == Some("anon_inode:bpf_link"))
        })
        .count();
    assert_eq!(links, 6, "bpf links held by the runner");
    // The loader child is gone and reaped: soon (the watched command may
    // still be on its way to `exec`) the runner's only child, zombies
    // included, is the watched `sleep`.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let children = children_of(pid);
        if children == ["sleep"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "children of the runner: {children:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Parsing /sys/kernel/btf/vmlinux needs more than the file's size; a
    // runner that parsed it peaked that far above what it holds now.
    let btf = std::fs::metadata("/sys/kernel/btf/vmlinux").unwrap().len() / 1024;
    let (peak, now) = (peak_rss_kib(pid).unwrap(), rss_kib(pid).unwrap());
    assert!(
        peak < now + btf,
        "peak RSS {peak} KiB, now {now} KiB: the {btf} KiB of BTF were parsed here"
    );
}

/// The `comm` of each child of `pid` (the loader child would be `exe`).
fn children_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat(p).is_ok_and(|s| s.ppid == pid))
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .collect()
}
