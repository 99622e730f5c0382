//! `/api/...`: the simulator driven by hand or from non-Rust clients.
//!
//! - `GET /api/status`: connection, join count, URLs
//! - `GET /api/requests`: port forward requests with their state
//! - `POST /api/requests/<id>/approve` and `/deny`
//! - `GET /api/events`: every event the runner sent, in order
//! - `GET /api/events/since/<n>`: `{"events": [...], "next": m}`, the
//!   events from index `n` on (the page polls with `next`)
//! - `POST /api/controls`: send the JSON body as a control
//! - `POST /api/config` `{"allowedCwds": [...]}`: the runner's allowed cwds
//! - `POST /api/editors` `{"cwd": ..., "collaboration"?: {...}}`: start an
//!   editor; `GET /api/editors`: the started ones with their preview URL;
//!   `DELETE /api/editors/<editorId>`: stop one
//! - `POST /api/instances` (the `start_instance` fields): start a Codex
//!   instance; `POST /api/instances/<id>/turns` `{"text": ...}`;
//!   `POST /api/instances/<id>/interrupt`; `DELETE /api/instances/<id>`;
//!   `GET /api/instances/<id>/transcript`: its events by `seq` (each once;
//!   409 with the reason on a gap); `GET /api/instances/<id>/approvals`:
//!   the approvals not yet resolved; `POST /api/instances/<id>/approvals/<requestId>/approve`
//!   (or `/deny`, optional body `{"forSession": true}`)

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Body, full, sim_error, text};
use crate::simulator::state::Shared;

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    rest: &str,
) -> Response<Body> {
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["status"]) => {
            let inner = shared.lock();
            let joined = inner.current.as_ref().and_then(|c| c.joined.as_ref());
            json_response(&json!({
                "connected": inner.current.is_some(),
                "joined": joined.is_some(),
                "topic": joined.map(|(_, t)| t),
                "joinCount": inner.join_count,
                "connectionCount": inner.connection_count,
                "heartbeats": inner.heartbeats,
                "violations": inner.violations,
            }))
        }
        (Method::GET, ["requests"]) => json_response(&json!(shared.lock().requests)),
        (Method::GET, ["events"]) => json_response(&json!(shared.lock().events)),
        (Method::GET, ["events", "since", from]) => {
            let Ok(from) = from.parse::<usize>() else {
                return text(StatusCode::BAD_REQUEST, "bad_index", "since takes a number");
            };
            let inner = shared.lock();
            let events = inner.events.get(from..).unwrap_or_default();
            json_response(&json!({"events": events, "next": inner.events.len()}))
        }
        (Method::POST, ["requests", id, decision @ ("approve" | "deny")]) => {
            match shared.resolve(id, *decision == "approve") {
                Ok(()) => json_response(&json!({"requestId": id, "decision": decision})),
                Err(error) => sim_error(&error),
            }
        }
        (Method::POST, ["config"]) => match body_json(req).await {
            Ok(body) => send(
                shared,
                json!({
                    "type": "update_runner_config",
                    "allowedCwds": body["allowedCwds"],
                }),
            ),
            Err(response) => response,
        },
        (Method::POST, ["editors"]) => match body_json(req).await {
            Ok(body) => {
                let request_id = shared.fresh_id("editor");
                let mut control = json!({
                    "type": "start_local_editor", "requestId": request_id, "cwd": body["cwd"],
                });
                if !body["collaboration"].is_null() {
                    control["collaboration"] = body["collaboration"].clone();
                }
                send(shared, control)
            }
            Err(response) => response,
        },
        (Method::GET, ["editors"]) => {
            let inner = shared.lock();
            let stopped: Vec<&Value> = (inner.events.iter())
                .filter(|e| e["type"] == "local_editor_stopped")
                .map(|e| &e["editorId"])
                .collect();
            let editors: Vec<Value> = (inner.events.iter())
                .filter(|e| e["type"] == "local_editor_started")
                .filter(|e| !stopped.contains(&&e["editorId"]))
                .map(|e| {
                    let id = e["editorId"].as_str().unwrap_or_default();
                    json!({"editorId": id, "cwd": e["cwd"], "url": format!("/editor/{id}/")})
                })
                .collect();
            json_response(&json!(editors))
        }
        (Method::DELETE, ["editors", id]) => {
            send(shared, json!({"type": "stop_local_editor", "editorId": id}))
        }
        (Method::POST, ["instances"]) => match body_json(req).await {
            Ok(mut body) => {
                body["type"] = json!("start_instance");
                if body["instanceId"].is_null() {
                    body["instanceId"] = json!(shared.fresh_id("instance"));
                }
                send(shared, body)
            }
            Err(response) => response,
        },
        (Method::POST, ["instances", id, "turns"]) => match body_json(req).await {
            Ok(body) => send(
                shared,
                json!({"type": "start_turn", "instanceId": id, "text": body["text"]}),
            ),
            Err(response) => response,
        },
        (Method::POST, ["instances", id, "interrupt"]) => {
            send(shared, json!({"type": "interrupt_turn", "instanceId": id}))
        }
        (Method::DELETE, ["instances", id]) => {
            send(shared, json!({"type": "stop_instance", "instanceId": id}))
        }
        (Method::GET, ["instances", id, "transcript"]) => match transcript(shared, id) {
            Ok(events) => json_response(&json!(events)),
            Err(why) => text(StatusCode::CONFLICT, "transcript_gap", &why),
        },
        (Method::GET, ["instances", id, "approvals"]) => {
            json_response(&json!(open_approvals(shared, id)))
        }
        (
            Method::POST,
            [
                "instances",
                id,
                "approvals",
                request_id,
                decision @ ("approve" | "deny"),
            ],
        ) => {
            let for_session = match body_json(req).await {
                Ok(body) => body["forSession"].as_bool().unwrap_or(false),
                Err(_) => false,
            };
            send(
                shared,
                json!({"type": "resolve_approval_request", "instanceId": id,
                    "requestId": request_id, "decision": decision, "forSession": for_session}),
            )
        }
        (Method::POST, ["controls"]) => {
            let body = match req.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(error) => return text(StatusCode::BAD_REQUEST, "bad_body", &error.to_string()),
            };
            let Ok(control) = serde_json::from_slice::<Value>(&body) else {
                return text(StatusCode::BAD_REQUEST, "bad_json", "body is not json");
            };
            match shared.send_control(control) {
                Ok(()) => json_response(&json!({"sent": true})),
                Err(error @ crate::simulator::SimError::InvalidControl) => text(
                    StatusCode::BAD_REQUEST,
                    "invalid_control",
                    &error.to_string(),
                ),
                Err(error) => sim_error(&error),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not_found", "no such api"),
    }
}

/// An instance's events as Kandan keeps them (see `Simulator::transcript`).
pub(crate) fn transcript(shared: &Shared, instance_id: &str) -> Result<Vec<Value>, String> {
    crate::simulator::transcript_of(&shared.lock().events, instance_id)
}

/// `approval_request`s of the instance with no `approval_resolved` yet.
fn open_approvals(shared: &Shared, instance_id: &str) -> Vec<Value> {
    let events = transcript(shared, instance_id).unwrap_or_default();
    let resolved: Vec<&Value> = (events.iter())
        .filter(|e| e["type"] == "approval_resolved")
        .map(|e| &e["requestId"])
        .collect();
    events
        .iter()
        .filter(|e| e["type"] == "approval_request" && !resolved.contains(&&e["requestId"]))
        .cloned()
        .collect()
}

/// The request's body as JSON, or the response refusing it.
async fn body_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "bad_body",
                &error.to_string(),
            ));
        }
    };
    serde_json::from_slice::<Value>(&body)
        .map_err(|_| text(StatusCode::BAD_REQUEST, "bad_json", "body is not json"))
}

/// Sends `control` to the runner; the API's answer.
fn send(shared: &Shared, control: Value) -> Response<Body> {
    match shared.send_control(control.clone()) {
        Ok(()) => json_response(&json!({"sent": control})),
        Err(error) => sim_error(&error),
    }
}

fn json_response(value: &Value) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(value.to_string())))
        .unwrap_or_default()
}
