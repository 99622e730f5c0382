//! `kandan-sim`: the Kandan simulator by hand. Prints where to point the
//! runner and the browser, prints what the runner sends, and reads commands
//! on stdin: `list`, `approve <requestId>`, `deny <requestId>`,
//! `allow <dir>...` (the runner's allowed cwds), `editor <cwd>`,
//! `stop-editor <editorId>`, `instance <cwd>`, `turn <instanceId> <text>`,
//! `decide <instanceId> <requestId> approve|deny`, `stop <instanceId>`,
//! `transcript <instanceId>`, `control <json>`, `events`, `quit`. With stdin
//! closed it serves until interrupted. `--demo` also starts a fake model, a
//! runner with Codex and code-server and a sample app (`cargo xtask demo`,
//! docs/demo.md); Ctrl-C stops them all.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use integration_tests::demo::{Demo, DemoOptions};
use integration_tests::simulator::{SimConfig, Simulator};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(
    about = "Kandan simulator: a Phoenix v2 runner socket and a preview front on loopback",
    after_help = "Each approved port is served on its own origin, http://p<port>.localhost:<preview port>/ \
(browsers resolve *.localhost to loopback), with paths as they are: a stock Vite or Next app \
loads there with no --base. /preview/<port>/ strips its prefix (or keeps it with \
--keep-preview-prefix, for an app started with --base /preview/<port>/)."
)]
struct Args {
    /// Address of the runner socket.
    #[arg(long, default_value = "127.0.0.1:4000")]
    runner_addr: SocketAddr,
    /// Address of the preview front and JSON API.
    #[arg(long, default_value = "127.0.0.1:4001")]
    preview_addr: SocketAddr,
    /// Token the runner must present (default: a fresh one).
    #[arg(long, env = "KANDAN_TOKEN")]
    token: Option<String>,
    /// Only accept this runner id.
    #[arg(long)]
    runner_id: Option<String>,
    /// Approve every port the runner asks about.
    #[arg(long)]
    auto_approve: bool,
    /// Keep `/preview/<port>` in forwarded paths (for `vite --base /preview/<port>/`).
    #[arg(long)]
    keep_preview_prefix: bool,
    /// Also start the demo: a fake model, a runner with the pinned Codex and
    /// code-server, and a sample app in DEMO_DIR/workspace.
    #[arg(long)]
    demo: bool,
    /// Where the demo keeps its workspace and homes.
    #[arg(long, default_value = "target/demo", requires = "demo")]
    demo_dir: std::path::PathBuf,
    /// Stop everything once the demo is ready (for tests).
    #[arg(long, requires = "demo")]
    exit_after_ready: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The demo's terminal is for its banner and the agent's text.
    let level = if args.demo { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| format!("integration_tests={level}").into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args_token_unset = args.token.is_none();
    let mut config = SimConfig {
        runner_addr: args.runner_addr,
        preview_addr: args.preview_addr,
        runner_id: args.runner_id,
        auto_approve: args.auto_approve,
        keep_preview_prefix: args.keep_preview_prefix,
        ..SimConfig::default()
    };
    // Kept in a file unless given, so a restart keeps a runner's token good.
    let token_path = integration_tests::sim_by_hand::token_path();
    match (args.token, &token_path) {
        (Some(token), _) => config.token = token,
        (None, Some(path)) => {
            config.token = integration_tests::sim_by_hand::kept_token(path, &config.token)?;
        }
        (None, None) => {}
    }
    let demo = if args.demo {
        let options = DemoOptions {
            root: args.demo_dir,
            runner_addr: config.runner_addr,
            preview_addr: config.preview_addr,
            start_editor: true,
        };
        eprintln!("starting the demo: simulator, fake model, runner, Codex, code-server...");
        let start = Demo::start(options);
        // Ctrl-C while starting: dropping the start kills what it spawned.
        let demo = tokio::select! {
            demo = start => demo.context("starting the demo")?,
            _ = interrupted() => return Ok(()),
        };
        Some(demo)
    } else {
        None
    };
    let sim = match &demo {
        Some(demo) => demo.sim().clone(),
        None => std::sync::Arc::new(
            Simulator::start(config)
                .await
                .context("starting the simulator")?,
        ),
    };
    println!("runner url:  {}", sim.url());
    println!("token:       {}", sim.token());
    println!(
        "preview url: http://p<port>.localhost:{}/ (or http://{}/preview/<port>/)",
        sim.preview_addr().port(),
        sim.preview_addr()
    );
    println!(
        "api:         {}/requests, {}/events",
        sim.api_url(),
        sim.api_url()
    );
    if let Some(path) = token_path.filter(|_| args_token_unset) {
        println!("token file:  {} (kept across restarts)", path.display());
    }
    let (runner, missing) = integration_tests::sim_by_hand::runner_bin();
    println!(
        "run:         {runner} connect --url {} --token {} -- <command>",
        sim.url(),
        sim.token()
    );
    if let Some(why) = missing {
        println!("             (kandan-runner {why})");
    }
    println!(
        "commands:    list | approve <id> | deny <id> | allow <dir>... | editor <cwd> | stop-editor <id>\n             instance <cwd> | turn <instance> <text> | decide <instance> <request> approve|deny\n             stop <instance> | transcript <instance> | control <json> | events | quit"
    );
    if let Some(demo) = demo {
        println!("\n{}", demo.banner());
        std::io::stdout().flush()?;
        if args.exit_after_ready {
            return demo.stop().await;
        }
        tokio::spawn(print_events(sim.clone()));
        let quit = tokio::select! {
            quit = commands(&sim) => quit?,
            _ = interrupted() => true,
        };
        if !quit {
            interrupted().await?;
        }
        eprintln!("stopping the demo");
        drop(sim);
        demo.stop().await?;
        eprintln!("stopped");
        // Not a return: the runtime would wait for the thread blocked
        // reading stdin.
        std::process::exit(0);
    }
    tokio::spawn(print_events(sim.clone()));
    if !commands(&sim).await? {
        // stdin closed (run in the background): serve until interrupted.
        interrupted().await?;
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM / SIGHUP (`kill`, a closed terminal): the demo stops
/// everything it started on any of them.
async fn interrupted() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
    Ok(())
}

/// Reads and runs commands from stdin: true after `quit`, false when stdin closed.
async fn commands(sim: &Simulator) -> anyhow::Result<bool> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut seen_instances = 0u32;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let result = match cmd {
            "" => Ok(()),
            "list" => {
                for r in sim.port_forward_requests() {
                    println!("{} port {} {:?} {}", r.request_id, r.port, r.state, r.event);
                }
                Ok(())
            }
            "approve" => sim.approve(arg.trim()).map_err(anyhow::Error::from),
            "deny" => sim.deny(arg.trim()).map_err(anyhow::Error::from),
            "allow" => sim
                .send_control(serde_json::json!({
                    "type": "update_runner_config",
                    "allowedCwds": arg.split_whitespace().collect::<Vec<_>>(),
                }))
                .map_err(anyhow::Error::from),
            "editor" => sim
                .send_control(serde_json::json!({
                    "type": "start_local_editor", "requestId": "sim-editor", "cwd": arg.trim(),
                }))
                .map_err(anyhow::Error::from),
            "stop-editor" => sim
                .send_control(serde_json::json!({
                    "type": "stop_local_editor", "editorId": arg.trim(),
                }))
                .map_err(anyhow::Error::from),
            "instance" => {
                let id = format!("sim-{}", std::process::id() % 1000 + seen_instances);
                seen_instances += 1;
                println!("starting instance {id}");
                sim.send_control(serde_json::json!({
                    "type": "start_instance", "instanceId": id, "cwd": arg.trim(),
                    "approvalPolicy": "untrusted",
                }))
                .map_err(anyhow::Error::from)
            }
            "turn" => {
                let (id, text) = arg.split_once(' ').unwrap_or((arg, ""));
                sim.send_control(serde_json::json!({
                    "type": "start_turn", "instanceId": id, "text": text,
                }))
                .map_err(anyhow::Error::from)
            }
            "decide" => {
                let words: Vec<&str> = arg.split_whitespace().collect();
                match words.as_slice() {
                    [id, request, decision @ ("approve" | "deny")] => sim
                        .send_control(serde_json::json!({
                            "type": "resolve_approval_request", "instanceId": id,
                            "requestId": request, "decision": decision,
                        }))
                        .map_err(anyhow::Error::from),
                    _ => Err(anyhow::anyhow!("decide <instance> <request> approve|deny")),
                }
            }
            "stop" => sim
                .send_control(serde_json::json!({
                    "type": "stop_instance", "instanceId": arg.trim(),
                }))
                .map_err(anyhow::Error::from),
            "transcript" => match sim.transcript(arg.trim()) {
                Ok(events) => {
                    for event in events {
                        println!("{} {}", event["seq"], shorten(&event));
                    }
                    Ok(())
                }
                Err(why) => Err(anyhow::anyhow!(why)),
            },
            "control" => serde_json::from_str(arg)
                .map_err(anyhow::Error::from)
                .and_then(|c| sim.send_control(c).map_err(anyhow::Error::from)),
            "events" => {
                for event in sim.events() {
                    println!("{event}");
                }
                Ok(())
            }
            "quit" | "exit" => return Ok(true),
            other => Err(anyhow::anyhow!("unknown command {other:?}")),
        };
        if let Err(error) = result {
            println!("error: {error:#}");
        }
        std::io::stdout().flush()?;
    }
    Ok(false)
}

/// Prints each runner event as it arrives, port requests highlighted.
async fn print_events(sim: std::sync::Arc<Simulator>) {
    let mut seen = 0;
    loop {
        let Ok(events) = sim
            .wait_for_event_count(seen + 1, Duration::from_secs(3600))
            .await
        else {
            continue;
        };
        for event in &events[seen..] {
            if event["type"] == "port_forward_request" {
                println!(
                    "port {} wants out: {} (approve {})",
                    event["port"],
                    event["command"],
                    event["requestId"].as_str().unwrap_or("?")
                );
            } else if event["method"] == "item/agentMessage/delta" {
                print!("{}", event["params"]["delta"].as_str().unwrap_or_default());
                let _ = std::io::stdout().flush();
            } else if event["type"] == "approval_request" {
                println!(
                    "\ninstance {} asks ({}): {} -> decide {} {} approve|deny",
                    event["instanceId"].as_str().unwrap_or("?"),
                    event["kind"],
                    event["command"],
                    event["instanceId"].as_str().unwrap_or("?"),
                    event["requestId"].as_str().unwrap_or("?"),
                );
            } else if event["type"] == "local_editor_started" {
                let id = event["editorId"].as_str().unwrap_or("?");
                println!("editor {id} for {}: {}", event["cwd"], sim.editor_url(id));
            } else if event["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("forward_"))
            {
                // Every preview request answered: too many lines to read.
            } else {
                println!("event: {}", shorten(event));
            }
        }
        seen = events.len();
    }
}

/// The event with long base64 bodies replaced by their size.
fn shorten(event: &serde_json::Value) -> serde_json::Value {
    let mut event = event.clone();
    if let Some(body) = event.get_mut("bodyBase64")
        && body.as_str().is_some_and(|b| b.len() > 64)
    {
        let len = body.as_str().map_or(0, str::len);
        *body = serde_json::json!(format!("<{len} chars of base64>"));
    }
    event
}
