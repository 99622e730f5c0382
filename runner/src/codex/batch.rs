//! Batching of streamed deltas (`--stream-flush-ms`, PROTOCOL.md section 7).
//!
//! A delta notification (method ending in `Delta` or `/delta`, with a string
//! `params.delta`) opens a batch; the deltas that follow within the window,
//! of the same method and with the same other params (same item), join it
//! and their `delta` texts are concatenated. Anything else flushes the batch
//! first, so order and the concatenated text are exactly the app-server's.
//! A batch holds the budget charges of its deltas (PROTOCOL.md section 5).

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::control::budget::Charge;
use crate::wire::Params;

/// A notification as it goes out: method, params, and the budget bytes of
/// the lines it came from.
pub(crate) type Note = (String, Params, Charge);

#[derive(Debug)]
pub(crate) struct Batcher {
    window: Duration,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    method: String,
    /// The params of the first delta, without `delta`.
    rest: Map<String, Value>,
    text: String,
    charge: Charge,
    deadline: Instant,
}

impl Batcher {
    /// A zero window turns batching off.
    pub(crate) fn new(window: Duration) -> Self {
        Batcher { window, open: None }
    }

    /// Takes one notification; returns what is ready to go out, in order.
    pub(crate) fn push(
        &mut self,
        method: String,
        params: Params,
        charge: Charge,
        now: Instant,
    ) -> Vec<Note> {
        let mut out = Vec::new();
        // Only a delta to batch is parsed; the rest go out as they came.
        let delta = if self.window.is_zero() || !is_delta_method(&method) {
            None
        } else {
            split_delta(params.value())
        };
        let Some((rest, text)) = delta else {
            out.extend(self.flush());
            out.push((method, params, charge));
            return out;
        };
        if let Some(open) = &mut self.open
            && open.method == method
            && open.rest == rest
            && now < open.deadline
        {
            open.text.push_str(&text);
            open.charge.merge(charge);
            return out;
        }
        out.extend(self.flush());
        self.open = Some(Open {
            method,
            rest,
            text,
            charge,
            deadline: now + self.window,
        });
        out
    }

    /// When the open batch must go out.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|open| open.deadline)
    }

    /// The open batch as one notification.
    pub(crate) fn flush(&mut self) -> Option<Note> {
        let open = self.open.take()?;
        let mut params = open.rest;
        params.insert("delta".into(), Value::String(open.text));
        Some((open.method, Params::of(&Value::Object(params)), open.charge))
    }
}

fn is_delta_method(method: &str) -> bool {
    method.ends_with("Delta") || method.ends_with("/delta")
}

/// `(params without delta, delta)` when params is an object with a string
/// `delta`.
fn split_delta(params: Value) -> Option<(Map<String, Value>, String)> {
    let Value::Object(mut map) = params else {
        return None;
    };
    match map.remove("delta") {
        Some(Value::String(text)) => Some((map, text)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none() -> Charge {
        Charge::default()
    }

    fn delta(item: &str, text: &str) -> (String, Params) {
        (
            "item/agentMessage/delta".into(),
            params(json!({"threadId": "t", "turnId": "u", "itemId": item, "delta": text})),
        )
    }

    fn params(value: Value) -> Params {
        Params::of(&value)
    }

    fn text_of(notes: &[Note]) -> String {
        notes
            .iter()
            .filter_map(|(_, params, _)| params.value()["delta"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn joins_deltas_of_one_item_and_keeps_order() {
        let mut batcher = Batcher::new(Duration::from_millis(50));
        let now = Instant::now();
        let mut out = Vec::new();
        for text in ["He", "llo", " wor"] {
            let (m, p) = delta("a", text);
            out.extend(batcher.push(m, p, none(), now));
        }
        assert!(out.is_empty());
        // Another item's delta closes the first batch.
        let (m, p) = delta("b", "X");
        out.extend(batcher.push(m, p, none(), now));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].1.value(),
            json!({"threadId": "t", "turnId": "u", "itemId": "a", "delta": "Hello wor"})
        );
        // A plain notification flushes first and keeps its place.
        out.extend(batcher.push(
            "item/completed".into(),
            params(json!({"itemId": "b"})),
            none(),
            now,
        ));
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].1.value()["delta"], "X");
        assert_eq!(out[2].0, "item/completed");
        assert!(batcher.flush().is_none());
    }

    #[test]
    fn the_window_closes_a_batch() {
        let mut batcher = Batcher::new(Duration::from_millis(50));
        let start = Instant::now();
        let (m, p) = delta("a", "1");
        assert!(batcher.push(m, p, none(), start).is_empty());
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(50)));
        let (m, p) = delta("a", "2");
        let out = batcher.push(m, p, none(), start + Duration::from_millis(60));
        assert_eq!(text_of(&out), "1");
        assert_eq!(text_of(&[batcher.flush().unwrap()]), "2");
    }

    #[test]
    fn zero_window_and_odd_deltas_pass_through() {
        let mut off = Batcher::new(Duration::ZERO);
        let now = Instant::now();
        for text in ["a", "b"] {
            let (m, p) = delta("a", text);
            assert_eq!(off.push(m, p, none(), now).len(), 1);
        }
        let mut on = Batcher::new(Duration::from_millis(50));
        // A non-string delta is not batched, and not changed.
        let out = on.push("x/delta".into(), params(json!({"delta": 5})), none(), now);
        assert_eq!(
            out,
            vec![("x/delta".to_string(), params(json!({"delta": 5})), none())]
        );
        let out = on.push("x/delta".into(), params(json!([1])), none(), now);
        assert_eq!(out.len(), 1);
        // Same item, other fields differ (another summary part): two batches.
        assert!(
            on.push(
                "r/summaryTextDelta".into(),
                params(json!({"itemId": "a", "i": 0, "delta": "p"})),
                none(),
                now
            )
            .is_empty()
        );
        let out = on.push(
            "r/summaryTextDelta".into(),
            params(json!({"itemId": "a", "i": 1, "delta": "q"})),
            none(),
            now,
        );
        assert_eq!(text_of(&out), "p");
    }

    #[test]
    fn concatenation_is_exact_for_any_split() {
        let text = "héllo, 世界! \n\t\"quoted\" ";
        let chars: Vec<char> = text.chars().collect();
        for size in 1..5 {
            let mut batcher = Batcher::new(Duration::from_millis(50));
            let now = Instant::now();
            let mut out = Vec::new();
            for chunk in chars.chunks(size) {
                let (m, p) = delta("a", &chunk.iter().collect::<String>());
                out.extend(batcher.push(m, p, none(), now));
            }
            out.extend(batcher.flush());
            assert_eq!(out.len(), 1);
            assert_eq!(text_of(&out), text);
        }
    }

    #[tokio::test]
    async fn a_batch_holds_the_charges_of_its_deltas_until_it_goes() {
        let budget = crate::control::budget::Budget::new(1000);
        let mut batcher = Batcher::new(Duration::from_millis(50));
        let now = Instant::now();
        for text in ["a", "b", "c"] {
            let (m, p) = delta("i", text);
            assert!(batcher.push(m, p, budget.charge(100).await, now).is_empty());
        }
        assert_eq!(budget.available(), 700);
        let (_, params, charge) = batcher.flush().unwrap();
        assert_eq!(
            (params.value()["delta"].as_str(), charge.bytes()),
            (Some("abc"), 300)
        );
        drop(charge);
        assert_eq!(budget.available(), 1000);
    }
}
