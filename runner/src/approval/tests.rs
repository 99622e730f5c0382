use std::net::IpAddr;

use std::sync::mpsc::TryRecvError;

use super::*;
use crate::detect::process_info::ProcessInfo;
use crate::detect::{ListenerSocket, SocketId};
use crate::gate::{GateRefusal, PortGate};
use crate::gate::{Revocation, RevokeReason};
use crate::wire::{ActorId, ListenerState};

fn cand(port: u16, pid: u32, command: &str, cwd: &str) -> Candidate {
    let argv: Vec<String> = command.split(' ').map(str::to_string).collect();
    Candidate {
        port,
        pid,
        process: ProcessInfo::from_argv(&argv, Some(cwd.into())),
        addresses: vec!["127.0.0.1".parse().unwrap()],
        attributes: Default::default(),
    }
}

fn vite(pid: u32) -> Candidate {
    cand(5173, pid, "node /x/node_modules/.bin/vite", "/x")
}

/// What the pipeline does for `connect`: the gate sees the live sockets
/// (here those of the candidate, at once), then approval sees the candidate.
fn feed(approval: &mut Approval, event: CandidateEvent) -> Result<Vec<Event>, ApprovalError> {
    feed_owned(approval, event, None)
}

/// [`feed`] for a listener of the instance `owner`.
fn feed_owned(
    approval: &mut Approval,
    event: CandidateEvent,
    owner: Option<&str>,
) -> Result<Vec<Event>, ApprovalError> {
    let gate = approval.gate();
    match &event {
        CandidateEvent::Opened(c)
        | CandidateEvent::Changed(c)
        | CandidateEvent::AddressesChanged(c) => {
            let sockets: Vec<ListenerSocket> = c
                .addresses
                .iter()
                .enumerate()
                .map(|(i, &addr)| ListenerSocket {
                    id: SocketId(u64::from(c.pid) * 100 + i as u64),
                    port: c.port,
                    addr,
                    pid: c.pid,
                    process: c.process.clone(),
                })
                .collect();
            gate.set_live(c.port, &sockets);
        }
        CandidateEvent::Closed { port, .. } => gate.set_live(*port, []),
    }
    approval.on_candidate(event, |_| owner.map(str::to_owned))
}

fn resolution(request_id: &str, decision: Decision) -> ResolvePortForwardRequest {
    ResolvePortForwardRequest {
        instance_id: "i".into(),
        request_id: request_id.to_owned(),
        decision,
        actor_user_id: Some(ActorId::Str("17".into())),
        actor_slug: Some("ada".into()),
    }
}

/// Feeds an event that must produce exactly one request; returns its id,
/// `restarted` and state.
fn expect_request(approval: &mut Approval, event: CandidateEvent) -> (String, bool, ListenerState) {
    let out = feed(approval, event).unwrap();
    match out.as_slice() {
        [Event::PortForwardRequest(request)] => (
            request.listener.request_id.clone(),
            request.restarted,
            request.state,
        ),
        other => panic!("expected one request, got {other:?}"),
    }
}

fn approve(approval: &mut Approval, id: &str) -> Vec<Event> {
    approval
        .resolve(&resolution(id, Decision::Approve))
        .unwrap()
}

fn deny(approval: &mut Approval, id: &str) -> Vec<Event> {
    approval.resolve(&resolution(id, Decision::Deny)).unwrap()
}

fn closed_event(request_id: &str, port: u16) -> Event {
    Event::PortForwardClosed(PortForwardClosed {
        instance_id: None,
        request_id: request_id.to_owned(),
        port,
    })
}

/// The request ids of `port_forward_resolved` events.
fn resolved_ids(out: &[Event]) -> Vec<&str> {
    (out.iter())
        .map(|event| match event {
            Event::PortForwardResolved(resolved) => resolved.request_id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn closed(port: u16) -> CandidateEvent {
    CandidateEvent::Closed { port, pid: 1 }
}

#[test]
fn an_opened_candidate_becomes_a_pending_request() {
    let mut approval = Approval::default();
    let out = feed(&mut approval, CandidateEvent::Opened(vite(42))).unwrap();
    let [Event::PortForwardRequest(request)] = out.as_slice() else {
        panic!("{out:?}")
    };
    let listener = &request.listener;
    assert_eq!(listener.request_id.len(), 32);
    assert_eq!((listener.port, listener.pid), (5173, 42));
    assert_eq!(listener.command, "node /x/node_modules/.bin/vite");
    assert_eq!(listener.label, "vite");
    assert_eq!(listener.cwd.as_deref(), Some("/x"));
    assert_eq!(listener.addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(listener.instance_id, None);
    assert!(!request.restarted);
    assert_eq!(request.state, ListenerState::Pending);

    let gate = approval.gate();
    assert_eq!(gate.target(5173), Err(GateRefusal::Pending));
    assert_eq!(gate.target(5174), Err(GateRefusal::NotListening));
    assert_eq!(GateRefusal::Pending.code().to_string(), "port_not_approved");
    assert_eq!(
        GateRefusal::NotListening.code().to_string(),
        "port_not_listening"
    );
}

#[test]
fn approve_opens_the_gate_and_reports_the_actor() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    let out = approve(&mut approval, &id);
    assert_eq!(
        out,
        vec![Event::PortForwardResolved(PortForwardResolved {
            request_id: id,
            port: 5173,
            decision: Decision::Approve,
            actor_user_id: Some(ActorId::Str("17".into())),
            actor_slug: Some("ada".into()),
        })]
    );
    assert_eq!(gate.target(5173), Ok(vec!["127.0.0.1".parse().unwrap()]));
}

#[test]
fn an_unknown_request_id_is_an_error() {
    let mut approval = Approval::default();
    expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    let err = approval
        .resolve(&resolution("0123", Decision::Approve))
        .unwrap_err();
    assert!(matches!(err, ApprovalError::UnknownRequest(ref id) if id == "0123"));
    assert_eq!(Failure::from(err).code, ErrorCode::InvalidControl);
    assert_eq!(approval.gate().target(5173), Err(GateRefusal::Pending));
}

#[test]
fn decisions_parse() {
    let parse = |text: &str| serde_json::from_str::<Decision>(text).ok();
    assert_eq!(parse("\"approve\""), Some(Decision::Approve));
    assert_eq!(parse("\"deny\""), Some(Decision::Deny));
    assert_eq!(parse("\"yes\""), None);
    assert_eq!(serde_json::to_string(&Decision::Deny).unwrap(), "\"deny\"");
    assert_eq!(
        serde_json::to_string(&ListenerState::Approved).unwrap(),
        "\"approved\""
    );
}

#[test]
fn close_sends_port_forward_closed_and_shuts_the_gate() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let revoked = gate.revocations();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);
    let out = feed(&mut approval, closed(5173)).unwrap();
    assert_eq!(out, vec![closed_event(&id, 5173)]);
    assert_eq!(gate.target(5173), Err(GateRefusal::NotListening));
    assert_eq!(
        revoked.try_recv(),
        Ok(Revocation {
            port: 5173,
            reason: RevokeReason::Closed
        })
    );
    // A close for a port with no candidate says nothing.
    assert!(feed(&mut approval, closed(5173)).unwrap().is_empty());
}

#[test]
fn a_restart_inside_the_window_keeps_request_and_approval() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let revoked = gate.revocations();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);
    // Same command and cwd, new pid: nothing to ask, nothing revoked.
    assert!(
        feed(&mut approval, CandidateEvent::Changed(vite(2)))
            .unwrap()
            .is_empty()
    );
    assert!(gate.target(5173).is_ok());
    assert_eq!(revoked.try_recv(), Err(TryRecvError::Empty));
    let snapshot = approval.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].listener.request_id, id);
    assert_eq!(snapshot[0].listener.pid, 2);
    assert_eq!(snapshot[0].state, ListenerState::Approved);
}

#[test]
fn a_pending_request_stays_pending_across_a_quick_restart() {
    let mut approval = Approval::default();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    assert!(
        feed(&mut approval, CandidateEvent::Changed(vite(2)))
            .unwrap()
            .is_empty()
    );
    // Approving the original request still works.
    approve(&mut approval, &id);
    assert!(approval.gate().target(5173).is_ok());
}

#[test]
fn an_approved_server_that_comes_back_later_stays_approved() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let (first, restarted, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    assert!(!restarted);
    approve(&mut approval, &first);
    feed(&mut approval, closed(5173)).unwrap();

    let (second, restarted, state) = expect_request(&mut approval, CandidateEvent::Opened(vite(9)));
    assert_ne!(first, second, "a fresh request id");
    assert!(restarted);
    assert_eq!(state, ListenerState::Approved);
    assert!(gate.target(5173).is_ok(), "no new approval needed");
}

#[test]
fn a_pending_server_that_comes_back_later_is_asked_again_as_restarted() {
    let mut approval = Approval::default();
    let (first, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    feed(&mut approval, closed(5173)).unwrap();
    let (second, restarted, state) = expect_request(&mut approval, CandidateEvent::Opened(vite(2)));
    assert_ne!(first, second);
    assert!(restarted);
    assert_eq!(state, ListenerState::Pending);
}

#[test]
fn approve_after_close_counts_for_the_identity() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let (first, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    feed(&mut approval, closed(5173)).unwrap();

    // The user answers the prompt after the server went away.
    let out = approve(&mut approval, &first);
    assert!(matches!(
        out.as_slice(),
        [Event::PortForwardResolved(PortForwardResolved { request_id, decision: Decision::Approve, .. })] if *request_id == first
    ));
    assert_eq!(gate.target(5173), Err(GateRefusal::NotListening));

    // It comes back: approved already.
    let (_, restarted, state) = expect_request(&mut approval, CandidateEvent::Opened(vite(2)));
    assert!(restarted);
    assert_eq!(state, ListenerState::Approved);
    assert!(gate.target(5173).is_ok());
}

#[test]
fn approving_an_old_request_resolves_the_live_one_too() {
    let mut approval = Approval::default();
    let (first, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    feed(&mut approval, closed(5173)).unwrap();
    let (second, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(2)));
    let out = approve(&mut approval, &first);
    assert_eq!(resolved_ids(&out), vec![first.as_str(), second.as_str()]);
    assert!(approval.gate().target(5173).is_ok());
}

#[test]
fn a_denied_server_is_not_asked_again_after_a_restart() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    deny(&mut approval, &id);
    assert_eq!(gate.target(5173), Err(GateRefusal::Denied));

    // A quick restart: nothing.
    assert!(
        feed(&mut approval, CandidateEvent::Changed(vite(2)))
            .unwrap()
            .is_empty()
    );
    // Closed and back later: still nothing to ask.
    assert_eq!(feed(&mut approval, closed(5173)).unwrap().len(), 1);
    assert!(
        feed(&mut approval, CandidateEvent::Opened(vite(3)))
            .unwrap()
            .is_empty()
    );
    assert_eq!(gate.target(5173), Err(GateRefusal::Denied));

    // It is listed as denied, and its close is sent once Kandan knows it.
    let snapshot = approval.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].state, ListenerState::Denied);
    let out = feed(&mut approval, closed(5173)).unwrap();
    assert_eq!(
        out,
        vec![closed_event(&snapshot[0].listener.request_id, 5173)]
    );
}

#[test]
fn a_silently_denied_candidate_closes_silently() {
    let mut approval = Approval::default();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    deny(&mut approval, &id);
    feed(&mut approval, closed(5173)).unwrap();
    assert!(
        feed(&mut approval, CandidateEvent::Opened(vite(2)))
            .unwrap()
            .is_empty()
    );
    // Kandan never heard of this request id: no close for it.
    assert!(feed(&mut approval, closed(5173)).unwrap().is_empty());
}

#[test]
fn a_denied_port_taken_by_another_command_is_asked_again() {
    let mut approval = Approval::default();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    deny(&mut approval, &id);
    feed(&mut approval, closed(5173)).unwrap();
    let other = cand(5173, 5, "python3 -m http.server 5173", "/x");
    let (_, restarted, state) = expect_request(&mut approval, CandidateEvent::Opened(other));
    assert!(!restarted);
    assert_eq!(state, ListenerState::Pending);
}

#[test]
fn the_same_command_in_another_cwd_is_another_identity() {
    let mut approval = Approval::default();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);
    feed(&mut approval, closed(5173)).unwrap();
    let elsewhere = cand(5173, 2, "node /x/node_modules/.bin/vite", "/y");
    let (_, restarted, state) = expect_request(&mut approval, CandidateEvent::Opened(elsewhere));
    assert!(!restarted);
    assert_eq!(state, ListenerState::Pending);
    assert_eq!(approval.gate().target(5173), Err(GateRefusal::Pending));
}

/// Redaction happens at the wire only: two tokens that both read `***` to
/// Kandan are still two identities here.
#[test]
fn the_same_command_with_another_secret_is_another_identity() {
    let mut approval = Approval::default();
    let first = cand(8888, 1, "jupyter lab --IdentityProvider.token=aaa", "/x");
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(first));
    approve(&mut approval, &id);
    feed(&mut approval, closed(8888)).unwrap();
    let second = cand(8888, 2, "jupyter lab --IdentityProvider.token=bbb", "/x");
    let (_, restarted, state) = expect_request(&mut approval, CandidateEvent::Opened(second));
    assert!(!restarted);
    assert_eq!(state, ListenerState::Pending);
    assert_eq!(approval.gate().target(8888), Err(GateRefusal::Pending));
}

#[test]
fn another_program_on_the_port_voids_the_approval_at_once() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let revoked = gate.revocations();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);

    let other = cand(5173, 7, "python3 -m http.server 5173", "/x");
    let out = feed(&mut approval, CandidateEvent::Changed(other)).unwrap();
    let [
        Event::PortForwardClosed(closed),
        Event::PortForwardRequest(PortForwardRequest {
            listener,
            state: ListenerState::Pending,
            restarted: false,
        }),
    ] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (closed.request_id.as_str(), closed.port),
        (id.as_str(), 5173)
    );
    assert_eq!(listener.pid, 7);
    let new_id = &listener.request_id;
    assert_ne!(*new_id, id);
    assert_eq!(gate.target(5173), Err(GateRefusal::Pending));
    assert_eq!(
        revoked.try_recv(),
        Ok(Revocation {
            port: 5173,
            reason: RevokeReason::OwnerChanged
        })
    );

    // Approving the old request now approves only the old program.
    approve(&mut approval, &id);
    assert_eq!(gate.target(5173), Err(GateRefusal::Pending));
    approve(&mut approval, new_id);
    assert!(gate.target(5173).is_ok());
}

#[test]
fn a_switch_between_two_approved_programs_still_revokes_the_old_sockets() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let (a, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &a);
    let other = cand(5173, 7, "python3 -m http.server 5173", "/x");
    let b = {
        let out = feed(&mut approval, CandidateEvent::Changed(other.clone())).unwrap();
        match &out[1] {
            Event::PortForwardRequest(request) => request.listener.request_id.clone(),
            o => panic!("{o:?}"),
        }
    };
    approve(&mut approval, &b);

    let revoked = gate.revocations();
    let out = feed(&mut approval, CandidateEvent::Changed(vite(3))).unwrap();
    assert!(matches!(
        out.as_slice(),
        [
            Event::PortForwardClosed(_),
            Event::PortForwardRequest(PortForwardRequest {
                state: ListenerState::Approved,
                restarted: true,
                ..
            })
        ]
    ));
    assert_eq!(
        revoked.try_recv().unwrap().reason,
        RevokeReason::OwnerChanged
    );
    assert!(gate.target(5173).is_ok());
}

#[test]
fn deny_after_approve_revokes() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let revoked = gate.revocations();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);
    deny(&mut approval, &id);
    assert_eq!(gate.target(5173), Err(GateRefusal::Denied));
    assert_eq!(
        revoked.try_recv(),
        Ok(Revocation {
            port: 5173,
            reason: RevokeReason::Denied
        })
    );
    // And back: the last decision wins.
    approve(&mut approval, &id);
    assert!(gate.target(5173).is_ok());
}

#[test]
fn address_changes_update_the_gate_without_asking() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);
    let mut v6 = vite(1);
    v6.addresses = vec!["::1".parse().unwrap()];
    assert!(
        feed(&mut approval, CandidateEvent::AddressesChanged(v6))
            .unwrap()
            .is_empty()
    );
    assert_eq!(gate.target(5173), Ok(vec!["::1".parse().unwrap()]));
}

#[test]
fn snapshot_lists_every_candidate_with_its_state() {
    let mut approval = Approval::default();
    let (a, _, _) = expect_request(
        &mut approval,
        CandidateEvent::Opened(cand(3000, 1, "a", "/x")),
    );
    let (b, _, _) = expect_request(
        &mut approval,
        CandidateEvent::Opened(cand(4000, 2, "b", "/x")),
    );
    expect_request(
        &mut approval,
        CandidateEvent::Opened(cand(2000, 3, "c", "/x")),
    );
    approve(&mut approval, &a);
    deny(&mut approval, &b);
    let states: Vec<(u16, ListenerState)> = approval
        .snapshot()
        .iter()
        .map(|l| (l.listener.port, l.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (2000, ListenerState::Pending),
            (3000, ListenerState::Approved),
            (4000, ListenerState::Denied),
        ]
    );
    feed(&mut approval, closed(3000)).unwrap();
    assert_eq!(approval.snapshot().len(), 2);
}

#[test]
fn old_closed_requests_are_forgotten_eventually() {
    let mut approval = Approval::default();
    let (first, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    feed(&mut approval, closed(5173)).unwrap();
    for pid in 0..CLOSED_REQUESTS_KEPT as u32 {
        feed(&mut approval, CandidateEvent::Opened(vite(pid))).unwrap();
        feed(&mut approval, closed(5173)).unwrap();
    }
    assert!(matches!(
        approval.resolve(&resolution(&first, Decision::Approve)),
        Err(ApprovalError::UnknownRequest(_))
    ));
}

#[test]
fn gates_are_shared_views() {
    let mut approval = Approval::default();
    let gate = approval.gate();
    let clone = gate.clone();
    let (id, _, _) = expect_request(&mut approval, CandidateEvent::Opened(vite(1)));
    approve(&mut approval, &id);
    assert!(clone.target(5173).is_ok());
    let handle = std::thread::spawn(move || clone.target(5173).is_ok());
    assert!(handle.join().unwrap());
}

#[test]
fn a_listeners_instance_is_named_from_its_request_to_its_close() {
    let mut approval = Approval::default();
    let out = feed_owned(&mut approval, CandidateEvent::Opened(vite(1)), Some("i1")).unwrap();
    let [Event::PortForwardRequest(request)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(request.listener.instance_id.as_deref(), Some("i1"));
    let id = request.listener.request_id.clone();
    // A new pid inside the window keeps the request and its instance.
    assert!(
        feed(&mut approval, CandidateEvent::Changed(vite(2)))
            .unwrap()
            .is_empty()
    );
    let ready = approval.snapshot();
    assert_eq!(ready[0].listener.instance_id.as_deref(), Some("i1"));
    let out = feed(&mut approval, closed(5173)).unwrap();
    let expected = PortForwardClosed {
        instance_id: Some("i1".into()),
        request_id: id,
        port: 5173,
    };
    assert_eq!(out, vec![Event::PortForwardClosed(expected)]);
}

/// The command line reaches Kandan redacted, in requests and in
/// `runner_ready`.
#[test]
fn commands_reach_the_wire_redacted_in_requests_and_ready() {
    let command = "jupyter lab --NotebookApp.token=abc GITHUB_TOKEN=ghp";
    let redacted = "jupyter lab --NotebookApp.token=*** GITHUB_TOKEN=***";
    let mut approval = Approval::default();
    let out = feed(
        &mut approval,
        CandidateEvent::Opened(cand(8888, 42, command, "/x")),
    )
    .unwrap();
    let [Event::PortForwardRequest(request)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(request.listener.command, redacted);
    assert_eq!(approval.snapshot()[0].listener.command, redacted);
}
