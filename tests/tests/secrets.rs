//! Secrets through the binary (PROTOCOL.md section 5): the token never
//! reaches the started command's environment nor any log line at any
//! `RUST_LOG` level; a `user:password@` in the URL is redacted;
//! `--token-file` keeps the token out of `ps`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::WAIT;
use integration_tests::runner_run::RunnerRun;
use integration_tests::simulator::{SimConfig, Simulator};

/// Recognisable, and made of URL-unreserved characters so it would appear
/// as is in a logged URL.
const TOKEN: &str = "kandan-secret-token-7f3e9a";

async fn simulator() -> Result<Simulator> {
    Ok(Simulator::start(SimConfig {
        token: TOKEN.to_owned(),
        ..SimConfig::default()
    })
    .await?)
}

/// Stops `runner` with SIGTERM and waits for it.
async fn stop(runner: &mut RunnerRun) -> Result<()> {
    runner.signal(libc::SIGTERM);
    runner.wait(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn the_token_is_not_in_the_commands_environment() -> Result<()> {
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    let env_file = dir.path().join("env");
    let script = format!("env > {}; exec sleep 300", env_file.display());
    let url = sim.url();
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--runner-id",
            "secrets-env",
            "--backend",
            "procfs",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[
            ("KANDAN_TOKEN", TOKEN),
            ("KANDAN_URL", &url),
            // systemd's LoadCredential= folder, and any runner variable.
            (
                "CREDENTIALS_DIRECTORY",
                "/run/credentials/kandan-runner.service",
            ),
            ("KANDAN_SOMETHING_ELSE", "x"),
        ],
    )?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let env = loop {
        let env = std::fs::read_to_string(&env_file).unwrap_or_default();
        if env.contains("PATH=") {
            break env;
        }
        ensure!(tokio::time::Instant::now() < deadline, "no env written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop(&mut runner).await?;
    ensure!(!env.contains(TOKEN), "the token reached the command: {env}");
    ensure!(!env.contains("KANDAN_TOKEN="), "{env}");
    ensure!(!env.contains("KANDAN_URL="), "{env}");
    ensure!(!env.contains("CREDENTIALS_DIRECTORY="), "{env}");
    ensure!(!env.contains("KANDAN_SOMETHING_ELSE="), "{env}");
    // The runner's own marker, set by it, stays.
    ensure!(env.contains("KANDAN_RUNNER_TREE="), "{env}");
    Ok(())
}

#[tokio::test]
async fn the_token_is_in_no_log_line_at_any_level() -> Result<()> {
    let sim = simulator().await?;
    let url = sim.url();
    for (n, level) in [
        "trace",
        "tungstenite=trace,tokio_tungstenite=trace,hyper=trace,rustls=trace,trace",
        "debug",
        "info",
        "warn",
    ]
    .into_iter()
    .enumerate()
    {
        let mut runner = RunnerRun::start(
            [
                "connect",
                "--url",
                &url,
                "--runner-id",
                "secrets-logs",
                "--backend",
                "procfs",
            ],
            &[("KANDAN_TOKEN", TOKEN), ("RUST_LOG", level)],
        )?;
        sim.wait_join_count(n + 1, WAIT)
            .await
            .with_context(|| runner.output())?;
        stop(&mut runner).await?;
        let stderr = runner.stderr();
        ensure!(
            !stderr.contains(TOKEN),
            "RUST_LOG={level} printed the token:\n{stderr}"
        );
        if level.ends_with("trace") || level == "debug" {
            // The level applied: the runner's own debug lines are there.
            ensure!(stderr.contains("joining"), "RUST_LOG={level}:\n{stderr}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn url_userinfo_is_redacted_in_logs() -> Result<()> {
    let sim = simulator().await?;
    let url = sim.url().replacen("ws://", "ws://alice:hunter2@", 1);
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--runner-id",
            "secrets-url",
            "--backend",
            "procfs",
        ],
        &[("RUST_LOG", "debug")],
    )?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !runner.stderr().contains("<redacted>@") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the URL was never logged: {}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&mut runner).await?;
    let stderr = runner.stderr();
    ensure!(!stderr.contains("hunter2"), "{stderr}");
    ensure!(!stderr.contains(TOKEN), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn token_file_is_read_once_and_trimmed() -> Result<()> {
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {TOKEN}\n"))?;
    let file_arg = file.to_str().context("path")?;
    let url = sim.url();
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--url",
            &url,
            "--token-file",
            file_arg,
            "--runner-id",
            "secrets-file",
            "--backend",
            "procfs",
        ],
        // The file takes the place of the environment's token.
        &[("KANDAN_TOKEN", "not-the-token")],
    )?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    ensure!(!std::fs::read_to_string(format!("/proc/{}/cmdline", runner.pid()))?.contains(TOKEN));
    // Read once: after the file changes, a reconnect still presents the
    // token read at start.
    std::fs::write(&file, "another")?;
    sim.drop_connection()?;
    sim.wait_join_count(2, WAIT)
        .await
        .with_context(|| runner.output())?;
    stop(&mut runner).await?;
    Ok(())
}

#[tokio::test]
async fn bad_token_files_are_one_line_errors_with_exit_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n")?;
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let missing = dir.path().join("missing");
    let token_file = |path: &std::path::Path| path.to_string_lossy().into_owned();
    for (args, says) in [
        (
            vec!["--token-file".to_owned(), token_file(&missing)],
            "cannot read",
        ),
        (vec!["--token-file".to_owned(), token_file(&empty)], "empty"),
        (
            vec![
                "--token".to_owned(),
                "x".to_owned(),
                "--token-file".to_owned(),
                token_file(&empty),
            ],
            "cannot be used with --token",
        ),
    ] {
        let mut all = vec![
            "connect".to_owned(),
            "--url".to_owned(),
            "ws://127.0.0.1:9/runner/socket".to_owned(),
        ];
        all.extend(args.iter().cloned());
        let mut runner = RunnerRun::start(&all, &[])?;
        let (status, _) = runner.wait(Duration::from_secs(10)).await?;
        let stderr = runner.stderr();
        ensure!(status.code() == Some(2), "{args:?}: {status} {stderr}");
        ensure!(stderr.lines().count() == 1, "{args:?}: {stderr}");
        ensure!(stderr.contains("--token-file"), "{args:?}: {stderr}");
        ensure!(stderr.contains(says), "{args:?}: {stderr}");
    }
    Ok(())
}

/// The agent runs as the runner's user, so file permissions do not keep it
/// from `/proc/<runner>/environ`, where `KANDAN_TOKEN` sits: with a token,
/// the runner makes itself non-dumpable, which leaves that file to root.
/// Runner and command run as `nobody` here (root could read it anyway).
#[tokio::test]
async fn the_command_cannot_read_the_token_from_the_runners_environment() -> Result<()> {
    if !integration_tests::support::privileged(
        "the_command_cannot_read_the_token_from_the_runners_environment",
    ) {
        return Ok(());
    }
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let out = dir.path().join("read");
    // $PPID of the command is the runner that started it.
    let script = format!(
        "cat /proc/$PPID/environ > {out} 2>&1; echo \"exit $?\" >> {out}; exec sleep 300",
        out = out.display()
    );
    let mut child = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(integration_tests::support::runner_bin())
        .args([
            "connect",
            "--runner-id",
            "secrets-environ",
            "--backend",
            "procfs",
        ])
        .args(["--", "sh", "-c", &script])
        .env("KANDAN_TOKEN", TOKEN)
        .env("KANDAN_URL", sim.url())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let read = loop {
        let read = std::fs::read(&out).unwrap_or_default();
        if read.windows(5).any(|w| w == b"exit ") {
            break String::from_utf8_lossy(&read).replace('\0', " ");
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the command never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill has no memory preconditions; the group is ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait().await;
    ensure!(!read.contains(TOKEN), "the command read the token: {read}");
    ensure!(read.contains("Permission denied"), "{read}");
    Ok(())
}

/// A token file group or others may read gets a warning naming it and the
/// fix (as ssh warns about a key); a 0600 one gets none. The warning never
/// holds the token.
#[tokio::test]
async fn a_token_file_readable_by_others_is_warned_about() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    std::fs::write(&file, TOKEN)?;
    let path = file.to_str().context("path")?;
    for (mode, warned) in [(0o644, true), (0o640, true), (0o600, false)] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
        let mut runner = RunnerRun::start(["doctor", "--token-file", path], &[])?;
        runner.wait(Duration::from_secs(30)).await?;
        let stderr = runner.stderr();
        let warning = stderr.lines().find(|line| line.contains("group or others"));
        ensure!(warning.is_some() == warned, "mode {mode:o}: {stderr}");
        if let Some(line) = warning {
            ensure!(line.contains(path), "{line}");
            ensure!(line.contains(&format!("chmod 600 {path}")), "{line}");
        }
        ensure!(!runner.output().contains(TOKEN), "{}", runner.output());
    }
    // On standard input (`--token-file -`), the file is named too.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    let output = std::process::Command::new(integration_tests::support::runner_bin())
        .args(["doctor", "--token-file", "-"])
        .env("XDG_CONFIG_HOME", "/nonexistent/kandan-runner-tests")
        .stdin(std::fs::File::open(&file)?)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains(&format!(
            "group or others can read it; run `chmod 600 {path}`"
        )),
        "{stderr}"
    );
    ensure!(!stderr.contains(TOKEN), "{stderr}");
    Ok(())
}

/// The system unit's way (PROTOCOL.md section 5, "Privilege"): systemd
/// opens the root-only token file as root and gives it to the runner as
/// stdin (`StandardInput=file:`), then runs it as `User=` (nobody here,
/// with `CREDENTIALS_DIRECTORY` set as a unit with `LoadCredential=` would
/// have it). The command, the same user, tries every way to the token: the
/// file, `$CREDENTIALS_DIRECTORY`, its own environment, the runner's
/// environ and descriptors, its own stdin (rewound). None may work.
#[tokio::test]
async fn the_service_tree_cannot_read_the_token_in_any_way() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !integration_tests::support::privileged("the_service_tree_cannot_read_the_token_in_any_way")
    {
        return Ok(());
    }
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    // root's, 0600, as /etc/kandan-runner/token.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    // A credentials folder the service user may read, as systemd makes it.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials)?;
    std::fs::write(credentials.join("token"), TOKEN)?;
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(
        credentials.join("token"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    let out = dir.path().join("read");
    let script = format!(
        r#"R=$PPID
{{
echo "== file"; cat {token}
echo "== credentials"; cat "$CREDENTIALS_DIRECTORY/token"
echo "== env"; env
echo "== environ"; cat /proc/$R/environ
echo "== runner fds"; ls -l /proc/$R/fd/
for f in /proc/$R/fd/*; do timeout 1 cat "$f"; done
echo "== own stdin"; timeout 1 perl -e 'seek(STDIN, 0, 0); print <STDIN>'
timeout 1 cat /proc/self/fd/0
echo "== done"
}} > {out} 2>&1; exec sleep 300"#,
        token = token_file.display(),
        out = out.display()
    );
    let mut child = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(integration_tests::support::runner_bin())
        .args([
            "connect",
            "--token-file",
            "-",
            "--runner-id",
            "secrets-service",
            "--backend",
            "procfs",
        ])
        .args(["--", "sh", "-c", &script])
        .env("KANDAN_URL", sim.url())
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env_remove("KANDAN_TOKEN")
        .process_group(0)
        // Opened here, as root, as systemd does.
        .stdin(std::fs::File::open(&token_file)?)
        .kill_on_drop(true)
        .spawn()?;
    // The runner itself got the token.
    sim.wait_joined(WAIT).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let read = loop {
        let read = std::fs::read(&out).unwrap_or_default();
        if read.windows(7).any(|w| w == b"== done") {
            break String::from_utf8_lossy(&read).replace('\0', " ");
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the command never finished trying"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill has no memory preconditions; the group is ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait().await;
    ensure!(!read.contains(TOKEN), "the command read the token:\n{read}");
    ensure!(!read.contains("CREDENTIALS_DIRECTORY="), "{read}");
    // It did try: the file and the runner's /proc entries refused it.
    ensure!(read.contains("Permission denied"), "{read}");
    Ok(())
}

/// A service runner (user nobody, ambient `CAP_DAC_READ_SEARCH`) opens the
/// files a person names without its capabilities: a root-only token file
/// or config file is "cannot read it" (exit 2), never read, never quoted.
/// The same capabilities do let `cat` read them, so the test has teeth.
#[tokio::test]
async fn named_files_are_not_opened_with_the_services_capabilities() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !integration_tests::support::privileged(
        "named_files_are_not_opened_with_the_services_capabilities",
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("kandan-runner");
    std::fs::copy(integration_tests::support::runner_bin(), &bin)?;
    let secret = dir.path().join("root-only");
    std::fs::create_dir(&secret)?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700))?;
    let token = secret.join("token");
    std::fs::write(&token, TOKEN)?;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    // Parsed, it would be quoted: "unknown key `kandan-secret-token-...`".
    let config = secret.join("config.toml");
    std::fs::write(&config, format!("{TOKEN} = 1\n"))?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
    let as_service = |program: &std::path::Path, args: &[&std::ffi::OsStr]| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+dac_read_search",
                "--ambient-caps=-all,+dac_read_search",
                "--",
            ])
            .arg(program)
            .args(args)
            .env("XDG_CONFIG_HOME", "/nonexistent/kandan-runner-tests")
            .env_remove("KANDAN_TOKEN")
            .output()
    };
    let cat = as_service(std::path::Path::new("/bin/cat"), &[token.as_os_str()])?;
    ensure!(
        String::from_utf8_lossy(&cat.stdout).contains(TOKEN),
        "the capability does not reach the file: {cat:?}"
    );
    for (flag, path) in [("--token-file", &token), ("--config", &config)] {
        let output = as_service(&bin, &["doctor".as_ref(), flag.as_ref(), path.as_os_str()])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(output.status.code() == Some(2), "{flag}: {text}");
        ensure!(!text.contains(TOKEN), "{flag}: the runner read it: {text}");
        ensure!(
            text.contains("cannot read it") && text.contains("Permission denied"),
            "{flag}: {text}"
        );
    }
    Ok(())
}
