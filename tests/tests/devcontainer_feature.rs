//! The Dev Container Feature's `install.sh` in a throwaway Debian bookworm
//! root (debootstrap, cached under target/packaging/; each run writes to an
//! overlay on top of it): it installs the binary for this architecture and
//! nothing else, refuses an archive whose sha256 is not the one given, and
//! the installed runner, with a container's default capabilities, watches a
//! listener there with the procfs backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::support::{free_port, privileged, runner_bin};

const FEATURE: &str = "xtask/packaging/devcontainer-feature/kandan-runner";
/// Docker's default capabilities: what an unprivileged container has.
const CONTAINER_CAPS: &str = "-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap";

/// Mounts an overlay of `lower` (upper layer in `layer`), the feature
/// folder at /mnt and a fresh /proc, then runs the command chrooted there.
const ENTER: &str = r#"set -e
lower=$1; layer=$2; feature=$3; shift 3
m=$layer/merged
mkdir -p "$layer/upper" "$layer/work" "$m"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$layer/upper,workdir=$layer/work" "$m"
mount --bind "$feature" "$m/mnt"
mount -t proc proc "$m/proc"
exec chroot "$m" "$@""#;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cached bookworm tree, made once (about 90 s).
fn bookworm() -> PathBuf {
    let dir = workspace().join("target/packaging");
    let root = dir.join("bookworm");
    if root.join("usr/bin/perl").exists() {
        return root;
    }
    let tmp = dir.join("bookworm.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .output()
        .expect("debootstrap (cargo xtask setup --tests installs it)");
    assert!(out.status.success(), "debootstrap: {out:?}");
    std::fs::rename(&tmp, &root).unwrap();
    root
}

/// Runs `args` inside a new mount and pid namespace chrooted in the overlay.
fn in_root(root: &Path, layer: &Path, feature: &Path, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--propagation", "private"])
        .args(["sh", "-c", ENTER, "sh"])
        .arg(root)
        .arg(layer)
        .arg(feature)
        .args(args)
        .output()
        .unwrap()
}

/// Regular files the overlay's upper layer holds: what the run added.
fn added(layer: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(layer.join("upper"))
        .args(["-type", "f", "-printf", "%P\n"])
        .output()
        .unwrap();
    let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    files.sort();
    files
}

/// The feature folder plus a release-shaped archive of the runner under
/// test (`kandan-runner-VERSION-TARGET/kandan-runner`), named per arch.
fn feature_with_archive(dir: &Path) -> (PathBuf, String) {
    let feature = dir.join("feature");
    std::fs::create_dir_all(&feature).unwrap();
    for file in ["devcontainer-feature.json", "install.sh"] {
        std::fs::copy(workspace().join(FEATURE).join(file), feature.join(file)).unwrap();
    }
    let version = Command::new(runner_bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let target = version
        .lines()
        .find_map(|line| line.strip_prefix("target: "))
        .unwrap()
        .to_owned();
    let arch = target.split('-').next().unwrap().to_owned();
    let name = format!("kandan-runner-0.1.0-{target}");
    let stage = dir.join(&name);
    std::fs::create_dir_all(&stage).unwrap();
    // Stripped: the debug binary's symbols would only slow the archive.
    let strip = Command::new("/usr/lib/llvm-22/bin/llvm-strip")
        .arg("-o")
        .arg(stage.join("kandan-runner"))
        .arg(runner_bin())
        .status()
        .unwrap();
    assert!(strip.success());
    let archive = feature.join(format!("archive-{arch}.tar.gz"));
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .arg(&name)
        .status()
        .unwrap();
    assert!(tar.success());
    let sum = Command::new("sha256sum").arg(&archive).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap().to_owned();
    (feature, format!("{arch}:{sum}"))
}

#[test]
fn feature_installs_only_the_binary_and_it_watches_with_procfs() {
    if !privileged("feature_installs_only_the_binary_and_it_watches_with_procfs") {
        return;
    }
    let root = bookworm();
    let dir = tempfile::tempdir().unwrap();
    let (feature, sum) = feature_with_archive(dir.path());
    let install = |layer: &Path, sha: &str| {
        in_root(
            &root,
            layer,
            &feature,
            &[
                "env",
                "ARCHIVEFILE=archive-{arch}.tar.gz",
                &format!("SHA256={sha}"),
                "sh",
                "/mnt/install.sh",
            ],
        )
    };

    // An archive that is not the one named by its checksum is refused.
    let tampered = dir.path().join("tampered");
    let wrong = format!("{}:{}", sum.split(':').next().unwrap(), "0".repeat(64));
    let out = install(&tampered, &wrong);
    assert!(
        !out.status.success(),
        "a wrong sha256 was accepted: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing it"),
        "{out:?}"
    );
    assert_eq!(
        added(&tampered),
        Vec::<String>::new(),
        "a refused install left files"
    );

    let layer = dir.path().join("layer");
    let out = install(&layer, &sum);
    assert!(out.status.success(), "install.sh: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\ncommit: "),
        "install.sh prints the installed --version: {out:?}"
    );
    assert_eq!(added(&layer), ["usr/local/bin/kandan-runner"]);

    // A container's capabilities: no CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN.
    let port_number = free_port().unwrap();
    let port = port_number.to_string();
    let listener = format!(
        "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => {port}, Listen => 5, ReuseAddr => 1) or die $!; sleep 3"
    );
    let out = in_root(
        &root,
        &layer,
        &feature,
        &[
            "setpriv",
            &format!("--bounding-set={CONTAINER_CAPS}"),
            "kandan-runner",
            "watch",
            "--json",
            "--",
            "perl",
            "-e",
            &listener,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "watch: {out:?}");
    assert!(stderr.contains("backend: procfs"), "{stderr}");
    let opened = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| {
            event["event"] == "opened" && event["port"].as_u64() == Some(port_number.into())
        });
    let opened = opened.unwrap_or_else(|| panic!("no opened event for {port}:\n{stdout}"));
    assert_eq!(opened["backend"], "procfs", "{opened}");
}
