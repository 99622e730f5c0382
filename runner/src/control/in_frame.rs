//! Frames from Kandan: Phoenix Channels v2 JSON, `[joinRef, ref, topic,
//! event, payload]`, read without a JSON tree. An incoming frame borrows
//! its strings and its payload from the text ([`IncomingFrame::parse`]);
//! the connection's reader also reads a forwarding control in the same
//! pass ([`IncomingFrame::read`]).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::wire::{Control, HotControl};

/// Why a text frame is not a Phoenix v2 message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The text is not JSON at all.
    #[error("frame is not json")]
    Json(#[source] serde_json::Error),
    /// JSON, but not an array of five: null-or-string refs, string topic
    /// and event, any payload.
    #[error("frame is not a phoenix v2 array of 5 elements")]
    Shape(#[source] serde_json::Error),
}

/// One message from Kandan, borrowing from its text; `P` is its payload:
/// the payload's text, or a [`Payload`] (see [`IncomingFrame::read`]).
#[derive(Debug, Deserialize)]
pub(crate) struct IncomingFrame<'a, P = &'a RawValue>(
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    P,
);

/// A frame's payload as [`IncomingFrame::read`] leaves it.
// Lives on the stack for one frame; a box would be an allocation per
// request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    /// A forwarding control, read with the frame.
    Control(Control),
    /// Anything else, as text.
    Raw(&'a RawValue),
}

impl<'a> IncomingFrame<'a> {
    /// Parses one text frame; never panics on bad input.
    pub(crate) fn parse(text: &'a str) -> Result<Self, FrameError> {
        serde_json::from_str(text).map_err(|err| {
            // Only on errors: is it JSON of another shape, or not JSON?
            match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => FrameError::Shape(err),
                Err(_) => FrameError::Json(err),
            }
        })
    }

    pub(crate) fn payload(&self) -> &'a RawValue {
        self.4
    }
}

impl<'a> IncomingFrame<'a, Payload<'a>> {
    /// Like [`IncomingFrame::parse`], and a `control` push of a forwarding
    /// control (a request, a WebSocket message: most frames) is read into
    /// its control in the same pass (`wire::HotControl`), instead of its
    /// text being scanned first and read again. Any other frame, or a
    /// control that pass does not take, is read by `parse` as before.
    pub(crate) fn read(text: &'a str) -> Result<Self, FrameError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        if let Ok(frame) = serde::Deserializer::deserialize_seq(&mut deserializer, OnePass)
            && deserializer.end().is_ok()
        {
            return Ok(frame);
        }
        let IncomingFrame(join_ref, msg_ref, topic, event, raw) = IncomingFrame::parse(text)?;
        Ok(IncomingFrame(
            join_ref,
            msg_ref,
            topic,
            event,
            Payload::Raw(raw),
        ))
    }

    pub(crate) fn into_payload(self) -> Payload<'a> {
        self.4
    }

    /// The payload's text, unless it was read as a control.
    pub(crate) fn raw(&self) -> Option<&'a RawValue> {
        match self.4 {
            Payload::Raw(raw) => Some(raw),
            Payload::Control(_) => None,
        }
    }
}

impl<P> IncomingFrame<'_, P> {
    pub(crate) fn join_ref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub(crate) fn msg_ref(&self) -> Option<&str> {
        self.1.as_deref()
    }

    pub(crate) fn topic(&self) -> &str {
        &self.2
    }

    pub(crate) fn event(&self) -> &str {
        &self.3
    }
}

/// A string of the frame's head, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// The frame as five elements, the payload of a `control` push read as a
/// [`HotControl`] (any failure sends the frame to `parse`).
struct OnePass;

impl<'de> Visitor<'de> for OnePass {
    type Value = IncomingFrame<'de, Payload<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a phoenix v2 array of 5 elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let missing = || de::Error::custom("fewer than 5 elements");
        let join_ref: Option<Str> = seq.next_element()?.ok_or_else(missing)?;
        let msg_ref: Option<Str> = seq.next_element()?.ok_or_else(missing)?;
        let Str(topic) = seq.next_element()?.ok_or_else(missing)?;
        let Str(event) = seq.next_element()?.ok_or_else(missing)?;
        let payload = if event == "control" {
            let HotControl(control) = seq.next_element()?.ok_or_else(missing)?;
            Payload::Control(control)
        } else {
            Payload::Raw(seq.next_element()?.ok_or_else(missing)?)
        };
        let (join_ref, msg_ref) = (join_ref.map(|s| s.0), msg_ref.map(|s| s.0));
        Ok(IncomingFrame(join_ref, msg_ref, topic, event, payload))
    }
}

/// A reply (`phx_reply`) payload: `{"status": "ok"|"error", "response": ...}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PhxReply<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

impl<'a> PhxReply<'a> {
    /// Reads a `phx_reply` payload; anything without `"status": "ok"` is an error.
    pub(crate) fn read(payload: &'a RawValue) -> PhxReply<'a> {
        serde_json::from_str(payload.get()).unwrap_or_default()
    }

    pub(crate) fn ok(&self) -> bool {
        self.status.as_deref() == Some("ok")
    }

    /// The `reason` an error reply gives, for the logs.
    pub(crate) fn reason(&self) -> String {
        #[derive(Deserialize)]
        struct Reason {
            reason: serde_json::Value,
        }
        let Some(response) = self.response else {
            return "null".into();
        };
        match serde_json::from_str::<Reason>(response.get()) {
            Ok(Reason {
                reason: serde_json::Value::String(reason),
            }) => reason,
            Ok(Reason { reason }) => reason.to_string(),
            Err(_) => response.get().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_server_push() {
        let text = r#"["3","7","runner:r1","control",{"type":"x"}]"#;
        let frame = IncomingFrame::parse(text).unwrap();
        assert_eq!(frame.join_ref(), Some("3"));
        assert_eq!(frame.msg_ref(), Some("7"));
        assert_eq!(frame.topic(), "runner:r1");
        assert_eq!(frame.event(), "control");
        assert_eq!(frame.payload().get(), r#"{"type":"x"}"#);
    }

    #[test]
    fn parses_null_refs_and_escaped_names() {
        let frame = IncomingFrame::parse(r#"[null,null,"phoenix","phx_\u0072eply",{}]"#).unwrap();
        assert_eq!(frame.join_ref(), None);
        assert_eq!(frame.msg_ref(), None);
        assert_eq!(frame.event(), "phx_reply");
    }

    #[test]
    fn rejects_malformed_frames() {
        for (text, want) in [
            ("", "json"),
            ("not json", "json"),
            ("[null,null,\"t\",\"e\",{}", "json"),
            ("{\"a\":1}", "shape"),
            ("[]", "shape"),
            ("[null,null,\"t\",\"e\"]", "shape"),
            ("[null,null,\"t\",\"e\",{},1]", "shape"),
            ("[1,null,\"t\",\"e\",{}]", "shape"),
            ("[null,{},\"t\",\"e\",{}]", "shape"),
            ("[null,null,3,\"e\",{}]", "shape"),
            ("[null,null,\"t\",null,{}]", "shape"),
            ("\"just a string\"", "shape"),
        ] {
            let got = match IncomingFrame::parse(text) {
                Err(FrameError::Json(_)) => "json",
                Err(FrameError::Shape(_)) => "shape",
                Ok(frame) => panic!("{text:?} parsed as {frame:?}"),
            };
            assert_eq!(got, want, "{text:?}");
            let control = text.replace("\"e\"", "\"control\"");
            let read = match IncomingFrame::read(&control) {
                Err(FrameError::Json(_)) => "json",
                Err(FrameError::Shape(_)) => "shape",
                Ok(frame) => panic!("{control:?} read as {frame:?}"),
            };
            assert_eq!(read, want, "{control:?}");
        }
    }

    #[test]
    fn a_forwarding_control_is_read_with_its_frame_and_anything_else_as_before() {
        let cancel = r#"{"type":"forward_http_cancel","requestId":"r\u0031"}"#;
        let text = format!(r#"["3","7","runner:r1","control",{cancel}]"#);
        let frame = IncomingFrame::read(&text).unwrap();
        assert_eq!((frame.join_ref(), frame.msg_ref()), (Some("3"), Some("7")));
        assert_eq!((frame.topic(), frame.event()), ("runner:r1", "control"));
        let expected = Control::parse(&RawValue::from_string(cancel.into()).unwrap()).unwrap();
        match frame.into_payload() {
            Payload::Control(control) => assert_eq!(control, expected),
            Payload::Raw(raw) => panic!("read as text: {raw}"),
        }
        // Another control, a broken one, another event: the text, as `parse` has it.
        for text in [
            r#"["3","7","runner:r1","control",{"type":"stop_instance","instanceId":"i1"}]"#,
            r#"["3","7","runner:r1","control",{"type":"forward_http_cancel"}]"#,
            r#"["3","7","runner:r1","control",{"type":"forward_http_cancel","requestId":"r","type":"x"}]"#,
            r#"["3","7","runner:r1","event",{"type":"forward_http_cancel","requestId":"r"}]"#,
            r#"[null,"7","phoenix","phx_reply",{"status":"ok","response":{}}]"#,
        ] {
            let frame = IncomingFrame::read(text).unwrap();
            let parsed = IncomingFrame::parse(text).unwrap();
            assert_eq!(
                frame.raw().map(RawValue::get),
                Some(parsed.payload().get()),
                "{text}"
            );
            assert_eq!(frame.event(), parsed.event());
        }
    }

    #[test]
    fn reads_replies() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let ok = raw(r#"{"status": "ok", "response": {}}"#);
        assert!(PhxReply::read(&ok).ok());
        let err = raw(r#"{"status": "error", "response": {"reason": "unauthorized"}}"#);
        let err = PhxReply::read(&err);
        assert!(!err.ok());
        assert_eq!(err.reason(), "unauthorized");
        let garbage = raw(r#""garbage""#);
        assert!(!PhxReply::read(&garbage).ok());
    }
}
