//! The forwarding controls (`forward_http_request`, `forward_http_cancel`,
//! `forward_websocket_send`, `forward_websocket_close`), read in the same
//! pass as the frame that carries them.
//!
//! [`Control::parse`] needs the payload's text: it finds the `type`, then
//! reads the fields of that type, and reads the ids leniently if that
//! fails. So the frame is read first with its payload as raw text, which
//! scans the payload once more. Kandan's JSON may put `type` after the
//! fields (sorted keys do), so the fields cannot wait for it: here every
//! field of the four controls is read at once, each with its own type's
//! reader, and the control is built from them.
//!
//! This read only ever answers what [`Control::parse`] would: a field has
//! the same reader as in its control, or a stricter one where its control
//! ignores it; every id the lenient read looks at is a field, so one
//! written twice fails both; an array is not an object. Anything this read
//! refuses (a broken control, another type, a field that only its own
//! control would ignore) goes the whole way through [`Control::parse`],
//! which gives the answer and the error; only speed differs.

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use super::controls::{
    Control, ControlType, ForwardHttpCancel, ForwardHttpRequest, ForwardWebsocketClose,
    ForwardWebsocketSend,
};
use super::fields::{Body, Headers, Method, Opcode, Port, Text, UrlPath};
use super::parse::{control_type, target};

/// A forwarding control, read from a JSON object.
#[derive(Debug)]
pub(crate) struct HotControl(pub(crate) Control);

/// Every field of the four controls. A field required by its control is
/// an `Option` here (absent or `null` is `None`, and the control then
/// goes the slow way, which names the problem); the others are declared
/// exactly as in their control.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    control_type: Text<'a>,
    request_id: Option<String>,
    socket_id: Option<String>,
    editor_id: Option<String>,
    /// Not used by these controls; declared so a repeated one is refused
    /// here as the lenient read refuses it.
    #[serde(rename = "instanceId")]
    _instance_id: Option<IgnoredAny>,
    port: Option<Port>,
    method: Option<Method>,
    path: Option<UrlPath>,
    query_string: Option<String>,
    #[serde(default)]
    headers: Headers,
    #[serde(default, rename = "bodyBase64", deserialize_with = "present")]
    body: Option<Body>,
    #[serde(default)]
    accept_streaming: bool,
    opcode: Option<Opcode>,
}

/// A field's own reader (`null` included), `Some` when the field is there.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl Fields<'_> {
    /// The control, if it is one of the four and has what it needs.
    fn into_control(self) -> Option<Control> {
        let Fields {
            control_type: Text(name),
            request_id,
            socket_id,
            editor_id,
            port,
            method,
            path,
            query_string,
            headers,
            body,
            accept_streaming,
            opcode,
            ..
        } = self;
        Some(match control_type(&name).ok()? {
            ControlType::ForwardHttpRequest => Control::ForwardHttpRequest(ForwardHttpRequest {
                request_id: request_id?,
                target: target(port, editor_id).ok()?,
                port: None,
                editor_id: None,
                method: method?,
                path: path?,
                query_string,
                headers,
                body: body.unwrap_or_default(),
                accept_streaming,
            }),
            ControlType::ForwardHttpCancel => Control::ForwardHttpCancel(ForwardHttpCancel {
                request_id: request_id?,
            }),
            ControlType::ForwardWebsocketSend => {
                Control::ForwardWebsocketSend(ForwardWebsocketSend {
                    socket_id: socket_id?,
                    opcode: opcode?,
                    body: body?,
                })
            }
            ControlType::ForwardWebsocketClose => {
                Control::ForwardWebsocketClose(ForwardWebsocketClose {
                    socket_id: socket_id?,
                })
            }
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for HotControl {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A map only: serde would read a struct from an array too, which
        // `Control::parse` refuses.
        deserializer.deserialize_map(HotVisitor)
    }
}

struct HotVisitor;

impl<'de> Visitor<'de> for HotVisitor {
    type Value = HotControl;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a forwarding control")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HotControl, A::Error> {
        let fields = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let control = fields.into_control();
        control
            .map(HotControl)
            .ok_or_else(|| de::Error::custom("not a well-formed forwarding control"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    /// What the one-pass read makes of `text`, beside `Control::parse`'s
    /// answer: the same control, or nothing where that is refused.
    fn both(text: &str) -> (Option<Control>, Result<Control, String>) {
        let hot = serde_json::from_str::<HotControl>(text)
            .ok()
            .map(|hot| hot.0);
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        let slow = Control::parse(&raw).map_err(|rejection| rejection.problem.to_string());
        (hot, slow)
    }

    #[test]
    fn well_formed_forwarding_controls_read_as_control_parse_reads_them() {
        let controls = [
            r#"{"type":"forward_http_request","requestId":"r1","port":5173,"method":"POST",
                "path":"/api","queryString":"a=1","headers":{"accept":["a","b"]},
                "bodyBase64":"aGk=","acceptStreaming":true,"instanceId":"i1"}"#,
            // Sorted keys, `type` last; an editor instead of a port.
            r#"{"bodyBase64":"","editorId":"e1","method":"GET","path":"/","requestId":"r2",
                "type":"forward_http_request"}"#,
            r#"{"type":"forward_http_request","requestId":"r3","port":1,"method":"GET",
                "path":"/","headers":[["x-a","1"],["x-a","2"]],"queryString":null}"#,
            r#"{"type":"forward_http_cancel","requestId":"r1"}"#,
            r#"{"type":"forward_websocket_send","socketId":"s1","opcode":"binary","bodyBase64":"AP8="}"#,
            r#"{"type":"forward_websocket_close","socketId":"s1","code":1000}"#,
            // An escaped key and an escaped type are the same key and type.
            r#"{"typ\u0065":"forward\u005fhttp_cancel","requestId":"r\"4"}"#,
        ];
        for text in controls {
            let (hot, slow) = both(text);
            let slow = slow.unwrap_or_else(|problem| panic!("{text}: {problem}"));
            assert_eq!(hot.as_ref(), Some(&slow), "{text}");
        }
    }

    #[test]
    fn anything_control_parse_refuses_is_refused_here_too() {
        let controls = [
            // Repeated `type` or ids, which the lenient read refuses.
            r#"{"type":"forward_http_cancel","requestId":"r1","type":"forward_http_cancel"}"#,
            r#"{"type":"forward_http_cancel","requestId":"r1","socketId":"a","socketId":"b"}"#,
            r#"{"type":"forward_http_cancel","requestId":"r1","instanceId":1,"instanceId":2}"#,
            r#"{"type":"forward_http_cancel","requestId":"r1","editorId":"a","editorId":"b"}"#,
            r#"{"type":"forward_http_cancel","requestId":"r1","requestI\u0064":"r2"}"#,
            // Not an object, no type, a type of another kind.
            r#"["forward_http_cancel","r1"]"#,
            r#"{"requestId":"r1"}"#,
            r#"{"type":7,"requestId":"r1"}"#,
            r#"{"type":"forward_http_nothing","requestId":"r1"}"#,
            // Missing, null or wrong fields.
            r#"{"type":"forward_http_request","requestId":"r1","port":1,"path":"/"}"#,
            r#"{"type":"forward_http_request","requestId":null,"port":1,"method":"GET","path":"/"}"#,
            r#"{"type":"forward_http_request","requestId":"r1","method":"GET","path":"/"}"#,
            r#"{"type":"forward_http_request","requestId":"r1","port":1,"editorId":"e","method":"GET","path":"/"}"#,
            r#"{"type":"forward_http_request","requestId":"r1","port":0,"method":"GET","path":"/"}"#,
            r#"{"type":"forward_http_request","requestId":"r1","port":1,"method":"GET","path":"x"}"#,
            r#"{"type":"forward_http_request","requestId":"r1","port":1,"method":"GET","path":"/","headers":null}"#,
            r#"{"type":"forward_http_request","requestId":"r1","port":1,"method":"GET","path":"/","bodyBase64":null}"#,
            r#"{"type":"forward_http_request","requestId":"r1","port":1,"method":"GET","path":"/","bodyBase64":"!!"}"#,
            r#"{"type":"forward_websocket_send","socketId":"s1","opcode":"binary"}"#,
            r#"{"type":"forward_websocket_send","socketId":"s1","opcode":"nope","bodyBase64":""}"#,
            r#"{"type":"forward_websocket_close"}"#,
        ];
        for text in controls {
            let (hot, slow) = both(text);
            assert!(slow.is_err(), "Control::parse took {text}");
            assert!(hot.is_none(), "the one-pass read took {text}: {hot:?}");
        }
    }

    #[test]
    fn what_only_its_own_control_ignores_goes_the_slow_way_and_is_taken_there() {
        // A field of another forwarding control, with a value its reader
        // refuses: ignored by this control, so taken, but by Control::parse.
        let controls = [
            r#"{"type":"forward_http_cancel","requestId":"r1","opcode":"nope"}"#,
            r#"{"type":"forward_websocket_close","socketId":"s1","port":"x"}"#,
            r#"{"type":"forward_websocket_send","socketId":"s1","opcode":"text","bodyBase64":"","method":"no way"}"#,
            // Another control's type: read by Control::parse alone.
            r#"{"type":"stop_instance","instanceId":"i1"}"#,
        ];
        for text in controls {
            let (hot, slow) = both(text);
            assert!(slow.is_ok(), "{text}: {slow:?}");
            assert!(hot.is_none(), "{text}");
        }
    }
}
