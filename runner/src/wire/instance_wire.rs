//! An instance's event on the wire (PROTOCOL.md section 7), serialized
//! once: the instance's event becomes its JSON object when it is numbered,
//! the replay log keeps that buffer, and every frame of it (the first and
//! any resend after a reconnect) copies the buffer after the ids, without
//! serializing the event again.

use std::io::Write;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// An instance's event as JSON: `{"type":"codex_notification",...}`.
/// Cheap to clone (the buffer is shared).
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceEventJson {
    /// The wire `type`, for logs.
    pub kind: &'static str,
    /// The object, `type` first; its length is what the replay log counts.
    pub json: Bytes,
}

/// An instance's event with its `instanceId`, `seq` and `gap`: those
/// first, then the event's own fields, as one object.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceWire {
    pub instance_id: String,
    pub seq: u64,
    /// Sent only when true.
    pub gap: bool,
    pub event: InstanceEventJson,
}

impl InstanceWire {
    /// Appends the payload's JSON to `buf`: `{"instanceId":..,"seq":..,`
    /// and the event's object after its `{`.
    pub(crate) fn write_json(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"instanceId\":");
        // A string: serde_json escapes it, and writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &self.instance_id);
        let _ = write!(buf, ",\"seq\":{}", self.seq);
        if self.gap {
            buf.extend_from_slice(b",\"gap\":true");
        }
        match self.event.json.strip_prefix(b"{") {
            Some(b"}") | None => buf.push(b'}'),
            Some(fields) => {
                buf.push(b',');
                buf.extend_from_slice(fields);
            }
        }
    }
}

/// The same JSON as [`InstanceWire::write_json`], for serializers other
/// than the frame writer's (which calls `write_json` itself).
impl Serialize for InstanceWire {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(self.event.json.len() + 64);
        self.write_json(&mut buf);
        let text = String::from_utf8(buf).map_err(serde::ser::Error::custom)?;
        let raw = RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wire(instance_id: &str, gap: bool, json: &str) -> InstanceWire {
        InstanceWire {
            instance_id: instance_id.into(),
            seq: 7,
            gap,
            event: InstanceEventJson {
                kind: "codex_notification",
                json: Bytes::copy_from_slice(json.as_bytes()),
            },
        }
    }

    #[test]
    fn the_ids_come_first_then_the_events_own_fields() {
        let event = r#"{"type":"codex_notification","method":"m","params":{"a":[1]}}"#;
        assert_eq!(
            serde_json::to_string(&wire("i\"1", true, event)).unwrap(),
            r#"{"instanceId":"i\"1","seq":7,"gap":true,"type":"codex_notification","method":"m","params":{"a":[1]}}"#
        );
        assert_eq!(
            serde_json::to_value(wire("i", false, event)).unwrap(),
            json!({"instanceId": "i", "seq": 7, "type": "codex_notification", "method": "m",
                "params": {"a": [1]}})
        );
        assert_eq!(
            serde_json::to_string(&wire("i", false, "{}")).unwrap(),
            r#"{"instanceId":"i","seq":7}"#
        );
    }
}
