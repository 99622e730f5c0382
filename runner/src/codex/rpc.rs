//! JSON-RPC 2.0 as `codex app-server` speaks it: one JSON object a line, no
//! `"jsonrpc"` field. Our requests carry integer ids from one counter; the
//! app-server's requests to us carry ids of their own, answered with a
//! response or an error. [`Calls`] remembers what each of our requests was
//! for and when it times out, so the instance's one task can go on reading
//! while an answer is due.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::wire::Params;

/// A JSON-RPC id: the app-server uses integers, the standard allows strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RequestId {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Int(id) => write!(f, "{id}"),
            RequestId::Str(id) => f.write_str(id),
        }
    }
}

/// The `error` member of an error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Value>,
}

/// One line from the app-server: a request has both `id` and `method`, a
/// notification `method` alone, an answer `id` with `result` or `error`.
/// Serialized back (a spilled backlog) it reads as the same variant.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Incoming {
    /// The app-server asks us (approvals, user input, ...).
    Request {
        id: RequestId,
        method: String,
        #[serde(default)]
        params: Value,
    },
    Notification {
        method: String,
        /// As written, never parsed to a tree on the way through.
        params: Params,
    },
    Response {
        id: RequestId,
        result: Value,
    },
    Error {
        id: RequestId,
        error: RpcError,
    },
}

/// The members of any line, read in one pass: serde's `untagged` would
/// buffer the whole line and parse it again per variant it tries, which
/// was most of the runner's CPU per notification.
#[derive(Deserialize)]
struct Members {
    #[serde(default)]
    id: Option<Value>,
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    /// `Some(Null)` for `"result": null`, `None` when absent.
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    error: Option<RpcError>,
}

fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(de).map(Some)
}

impl<'de> Deserialize<'de> for Incoming {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let m = Members::deserialize(de)?;
        // An id that is neither integer nor string does not make a request
        // (the line is a notification if it has a method).
        let id = m.id.and_then(|id| RequestId::deserialize(id).ok());
        Ok(match (id, m.method, m.result, m.error) {
            (Some(id), Some(method), _, _) => Incoming::Request {
                id,
                method,
                params: Params::from_raw(m.params).value(),
            },
            (None, Some(method), _, _) => Incoming::Notification {
                method,
                params: Params::from_raw(m.params),
            },
            (Some(id), None, Some(result), _) => Incoming::Response { id, result },
            (Some(id), None, None, Some(error)) => Incoming::Error { id, error },
            _ => {
                return Err(serde::de::Error::custom(
                    "neither a request, a notification nor an answer",
                ));
            }
        })
    }
}

/// One line to the app-server.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ServerMessage<'a> {
    Request {
        id: i64,
        method: &'a str,
        params: &'a Value,
    },
    Notification {
        method: &'a str,
    },
    Response {
        id: &'a RequestId,
        result: &'a Value,
    },
    Error {
        id: &'a RequestId,
        error: &'a RpcError,
    },
}

/// Parses one line (without its newline).
pub(crate) fn parse_line(line: &[u8]) -> Result<Incoming, serde_json::Error> {
    serde_json::from_slice(line)
}

fn to_line(message: &ServerMessage<'_>) -> String {
    // Serializing our own plain data cannot fail.
    serde_json::to_string(message).unwrap_or_default()
}

/// `{"method": ...}` without params (`initialized`).
pub(crate) fn notification_line(method: &str) -> String {
    to_line(&ServerMessage::Notification { method })
}

/// Our answer to the app-server's request `id`.
pub(crate) fn response_line(id: &RequestId, result: &Value) -> String {
    to_line(&ServerMessage::Response { id, result })
}

/// Our refusal of the app-server's request `id`.
pub(crate) fn error_line(id: &RequestId, error: &RpcError) -> String {
    to_line(&ServerMessage::Error { id, error })
}

/// Our requests waiting for an answer, each with a tag saying what it was
/// for and a deadline.
#[derive(Debug)]
pub(crate) struct Calls<T> {
    next_id: i64,
    pending: HashMap<i64, (T, Instant, &'static str)>,
}

impl<T> Default for Calls<T> {
    fn default() -> Self {
        Calls {
            next_id: 1,
            pending: HashMap::new(),
        }
    }
}

impl<T> Calls<T> {
    /// Registers a request and returns the line to send.
    pub(crate) fn start(
        &mut self,
        method: &'static str,
        params: &Value,
        tag: T,
        timeout: Duration,
    ) -> String {
        let id = self.next_id;
        self.next_id += 1;
        self.pending
            .insert(id, (tag, Instant::now() + timeout, method));
        to_line(&ServerMessage::Request { id, method, params })
    }

    /// The tag and method of the request an answer is for; `None` for an
    /// id we never sent or already gave up on.
    pub(crate) fn finish(&mut self, id: &RequestId) -> Option<(T, &'static str)> {
        let RequestId::Int(id) = id else {
            return None;
        };
        self.pending
            .remove(id)
            .map(|(tag, _, method)| (tag, method))
    }

    /// The requests whose deadline passed, removed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(T, &'static str)> {
        let ids: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|(tag, _, method)| (tag, method))
            .collect()
    }

    /// Moves the deadline of the requests `which` picks to `until`, if later.
    pub(crate) fn postpone(&mut self, until: Instant, which: impl Fn(&T) -> bool) {
        for (tag, deadline, _) in self.pending.values_mut() {
            if which(tag) && *deadline < until {
                *deadline = until;
            }
        }
    }

    /// The earliest deadline, for the instance's timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|(_, deadline, _)| *deadline)
            .min()
    }

    /// Every request still waiting (the app-server is gone).
    pub(crate) fn drain(&mut self) -> Vec<(T, &'static str)> {
        self.pending
            .drain()
            .map(|(_, (tag, _, method))| (tag, method))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_kind_of_message() {
        let request = parse_line(
            br#"{"method":"item/commandExecution/requestApproval","id":0,"params":{"itemId":"c1"}}"#,
        )
        .unwrap();
        assert!(
            matches!(request, Incoming::Request { id: RequestId::Int(0), ref method, .. } if method == "item/commandExecution/requestApproval")
        );
        let note =
            parse_line(br#"{"method":"turn/started","params":{"threadId":"t"},"emittedAtMs":1}"#)
                .unwrap();
        assert!(
            matches!(note, Incoming::Notification { ref params, .. } if params.value()["threadId"] == "t")
        );
        let response = parse_line(br#"{"id":3,"result":{"turn":{"id":"u"}}}"#).unwrap();
        assert!(matches!(
            response,
            Incoming::Response {
                id: RequestId::Int(3),
                ..
            }
        ));
        let null = parse_line(br#"{"id":"x","result":null}"#).unwrap();
        assert!(matches!(
            null,
            Incoming::Response {
                id: RequestId::Str(_),
                result: Value::Null
            }
        ));
        let error = parse_line(br#"{"id":4,"error":{"code":-32600,"message":"bad"}}"#).unwrap();
        assert!(matches!(
            error,
            Incoming::Error {
                error: RpcError { code: -32600, .. },
                ..
            }
        ));
        // An id that is no JSON-RPC id does not make a request.
        for odd in [
            &br#"{"id":null,"method":"x"}"#[..],
            br#"{"id":{"a":1},"method":"x"}"#,
        ] {
            assert!(
                matches!(parse_line(odd), Ok(Incoming::Notification { ref method, .. }) if method == "x"),
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
        for garbage in [
            &b"not json"[..],
            b"{}",
            b"[1,2]",
            b"{\"id\":1}",
            b"\"x\"",
            br#"{"id":[1],"result":2}"#,
        ] {
            assert!(
                parse_line(garbage).is_err(),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn writes_lines_without_a_jsonrpc_field() {
        let mut calls = Calls::default();
        let line = calls.start(
            "thread/read",
            &json!({"threadId": "t"}),
            "tag",
            Duration::from_secs(1),
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            json!({"id": 1, "method": "thread/read", "params": {"threadId": "t"}})
        );
        assert_eq!(
            notification_line("initialized"),
            r#"{"method":"initialized"}"#
        );
        assert_eq!(
            response_line(&RequestId::Int(0), &json!({"decision": "accept"})),
            r#"{"id":0,"result":{"decision":"accept"}}"#
        );
        let error = RpcError {
            code: -32000,
            message: "no".into(),
            data: None,
        };
        assert_eq!(
            error_line(&RequestId::Int(7), &error),
            r#"{"id":7,"error":{"code":-32000,"message":"no"}}"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_match_answers_and_time_out() {
        let mut calls = Calls::default();
        calls.start("a", &Value::Null, 'a', Duration::from_secs(1));
        calls.start("b", &Value::Null, 'b', Duration::from_secs(5));
        assert_eq!(calls.finish(&RequestId::Int(2)), Some(('b', "b")));
        assert_eq!(calls.finish(&RequestId::Int(2)), None);
        assert_eq!(calls.finish(&RequestId::Str("1".into())), None);
        assert!(calls.expired(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(calls.expired(Instant::now()), vec![('a', "a")]);
        assert_eq!(calls.next_deadline(), None);
    }

    #[test]
    fn postponed_requests_expire_later() {
        let mut calls = Calls::<&str>::default();
        calls.start("a", &json!({}), "open", Duration::from_secs(1));
        calls.start("b", &json!({}), "other", Duration::from_secs(1));
        let later = Instant::now() + Duration::from_secs(60);
        calls.postpone(later, |tag| *tag == "open");
        let expired = calls.expired(Instant::now() + Duration::from_secs(2));
        assert_eq!(expired, vec![("other", "b")]);
        assert_eq!(calls.next_deadline(), Some(later));
    }
}
