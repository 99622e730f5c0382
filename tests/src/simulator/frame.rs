//! Phoenix Channels v2 JSON frames: `[joinRef, ref, topic, event, payload]`.

use serde_json::{Value, json};

/// Why a text frame is not a Phoenix v2 frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The text is not JSON at all.
    #[error("frame is not json")]
    Json(#[source] serde_json::Error),
    /// The JSON is not an array of five elements.
    #[error("frame is not a five-element array")]
    Shape,
    /// `joinRef` or `ref` is neither a string nor null.
    #[error("{0} is neither a string nor null")]
    Ref(&'static str),
    /// `topic` or `event` is not a string.
    #[error("{0} is not a string")]
    Name(&'static str),
}

/// One Phoenix v2 frame, in either direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The join reference of the channel the frame belongs to.
    pub join_ref: Option<String>,
    /// The message reference; replies carry the reference of what they answer.
    pub msg_ref: Option<String>,
    /// `runner:<id>` or `phoenix`.
    pub topic: String,
    /// `phx_join`, `heartbeat`, `event`, `control`, `phx_reply`, ...
    pub event: String,
    /// Any JSON value; an object for every event of PROTOCOL.md.
    pub payload: Value,
}

impl Frame {
    /// Builds a frame.
    pub fn new(
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> Self {
        Self {
            join_ref: join_ref.map(str::to_owned),
            msg_ref: msg_ref.map(str::to_owned),
            topic: topic.to_owned(),
            event: event.to_owned(),
            payload,
        }
    }

    /// Parses a text WebSocket message.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(FrameError::Json)?;
        let Value::Array(mut items) = value else {
            return Err(FrameError::Shape);
        };
        if items.len() != 5 {
            return Err(FrameError::Shape);
        }
        let payload = items.pop().unwrap_or(Value::Null);
        let event = name(items.pop(), "event")?;
        let topic = name(items.pop(), "topic")?;
        let msg_ref = reference(items.pop(), "ref")?;
        let join_ref = reference(items.pop(), "joinRef")?;
        Ok(Self {
            join_ref,
            msg_ref,
            topic,
            event,
            payload,
        })
    }

    /// The frame as the text of a WebSocket message.
    pub fn to_text(&self) -> String {
        json!([
            self.join_ref,
            self.msg_ref,
            self.topic,
            self.event,
            self.payload
        ])
        .to_string()
    }

    /// A `phx_reply` answering this frame, with `status` and `response`.
    pub fn reply(&self, status: &str, response: Value) -> Self {
        Self {
            join_ref: self.join_ref.clone(),
            msg_ref: self.msg_ref.clone(),
            topic: self.topic.clone(),
            event: "phx_reply".to_owned(),
            payload: json!({ "status": status, "response": response }),
        }
    }
}

fn reference(value: Option<Value>, what: &'static str) -> Result<Option<String>, FrameError> {
    match value {
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        _ => Err(FrameError::Ref(what)),
    }
}

fn name(value: Option<Value>, what: &'static str) -> Result<String, FrameError> {
    match value {
        Some(Value::String(s)) => Ok(s),
        _ => Err(FrameError::Name(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let frame = Frame::new(
            Some("1"),
            Some("2"),
            "runner:a",
            "event",
            json!({"type": "x"}),
        );
        let text = frame.to_text();
        assert_eq!(text, r#"["1","2","runner:a","event",{"type":"x"}]"#);
        assert_eq!(Frame::parse(&text).unwrap(), frame);
    }

    #[test]
    fn null_refs() {
        let frame = Frame::parse(r#"[null,"7","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(frame.join_ref, None);
        assert_eq!(frame.msg_ref.as_deref(), Some("7"));
        let reply = frame.reply("ok", json!({}));
        assert_eq!(
            reply.to_text(),
            r#"[null,"7","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(Frame::parse("nope"), Err(FrameError::Json(_))));
        assert!(matches!(Frame::parse("[1,2]"), Err(FrameError::Shape)));
        assert!(matches!(Frame::parse("{}"), Err(FrameError::Shape)));
        assert!(matches!(
            Frame::parse(r#"[1,"2","t","e",{}]"#),
            Err(FrameError::Ref("joinRef"))
        ));
        assert!(matches!(
            Frame::parse(r#"[null,null,3,"e",{}]"#),
            Err(FrameError::Name("topic"))
        ));
    }
}
