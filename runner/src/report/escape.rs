//! Text for a terminal: control characters shown escaped, so a command line
//! or a cwd a process chose cannot move the cursor, clear the screen or set
//! the window title when a person reads it (PROTOCOL.md section 5).

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1) written as `\xNN` or
/// `\u{NN}`. Unchanged (borrowed) when there is nothing to escape.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape("node vite --port 5173"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b]0;owned\x07b"), "a\\x1b]0;owned\\x07b");
        assert_eq!(escape("\x1b[2J\r\n\t\x7f"), "\\x1b[2J\\r\\n\\t\\x7f");
        // C1 CSI (U+009B) is a control sequence introducer too.
        assert_eq!(escape("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(escape("é日本"), "é日本");
    }
}
