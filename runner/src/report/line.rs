//! One state line: a sentence for a person, and as JSON the same sentence
//! with its facts as fields.

use std::io::Write;

use serde_json::{Map, Value};

use crate::logging::LogFormat;

/// A state line. As text, `message`; as JSON,
/// `{"ts","level","event",...fields,"message"}`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Line {
    pub(crate) event: &'static str,
    pub(crate) level: &'static str,
    pub(crate) message: String,
    pub(crate) fields: Map<String, Value>,
}

impl Line {
    pub(crate) fn new(event: &'static str, message: impl Into<String>) -> Self {
        Line {
            event,
            level: "info",
            message: message.into(),
            fields: Map::new(),
        }
    }

    pub(crate) fn level(mut self, level: &'static str) -> Self {
        self.level = level;
        self
    }

    pub(crate) fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// The line as written in `format`, without the newline.
    pub(crate) fn render(&self, format: LogFormat) -> String {
        match format {
            // The sentence may quote a command line or a cwd: a person's
            // terminal reads it (JSON escapes them itself).
            LogFormat::Text if self.level == "error" => {
                format!("error: {}", super::escape(&self.message))
            }
            LogFormat::Text => super::escape(&self.message).into_owned(),
            LogFormat::Json => {
                let mut object = Map::new();
                object.insert("ts".into(), crate::logging::timestamp().into());
                object.insert("level".into(), self.level.into());
                object.insert("event".into(), self.event.into());
                for (name, value) in &self.fields {
                    object.insert(name.clone(), value.clone());
                }
                object.insert("message".into(), self.message.clone().into());
                Value::Object(object).to_string()
            }
        }
    }

    /// Writes the line to stderr, whole (one `write` per line, so lines of
    /// tasks and logs do not interleave).
    pub(crate) fn write(&self, format: LogFormat) {
        let mut text = self.render(format);
        text.push('\n');
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_sentence_and_json_carries_the_facts() {
        let line =
            Line::new("port_pending", "port 5173 (vite): waiting for approval").field("port", 5173);
        assert_eq!(
            line.render(LogFormat::Text),
            "port 5173 (vite): waiting for approval"
        );
        let json: Value = serde_json::from_str(&line.render(LogFormat::Json)).unwrap();
        assert_eq!(json["event"], "port_pending");
        assert_eq!(json["port"], 5173);
        assert_eq!(json["level"], "info");
        assert!(json["ts"].as_str().unwrap().ends_with('Z'));
        let title = Line::new("port_pending", "port 1 (\x1b]0;owned\x07): waiting");
        assert_eq!(
            title.render(LogFormat::Text),
            "port 1 (\\x1b]0;owned\\x07): waiting"
        );
        assert_eq!(
            Line::new("error", "boom")
                .level("error")
                .render(LogFormat::Text),
            "error: boom"
        );
    }
}
