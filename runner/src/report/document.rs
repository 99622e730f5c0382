//! What a running runner says about itself to `kandan-runner status`: one
//! JSON document per runner, the same types on both ends of the socket.
//! Optional fields are left out when unknown, and a reader ignores fields
//! it does not know, so either end may be newer.

use serde::{Deserialize, Serialize};

use crate::cgroup::Usage;

/// One running `connect` or `watch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    pub pid: u32,
    /// `connect` or `watch`.
    pub command: String,
    pub backend: String,
    /// When it started (RFC 3339 UTC).
    pub started: String,
    /// The Kandan connection (`connect` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kandan: Option<KandanStatus>,
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
    #[serde(default)]
    pub editors: Vec<EditorStatus>,
}

/// The connection to Kandan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KandanStatus {
    /// The socket mount, never with the token.
    pub url: String,
    pub runner_id: String,
    /// `connecting`, `connected` or `reconnecting`.
    pub state: String,
    /// Since when it is in that state (RFC 3339 UTC).
    pub since: String,
    /// Failed attempts since the last join (while `reconnecting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Why the last attempt failed (while `reconnecting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One detected listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub port: u16,
    pub label: String,
    pub pid: u32,
    /// Redacted as Kandan gets it.
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// `pending`, `approved`, `denied` (the wire's words) or `silent` (`connect`; absent
    /// under `watch`, which asks no one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub addresses: Vec<String>,
    /// `http` or `https` once the runner knows how the server speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

/// One Codex instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub cwd: String,
    /// `starting`, `idle` or `running`.
    pub state: String,
    /// CPU time and memory of its cgroup, when it has one.
    #[serde(flatten)]
    pub usage: Usage,
}

/// One local editor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EditorStatus {
    pub editor_id: String,
    pub cwd: String,
    /// `running`.
    pub state: String,
    /// CPU time and memory of its cgroup, when it has one.
    #[serde(flatten)]
    pub usage: Usage,
}

/// What `status --json` prints: every live runner of this user, by pid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub runners: Vec<RunnerStatus>,
}
