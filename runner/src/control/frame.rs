//! Phoenix Channels v2 JSON framing: `[joinRef, ref, topic, event, payload]`.

use serde_json::Value;

/// Why a text frame is not a Phoenix v2 message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The text is not JSON at all.
    #[error("frame is not json")]
    Json(#[source] serde_json::Error),
    /// The JSON is not an array of five elements.
    #[error("frame is not an array of 5 elements")]
    Shape,
    /// `joinRef` or `ref` is neither null nor a string.
    #[error("frame {0} must be null or a string")]
    Ref(&'static str),
    /// `topic` or `event` is not a string.
    #[error("frame {0} must be a string")]
    Name(&'static str),
}

/// One message of the Phoenix v2 serializer.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

impl Frame {
    /// Parses one text frame; never panics on bad input.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(FrameError::Json)?;
        let Value::Array(items) = value else {
            return Err(FrameError::Shape);
        };
        let Ok([join_ref, msg_ref, topic, event, payload]) = <[Value; 5]>::try_from(items) else {
            return Err(FrameError::Shape);
        };
        Ok(Frame {
            join_ref: opt_string(join_ref, "joinRef")?,
            msg_ref: opt_string(msg_ref, "ref")?,
            topic: string(topic, "topic")?,
            event: string(event, "event")?,
            payload,
        })
    }

    /// The wire text of this frame.
    pub fn to_text(&self) -> String {
        // A tuple serializes as the JSON array, without copying the payload
        // (which may hold a large base64 body) into a new tree first.
        let array = (
            &self.join_ref,
            &self.msg_ref,
            &self.topic,
            &self.event,
            &self.payload,
        );
        // Strings, nulls and a JSON value: cannot fail.
        serde_json::to_string(&array).unwrap_or_default()
    }
}

/// The wire text of a frame whose payload is any serializable value,
/// written straight from it: an event carrying a large body is encoded
/// once, into this text, without a JSON tree in between.
/// `size_hint` is the expected length (grown past if need be).
pub fn text_of(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &impl serde::Serialize,
    size_hint: usize,
) -> String {
    let mut text = Vec::with_capacity(size_hint);
    // The payloads are events: strings, numbers and string-keyed maps.
    if serde_json::to_writer(&mut text, &(join_ref, msg_ref, topic, event, payload)).is_err() {
        return String::new();
    }
    // serde_json writes UTF-8 only.
    String::from_utf8(text).unwrap_or_default()
}

fn opt_string(value: Value, what: &'static str) -> Result<Option<String>, FrameError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(FrameError::Ref(what)),
    }
}

fn string(value: Value, what: &'static str) -> Result<String, FrameError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(FrameError::Name(what)),
    }
}

/// Refs of one connection: decimal strings from a single counter.
#[derive(Debug, Default)]
pub struct RefCounter {
    last: u64,
}

impl RefCounter {
    /// The next ref ("1", "2", ...).
    pub fn next_ref(&mut self) -> String {
        self.last += 1;
        self.last.to_string()
    }
}

/// A reply (`phx_reply`) payload: `{"status": "ok"|"error", "response": ...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub ok: bool,
    pub response: Value,
}

impl Reply {
    /// Reads a `phx_reply` payload; anything without `"status": "ok"` is an error.
    pub fn from_payload(payload: &Value) -> Reply {
        let ok = payload.get("status").and_then(Value::as_str) == Some("ok");
        let response = payload.get("response").cloned().unwrap_or(Value::Null);
        Reply { ok, response }
    }

    /// The `reason` an error reply gives, for the logs.
    pub fn reason(&self) -> String {
        match self.response.get("reason") {
            Some(Value::String(reason)) => reason.clone(),
            Some(other) => other.to_string(),
            None => self.response.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_server_push() {
        let frame = Frame::parse(r#"["3","7","runner:r1","control",{"type":"x"}]"#).unwrap();
        assert_eq!(frame.join_ref.as_deref(), Some("3"));
        assert_eq!(frame.msg_ref.as_deref(), Some("7"));
        assert_eq!(frame.topic, "runner:r1");
        assert_eq!(frame.event, "control");
        assert_eq!(frame.payload, json!({"type": "x"}));
    }

    #[test]
    fn parses_null_refs() {
        let frame = Frame::parse(r#"[null,null,"phoenix","phx_reply",{}]"#).unwrap();
        assert_eq!(frame.join_ref, None);
        assert_eq!(frame.msg_ref, None);
    }

    #[test]
    fn heartbeat_has_the_exact_wire_form() {
        let frame = Frame {
            join_ref: None,
            msg_ref: Some("12".into()),
            topic: "phoenix".into(),
            event: "heartbeat".into(),
            payload: json!({}),
        };
        assert_eq!(frame.to_text(), r#"[null,"12","phoenix","heartbeat",{}]"#);
        assert_eq!(Frame::parse(&frame.to_text()).unwrap(), frame);
    }

    #[test]
    fn a_typed_payload_has_the_same_text_as_its_json_tree() {
        let payload = json!({"type": "x", "bodyBase64": "AQID"});
        let tree = Frame {
            join_ref: Some("1".into()),
            msg_ref: Some("9".into()),
            topic: "runner:r".into(),
            event: "event".into(),
            payload: payload.clone(),
        };
        let text = text_of(Some("1"), Some("9"), "runner:r", "event", &payload, 0);
        assert_eq!(text, tree.to_text());
    }

    #[test]
    fn rejects_malformed_frames() {
        for (text, want) in [
            ("", "json"),
            ("not json", "json"),
            ("{\"a\":1}", "shape"),
            ("[]", "shape"),
            ("[null,null,\"t\",\"e\"]", "shape"),
            ("[null,null,\"t\",\"e\",{},1]", "shape"),
            ("[1,null,\"t\",\"e\",{}]", "ref"),
            ("[null,{},\"t\",\"e\",{}]", "ref"),
            ("[null,null,3,\"e\",{}]", "name"),
            ("[null,null,\"t\",null,{}]", "name"),
            ("\"just a string\"", "shape"),
        ] {
            let got = match Frame::parse(text) {
                Err(FrameError::Json(_)) => "json",
                Err(FrameError::Shape) => "shape",
                Err(FrameError::Ref(_)) => "ref",
                Err(FrameError::Name(_)) => "name",
                Ok(frame) => panic!("{text:?} parsed as {frame:?}"),
            };
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn refs_count_up_from_one_as_decimal_strings() {
        let mut refs = RefCounter::default();
        assert_eq!(refs.next_ref(), "1");
        assert_eq!(refs.next_ref(), "2");
        assert_eq!(refs.next_ref(), "3");
    }

    #[test]
    fn reads_replies() {
        let ok = Reply::from_payload(&json!({"status": "ok", "response": {}}));
        assert!(ok.ok);
        let err = Reply::from_payload(
            &json!({"status": "error", "response": {"reason": "unauthorized"}}),
        );
        assert!(!err.ok);
        assert_eq!(err.reason(), "unauthorized");
        assert!(!Reply::from_payload(&json!("garbage")).ok);
    }
}
