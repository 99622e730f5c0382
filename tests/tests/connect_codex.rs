//! Codex instances under `connect` (PROTOCOL.md sections 6 and 7), the
//! whole loop through the simulator: the real `codex app-server` against a
//! fake model, its output numbered and batched, approvals decided in
//! "Kandan", the transcript intact across a dropped connection, and a dev
//! server the agent starts forwarded with its instance.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::codex::{CodexDirs, codex_bin};
use integration_tests::fake_model::{FakeModel, MODEL, Reply};
use integration_tests::preview_client;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

struct Setup {
    sim: Simulator,
    model: FakeModel,
    dirs: CodexDirs,
    runner: RunnerProcess,
}

impl Setup {
    async fn start(flush_ms: &str) -> Result<Setup> {
        let bin = codex_bin()?;
        let sim = Simulator::start(SimConfig::default()).await?;
        let model = FakeModel::start().await?;
        let dirs = CodexDirs::new()?;
        std::fs::write(dirs.home().join("config.toml"), model.config_toml())?;
        let home = dirs.home().to_string_lossy().into_owned();
        let mut args = RunnerArgs::new("codex-e2e", Vec::new());
        args.flags = vec![
            "--codex-bin".into(),
            bin.to_string_lossy().into_owned(),
            "--stream-flush-ms".into(),
            flush_ms.into(),
        ];
        args.env = vec![("CODEX_HOME".into(), home.clone()), ("HOME".into(), home)];
        let runner = RunnerProcess::start(&sim, args)?;
        sim.wait_joined(WAIT).await?;
        let setup = Setup {
            sim,
            model,
            dirs,
            runner,
        };
        integration_tests::e2e::allow_cwd(&setup.sim, &setup.dirs.cwd()).await?;
        Ok(setup)
    }

    /// `start_instance`; its `instance_started`.
    async fn start_instance(&self, instance_id: &str) -> Result<Value> {
        self.sim.send_control(json!({
            "type": "start_instance", "instanceId": instance_id, "cwd": self.dirs.cwd(),
            "model": MODEL, "approvalPolicy": "untrusted", "sandbox": "workspace-write",
        }))?;
        self.event(instance_id, "instance_started").await
    }

    /// The first event of `type` for the instance.
    async fn event(&self, instance_id: &str, ty: &str) -> Result<Value> {
        self.event_where(ty, |e| e["instanceId"] == instance_id)
            .await
    }

    async fn event_where(&self, ty: &str, matches: impl Fn(&Value) -> bool) -> Result<Value> {
        self.sim
            .wait_for_event(ty, matches, WAIT)
            .await
            .with_context(|| format!("no {ty}; runner log:\n{}", self.runner.output()))
    }

    /// The `codex_notification` of `method` after event index `after`.
    async fn notification_after(&self, after: usize, method: &str) -> Result<Value> {
        let (_, event) = self
            .sim
            .wait_for_event_after(after, "codex_notification", |e| e["method"] == method, WAIT)
            .await
            .with_context(|| format!("no {method}; runner log:\n{}", self.runner.output()))?;
        Ok(event)
    }

    async fn turn(&self, instance_id: &str, text: &str) -> Result<()> {
        let after = self.sim.event_count();
        self.sim.send_control(json!({
            "type": "start_turn", "instanceId": instance_id, "text": text,
        }))?;
        self.notification_after(after, "turn/started").await?;
        Ok(())
    }

    /// A `control_error` answering `control`.
    async fn refused(&self, control: Value) -> Result<Value> {
        let after = self.sim.event_count();
        let ty = control["type"].clone();
        self.sim.send_control(control)?;
        let (_, event) = self
            .sim
            .wait_for_event_after(after, "control_error", |e| e["controlType"] == ty, WAIT)
            .await?;
        Ok(event)
    }
}

async fn api_get(sim: &Simulator, path: &str) -> Result<Value> {
    let response = preview_client::fetch(sim, http::Method::GET, path, Default::default()).await?;
    ensure!(response.status == 200, "{path}: {}", response.text());
    Ok(serde_json::from_slice(&response.body)?)
}

fn skip(test: &str) -> bool {
    if codex_bin().is_ok() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: the Codex fixture is missing (cargo xtask setup --tests)"
    );
    eprintln!("{test}: skipped, no Codex fixture");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_streams_batched_and_approvals_round_trip() -> Result<()> {
    if skip("a_turn_streams_batched_and_approvals_round_trip") {
        return Ok(());
    }
    let setup = Setup::start("100").await?;
    let started = setup.start_instance("i1").await?;
    assert_eq!(started["cwd"], json!(setup.dirs.cwd()));
    assert_eq!(started["seq"], 1);
    let thread_id = started["threadId"].as_str().context("threadId")?.to_owned();

    // A text turn: 40 deltas within the flush window become fewer frames,
    // with exactly the same text.
    let deltas: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    setup.model.push([Reply::text(&refs)]);
    let after = setup.sim.event_count();
    setup.turn("i1", "say something").await?;
    setup.notification_after(after, "turn/completed").await?;
    let text = setup.sim.agent_text("i1").map_err(anyhow::Error::msg)?;
    assert_eq!(text, deltas.concat());
    let frames = setup
        .sim
        .events()
        .iter()
        .filter(|e| e["method"] == "item/agentMessage/delta")
        .count();
    ensure!(
        frames < deltas.len(),
        "{frames} delta frames for {} deltas",
        deltas.len()
    );

    // A command approval, decided in Kandan: the command ran.
    let made = setup.dirs.cwd().join("made-by-agent");
    setup.model.push([
        Reply::exec_command("call_1", &format!("touch {}", made.display())),
        Reply::text(&["done"]),
    ]);
    setup.turn("i1", "make a file").await?;
    let request = setup.event("i1", "approval_request").await?;
    assert_eq!(request["kind"], "command");
    assert_eq!(request["threadId"], json!(thread_id));
    let request_id = request["requestId"]
        .as_str()
        .context("requestId")?
        .to_owned();
    let ready = setup.sim.joins().len();
    setup.sim.send_control(json!({
        "type": "resolve_approval_request", "instanceId": "i1", "requestId": request_id,
        "decision": "approve", "actorSlug": "ada",
    }))?;
    let resolved = setup
        .event_where("approval_resolved", |e| {
            e["requestId"] == request_id.as_str()
        })
        .await?;
    assert_eq!(resolved["decision"], "approve");
    assert_eq!(resolved["actorSlug"], "ada");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !made.exists() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the approved command never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(setup.sim.joins().len(), ready);

    // A decision for it again: unknown_request.
    let again = setup
        .refused(json!({
            "type": "resolve_approval_request", "instanceId": "i1", "requestId": request_id,
            "decision": "deny",
        }))
        .await?;
    assert_eq!(again["code"], "unknown_request");
    assert_eq!(again["instanceId"], "i1");

    // read_thread answers with the thread.
    setup.sim.send_control(json!({
        "type": "read_thread", "instanceId": "i1", "threadId": thread_id, "includeTurns": true,
    }))?;
    let read = setup.event("i1", "thread_read").await?;
    ensure!(
        read["thread"]["turns"]
            .as_array()
            .is_some_and(|t| t.len() >= 2),
        "{read}"
    );

    // The transcript has every seq once, in order, also through the API.
    let transcript = setup.sim.transcript("i1").map_err(anyhow::Error::msg)?;
    ensure!(transcript.len() > 10);
    // Taken a moment later: the same events, and maybe a few more.
    let by_api = api_get(&setup.sim, "/api/instances/i1/transcript").await?;
    let by_api = by_api.as_array().context("an array")?;
    assert_eq!(by_api[..transcript.len()], transcript[..]);
    let open = api_get(&setup.sim, "/api/instances/i1/approvals").await?;
    assert_eq!(open, json!([]));

    // stop_instance: instance_stopped, and no process of it is left.
    let pid = started["pid"].as_u64().context("pid")? as i32;
    setup
        .sim
        .send_control(json!({"type": "stop_instance", "instanceId": "i1"}))?;
    let stopped = setup.event("i1", "instance_stopped").await?;
    assert_eq!(stopped["reason"], "stopped");
    // SAFETY: signal 0 only asks whether the group exists.
    let alive = unsafe { libc::kill(-pid, 0) } == 0;
    ensure!(!alive, "the app-server's group is still there");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_instance() -> Result<()> {
    if skip("refusals_name_the_instance") {
        return Ok(());
    }
    let setup = Setup::start("50").await?;
    let outside = tempfile::tempdir()?;
    let link = setup.dirs.cwd().join("escape");
    std::os::unix::fs::symlink(outside.path(), &link)?;
    let file = setup.dirs.cwd().join("f.txt");
    std::fs::write(&file, "x")?;
    let cwds: Vec<PathBuf> = vec![
        outside.path().to_path_buf(),
        link,
        setup.dirs.cwd().join(".."),
        setup.dirs.cwd().join("missing"),
        file,
    ];
    for (i, cwd) in cwds.iter().enumerate() {
        let id = format!("bad{i}");
        let answer = setup
            .refused(json!({"type": "start_instance", "instanceId": id, "cwd": cwd}))
            .await?;
        assert_eq!(
            answer["code"],
            "cwd_not_allowed",
            "{}: {answer}",
            cwd.display()
        );
        assert_eq!(answer["instanceId"], json!(id));
    }
    let unknown = setup
        .refused(json!({"type": "start_turn", "instanceId": "nope", "text": "hi"}))
        .await?;
    assert_eq!(unknown["code"], "unknown_instance");
    let malformed = setup
        .refused(json!({"type": "start_turn", "instanceId": "i9"}))
        .await?;
    assert_eq!(malformed["code"], "invalid_control");
    assert_eq!(malformed["instanceId"], "i9");
    let policy = setup
        .refused(json!({"type": "start_instance", "instanceId": "p", "approvalPolicy": "always"}))
        .await?;
    assert_eq!(policy["code"], "invalid_control");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kandan_dropped_mid_turn_gets_every_event_once_in_order() -> Result<()> {
    if skip("kandan_dropped_mid_turn_gets_every_event_once_in_order") {
        return Ok(());
    }
    let setup = Setup::start("0").await?;
    setup.start_instance("i1").await?;
    let deltas: Vec<String> = (0..150).map(|i| format!("d{i} ")).collect();
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    setup
        .model
        .push([Reply::slow_text(&refs, Duration::from_millis(20))]);
    let after = setup.sim.event_count();
    setup.turn("i1", "talk slowly").await?;
    // Mid-turn: replies withheld (the events are Kandan's but unanswered),
    // then the connection drops; the runner comes back and sends again
    // what was never answered.
    tokio::time::sleep(Duration::from_millis(600)).await;
    setup.sim.hold_event_replies(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let readies = setup.sim.events_of("runner_ready").len();
    setup.sim.drop_connection()?;
    setup.sim.hold_event_replies(false);
    setup
        .sim
        .wait_for_event_type_count("runner_ready", readies + 1, WAIT)
        .await?;
    let ready = setup.sim.events_of("runner_ready");
    let last = ready.last().context("runner_ready")?;
    let instance = &last["instances"][0];
    assert_eq!(instance["instanceId"], "i1");
    ensure!(instance["lastSeq"].as_u64().unwrap_or(0) > 1, "{last}");
    setup.notification_after(after, "turn/completed").await?;
    // Every seq once, in order, no gap; the text is the model's, whole.
    let text = setup.sim.agent_text("i1").map_err(anyhow::Error::msg)?;
    assert_eq!(text, deltas.concat());
    let transcript = setup.sim.transcript("i1").map_err(anyhow::Error::msg)?;
    ensure!(transcript.iter().all(|e| e["gap"] != true));
    // The events whose replies were withheld came twice: sent again after
    // the reconnect, dropped by seq.
    let received = (setup.sim.events().iter())
        .filter(|e| e["instanceId"] == "i1" && e["seq"].is_u64())
        .count();
    ensure!(
        received > transcript.len(),
        "nothing was sent again: {received} events, {} in the transcript",
        transcript.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_dev_server_is_forwarded_with_its_instance() -> Result<()> {
    if skip("the_agents_dev_server_is_forwarded_with_its_instance") {
        return Ok(());
    }
    let setup = Setup::start("50").await?;
    setup.start_instance("i1").await?;
    let site = setup.dirs.cwd().join("site");
    std::fs::create_dir(&site)?;
    std::fs::write(site.join("index-marker.txt"), "x")?;
    setup.model.push([
        Reply::exec_command(
            "call_1",
            &format!(
                "python3 -m http.server 0 --bind 127.0.0.1 --directory {}",
                site.display()
            ),
        ),
        Reply::text(&["serving"]),
    ]);
    setup.turn("i1", "serve the site").await?;
    let request = setup.event("i1", "approval_request").await?;
    setup.sim.send_control(json!({
        "type": "resolve_approval_request", "instanceId": "i1",
        "requestId": request["requestId"], "decision": "approve",
    }))?;
    let port_request = setup
        .event_where("port_forward_request", |e| {
            e["command"]
                .as_str()
                .is_some_and(|c| c.contains("http.server"))
        })
        .await?;
    assert_eq!(port_request["instanceId"], "i1", "{port_request}");
    let port = port_request["port"].as_u64().context("port")? as u16;
    let request_id = port_request["requestId"].as_str().context("requestId")?;
    setup.sim.approve(request_id)?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = preview_client::get(&setup.sim, port, "/").await?;
        if response.status == 200 {
            ensure!(
                response.text().contains("index-marker.txt"),
                "{}",
                response.text()
            );
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "never forwarded: {} {}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    setup
        .sim
        .send_control(json!({"type": "stop_instance", "instanceId": "i1"}))?;
    setup.event("i1", "instance_stopped").await?;
    let closed = setup
        .event_where("port_forward_closed", |e| e["port"] == port)
        .await?;
    assert_eq!(closed["instanceId"], "i1");
    Ok(())
}
