//! A Codex notification's `params` as the app-server wrote them.
//!
//! A notification goes to Kandan as it came: its `params` are kept as the
//! line's JSON text and written into the frame verbatim, never built into
//! a `serde_json::Value` tree and serialized again (building, writing and
//! freeing that tree was most of the runner's work per notification). The
//! few notifications whose fields the runner reads (a turn's start and
//! end, a file change, a resolved request, a delta to batch) are parsed
//! where they are read; the `ids` of every one are read from the text in
//! one pass ([`Ids::of`]).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::instance::Ids;

/// The raw JSON of a notification's `params` (`null` when it had none).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Params(Box<RawValue>);

impl Params {
    /// `params` read from a line (`None`: the line had none).
    pub(crate) fn from_raw(raw: Option<Box<RawValue>>) -> Params {
        Params(raw.unwrap_or_else(|| RawValue::from_string("null".into()).expect("json")))
    }

    /// `params` made by the runner (joined deltas, its own notifications).
    pub(crate) fn of(value: &Value) -> Params {
        Params(serde_json::value::to_raw_value(value).expect("a Value is always JSON"))
    }

    /// The parsed value, for the notifications whose fields are read.
    pub fn value(&self) -> Value {
        // Always JSON (it was read or written as such); `null` otherwise
        // rather than a panic in the instance's task.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// The JSON text.
    pub(crate) fn text(&self) -> &str {
        self.0.get()
    }
}

/// Equal when their JSON values are (key order and spacing aside).
impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.text() == other.text() || self.value() == other.value()
    }
}

impl Ids {
    /// The ids of [`Ids::find`], read from the text in one pass: the same
    /// answer for every JSON value, a repeated key's last value included.
    pub(crate) fn of(params: &Params) -> Ids {
        let mut de = serde_json::Deserializer::from_str(params.text());
        match de.deserialize_any(Found::default()) {
            Ok(found) => found.ids(),
            // Not reached (the text is valid JSON); the tree's answer then.
            Err(_) => Ids::find(&params.value()),
        }
    }
}

/// The members of a params object that hold ids (read without copying
/// the key).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Key {
    ThreadId,
    TurnId,
    ItemId,
    ProcessId,
    RequestId,
    Thread,
    Turn,
    Item,
    #[serde(other)]
    Other,
}

/// The member of `params.turn` (and the like) that is its id.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum NestedKey {
    Id,
    #[serde(other)]
    Other,
}

/// The id-bearing members of a params object, as read.
#[derive(Default)]
struct Found {
    thread_id: Option<String>,
    turn_id: Option<String>,
    item_id: Option<String>,
    process_id: Option<String>,
    request_id: Option<String>,
    thread: Option<String>,
    turn: Option<String>,
    item: Option<String>,
}

impl Found {
    fn ids(self) -> Ids {
        Ids {
            thread_id: self.thread_id.or(self.thread),
            turn_id: self.turn_id.or(self.turn),
            item_id: self.item_id.or(self.item),
            process_id: self.process_id,
            request_id: self.request_id,
        }
    }
}

impl<'de> Visitor<'de> for Found {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Found, A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            // A repeated key: its last value counts, as in a `Value`.
            let slot = match key {
                Key::ThreadId => &mut self.thread_id,
                Key::TurnId => &mut self.turn_id,
                Key::ItemId => &mut self.item_id,
                Key::ProcessId => &mut self.process_id,
                Key::RequestId => &mut self.request_id,
                Key::Thread => &mut self.thread,
                Key::Turn => &mut self.turn,
                Key::Item => &mut self.item,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = match key {
                Key::Thread | Key::Turn | Key::Item => map.next_value::<Nested>()?.0,
                _ => map.next_value::<IdText>()?.0,
            };
        }
        Ok(self)
    }

    // Params that are not an object have no ids.
    other_values_are!('de, Found::default(); bool, i64, u64, f64, str, unit, seq);
}

/// An id: a string, or a number as its JSON text; nothing for any other
/// value (as [`Ids::find`] reads it).
struct IdText(Option<String>);

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<IdText, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<IdText, E> {
                Ok(IdText(Some(text.to_owned())))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<IdText, E> {
                Ok(IdText(Some(n.to_string())))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<IdText, E> {
                Ok(IdText(Some(n.to_string())))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<IdText, E> {
                Ok(IdText(
                    serde_json::Number::from_f64(n).map(|n| n.to_string()),
                ))
            }
            other_values_are!('de, IdText(None); bool, unit, seq, map);
        }
        de.deserialize_any(V)
    }
}

/// The `id` of an object (`params.turn` and the like), or nothing.
struct Nested(Option<String>);

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Nested, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Nested;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Nested, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<NestedKey>()? {
                    match key {
                        NestedKey::Id => id = map.next_value::<IdText>()?.0,
                        NestedKey::Other => map.next_value::<IgnoredAny>().map(drop)?,
                    }
                }
                Ok(Nested(id))
            }
            other_values_are!('de, Nested(None); bool, i64, u64, f64, str, unit, seq);
        }
        de.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_from_the_text_are_the_ids_of_the_tree() {
        for text in [
            r#"{"threadId":"t","turnId":"u","itemId":"i","requestId":0,"processId":7}"#,
            r#"{"threadId":"t","turn":{"id":"u","items":[{"id":"x"}]},"delta":"hi"}"#,
            r#"{"thread":{"id":"t"},"item":{"id":3,"type":"fileChange"},"itemId":null}"#,
            r#"{"threadId":"a","threadId":"b","turn":{"id":"1","id":"2"}}"#,
            r#"{"threadId":1.5,"turnId":[1],"itemId":{"id":"no"},"thread":"s","turn":1}"#,
            r#"{"threadId":"\u0074\"","turn":{"id":true},"item":[{"id":"z"}]}"#,
            r#"[{"threadId":"t"}]"#,
            r#""text""#,
            "null",
            "12",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let raw = RawValue::from_string(text.to_owned()).unwrap();
            let params = Params::from_raw(Some(raw));
            assert_eq!(Ids::of(&params), Ids::find(&value), "{text}");
        }
    }

    #[test]
    fn params_are_written_as_they_came_and_compare_as_json() {
        let text = r#"{"b":1, "a":"\u00e9"}"#;
        let params = Params::from_raw(Some(RawValue::from_string(text.into()).unwrap()));
        assert_eq!(serde_json::to_string(&params).unwrap(), text);
        assert_eq!(params, Params::of(&json!({"a": "é", "b": 1})));
        assert_eq!(Params::from_raw(None).value(), Value::Null);
    }
}
