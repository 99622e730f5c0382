//! Frames to Kandan: Phoenix Channels v2 JSON, `[joinRef, ref, topic,
//! event, payload]`, written straight from a [`Head`] and a typed payload
//! ([`text_of`], [`event_frame`]) without a JSON tree; frames from Kandan
//! are read in `in_frame`.

use super::out_frame::{HEADROOM, OutFrame};

/// The four fields before an outgoing frame's payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head<'a> {
    join_ref: Option<&'a str>,
    msg_ref: Option<&'a str>,
    topic: &'a str,
    event: &'a str,
}

impl<'a> Head<'a> {
    pub(crate) fn new(
        join_ref: Option<&'a str>,
        msg_ref: Option<&'a str>,
        topic: &'a str,
        event: &'a str,
    ) -> Self {
        Head {
            join_ref,
            msg_ref,
            topic,
            event,
        }
    }

    /// The head of a push of an event on `topic`.
    pub(crate) fn push(join_ref: &'a str, msg_ref: &'a str, topic: &'a str) -> Self {
        Head::new(Some(join_ref), Some(msg_ref), topic, "event")
    }

    /// Appends the wire text of the frame to `buf`; false if the payload
    /// could not be serialized (the payloads are events: strings, numbers
    /// and string-keyed maps, so it never fails in practice).
    fn write(self, buf: &mut Vec<u8>, payload: &impl serde::Serialize) -> bool {
        let Head {
            join_ref,
            msg_ref,
            topic,
            event,
        } = self;
        serde_json::to_writer(&mut *buf, &(join_ref, msg_ref, topic, event, payload)).is_ok()
    }
}

/// The wire text of a frame whose payload is any serializable value,
/// written straight from it. `size_hint` is the expected length (grown past
/// if need be).
pub(crate) fn text_of(head: Head<'_>, payload: &impl serde::Serialize, size_hint: usize) -> String {
    let mut text = Vec::with_capacity(size_hint);
    if !head.write(&mut text, payload) {
        return String::new();
    }
    // serde_json writes UTF-8 only.
    String::from_utf8(text).unwrap_or_default()
}

/// The frame of [`text_of`], masked and ready to write (see `out_frame`).
pub(crate) fn frame_of(
    head: Head<'_>,
    payload: &impl serde::Serialize,
    size_hint: usize,
) -> OutFrame {
    let mut buf = OutFrame::buffer(size_hint);
    if !head.write(&mut buf, payload) {
        buf.truncate(HEADROOM);
    }
    OutFrame::text(buf)
}

/// The frame of a push of `event`: like [`frame_of`], with a body, if the
/// event has one, base64-encoded (SIMD) straight into the frame's buffer.
pub(crate) fn event_frame(head: Head<'_>, event: crate::wire::Event) -> OutFrame {
    OutFrame::text(event_buffer(head, event))
}

/// [`HEADROOM`] bytes, then the text of a push of `event`.
fn event_buffer(head: Head<'_>, mut event: crate::wire::Event) -> Vec<u8> {
    if let crate::wire::Event::Instance(wire) = &event {
        return instance_buffer(head, wire);
    }
    let hint = event.size_hint();
    let body = event.take_body();
    let mut buf = OutFrame::buffer(hint);
    if !head.write(&mut buf, &event) {
        buf.truncate(HEADROOM);
        return buf;
    }
    drop(event);
    if let Some(body) = body {
        // The payload ends with its body field, empty: `"bodyBase64":""}]`.
        const TAIL: &[u8] = b"\"}]";
        if !buf.ends_with(b"\"\"}]") {
            buf.truncate(HEADROOM);
            return buf;
        }
        buf.truncate(buf.len() - TAIL.len());
        body.append_base64(&mut buf);
        buf.extend_from_slice(TAIL);
    }
    buf
}

/// [`HEADROOM`] bytes, then the text of a push of an instance's event,
/// serialized when it was numbered: the head with an empty payload, whose
/// `{}]` the event's JSON replaces.
fn instance_buffer(head: Head<'_>, wire: &crate::wire::InstanceWire) -> Vec<u8> {
    let mut buf = OutFrame::buffer(wire.event.json.len() + 256);
    if !head.write(&mut buf, &Empty {}) {
        buf.truncate(HEADROOM);
        return buf;
    }
    buf.truncate(buf.len() - b"{}]".len());
    wire.write_json(&mut buf);
    buf.push(b']');
    buf
}

/// The text [`event_frame`] frames.
#[cfg(test)]
pub(crate) fn event_text(head: Head<'_>, event: crate::wire::Event) -> String {
    let buf = event_buffer(head, event);
    String::from_utf8(buf[HEADROOM..].to_vec()).unwrap()
}

/// The `{}` payload of heartbeats, joins without state and leaves.
#[derive(serde::Serialize)]
pub(crate) struct Empty {}

/// Refs of one connection: decimal strings from a single counter.
#[derive(Debug, Default)]
pub(crate) struct RefCounter {
    last: u64,
}

impl RefCounter {
    /// The next ref ("1", "2", ...).
    pub(crate) fn next_ref(&mut self) -> String {
        self.last += 1;
        self.last.to_string()
    }

    /// The ref [`RefCounter::next_ref`] will give next.
    pub(crate) fn peek_next(&self) -> u64 {
        self.last + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::in_frame::IncomingFrame;

    #[test]
    fn heartbeat_has_the_exact_wire_form() {
        let head = Head::new(None, Some("12"), "phoenix", "heartbeat");
        let text = text_of(head, &Empty {}, 0);
        assert_eq!(text, r#"[null,"12","phoenix","heartbeat",{}]"#);
        let frame = IncomingFrame::parse(&text).unwrap();
        assert_eq!(frame.msg_ref(), Some("12"));
    }

    #[test]
    fn a_small_answer_fits_its_size_hint() {
        use crate::wire::{Event, ForwardHttpResponse, Headers};
        let headers = [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("etag", "W/\"5f-1a2b3c\""),
            ("date", "Mon, 07 Dec 2026 21:00:00 GMT"),
        ];
        let event = Event::ForwardHttpResponse(ForwardHttpResponse {
            request_id: "0b6f1f0e-8a1c-4d3e-9f7a-2c5b8e4d1a90".into(),
            status: 200,
            headers: Headers::of(&headers),
            streaming: None,
            body: bytes::Bytes::from(vec![b'x'; 100]).into(),
        });
        let hint = event.size_hint();
        // Under 1 KiB (a small block to malloc), and room for the text.
        assert!(hint < 1024, "{hint}");
        let head = Head::push("12", "345", "runner:0b6f1f0e-8a1c-4d3e-9f7a-2c5b8e4d1a90");
        let text = event_text(head, event);
        assert!(text.len() <= hint, "{} > {hint}: {text}", text.len());
    }

    #[test]
    fn bodies_are_written_straight_into_the_frame() {
        use crate::wire::Event;
        use crate::wire::Opcode;
        use crate::wire::{ForwardHttpResponse, ForwardWebsocketMessage};
        let body = bytes::Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
        let events = [
            Event::ForwardHttpResponse(ForwardHttpResponse {
                request_id: "h1".into(),
                status: 200,
                headers: crate::wire::Headers::of(&[("a", "\"quoted\"")]),
                streaming: Some(true),
                body: body.clone().into(),
            }),
            Event::ForwardWebsocketMessage(ForwardWebsocketMessage {
                socket_id: "s".into(),
                opcode: Opcode::Binary,
                body: Default::default(),
            }),
        ];
        for event in events {
            let head = Head::push("1", "2", "t");
            let tree = text_of(head, &event, 0);
            let direct = event_text(head, event);
            let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            assert_eq!(parse(&direct), parse(&tree));
        }
    }

    #[test]
    fn an_instance_event_is_copied_into_the_frame_as_serialized() {
        use crate::wire::{Event, InstanceEventJson, InstanceWire};
        let json = r#"{"type":"codex_notification","method":"m","params":{"d":"é\n"}}"#;
        let event = Event::Instance(InstanceWire {
            instance_id: "i1".into(),
            seq: 3,
            gap: true,
            event: InstanceEventJson {
                kind: "codex_notification",
                json: bytes::Bytes::copy_from_slice(json.as_bytes()),
            },
        });
        let head = Head::push("1", "2", "t");
        let tree = text_of(head, &event, 0);
        let direct = event_text(head, event);
        assert_eq!(direct, tree);
        assert_eq!(
            direct,
            r#"["1","2","t","event",{"instanceId":"i1","seq":3,"gap":true,"type":"codex_notification","method":"m","params":{"d":"é\n"}}]"#
        );
    }

    #[test]
    fn refs_count_up_from_one_as_decimal_strings() {
        let mut refs = RefCounter::default();
        assert_eq!(refs.next_ref(), "1");
        assert_eq!(refs.next_ref(), "2");
        assert_eq!(refs.next_ref(), "3");
    }
}
