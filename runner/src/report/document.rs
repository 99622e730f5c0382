//! What a running runner says about itself to `kandan-runner status`: one
//! JSON document per runner, the same types on both ends of the socket.
//! Optional fields are left out when unknown, and a reader ignores fields
//! it does not know, so either end may be newer.

use serde::{Deserialize, Serialize};

use crate::cgroup::Usage;

/// One running `connect` or `watch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunnerStatus {
    pub(crate) pid: u32,
    /// `connect` or `watch`.
    pub(crate) command: String,
    pub(crate) backend: String,
    /// When it started (RFC 3339 UTC).
    pub(crate) started: String,
    /// The Kandan connection (`connect` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kandan: Option<KandanStatus>,
    #[serde(default)]
    pub(crate) listeners: Vec<ListenerStatus>,
    #[serde(default)]
    pub(crate) instances: Vec<InstanceStatus>,
    #[serde(default)]
    pub(crate) editors: Vec<EditorStatus>,
}

/// The connection to Kandan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KandanStatus {
    /// The socket mount, never with the token.
    pub(crate) url: String,
    pub(crate) runner_id: String,
    /// `connecting`, `connected` or `reconnecting`.
    pub(crate) state: String,
    /// Since when it is in that state (RFC 3339 UTC).
    pub(crate) since: String,
    /// Failed attempts since the last join (while `reconnecting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<u64>,
    /// Why the last attempt failed (while `reconnecting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

/// One detected listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenerStatus {
    pub(crate) port: u16,
    pub(crate) label: String,
    pub(crate) pid: u32,
    /// Redacted as Kandan gets it.
    pub(crate) command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cwd: Option<String>,
    /// `pending`, `approved`, `denied` (the wire's words) or `silent` (`connect`; absent
    /// under `watch`, which asks no one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    pub(crate) addresses: Vec<String>,
    /// `http` or `https` once the runner knows how the server speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scheme: Option<String>,
}

/// One Codex instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceStatus {
    pub(crate) instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thread_id: Option<String>,
    pub(crate) cwd: String,
    /// `starting`, `idle` or `running`.
    pub(crate) state: String,
    /// CPU time and memory of its cgroup, when it has one.
    #[serde(flatten)]
    pub(crate) usage: Usage,
}

/// One local editor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EditorStatus {
    pub(crate) editor_id: String,
    pub(crate) cwd: String,
    /// `running`.
    pub(crate) state: String,
    /// CPU time and memory of its cgroup, when it has one.
    #[serde(flatten)]
    pub(crate) usage: Usage,
}

/// What `status --json` prints: every live runner of this user, by pid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusReport {
    pub(crate) runners: Vec<RunnerStatus>,
}
