//! What the app-server wrote before its thread opened (before the answer
//! to `thread/start` or `thread/resume`), kept to be handled after
//! `instance_started` (PROTOCOL.md section 7).
//!
//! None of it can go to Kandan yet, so it holds no budget: charges held
//! here would stop the reader before the answer, which comes after them.
//! Instead the first [`MEMORY_BYTES`] stay in memory and the rest go to an
//! unlinked temporary file, at most [`SPILL_LIMIT`]; past that the instance
//! fails. Memory does not grow with what the app-server writes.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};

use super::rpc::Incoming;

/// Kept in memory (by the bytes charged for their lines).
pub const MEMORY_BYTES: usize = 1 << 20;
/// Written to the temporary file at most.
pub const SPILL_LIMIT: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    #[error(
        "the app-server wrote over {} MiB before its thread opened",
        SPILL_LIMIT >> 20
    )]
    TooLarge,
    #[error("cannot keep what the app-server wrote before its thread opened")]
    Io(#[from] std::io::Error),
    #[error("cannot read back what the app-server wrote before its thread opened")]
    Json(#[from] serde_json::Error),
}

/// Messages in arrival order: those in memory come first.
#[derive(Default)]
pub struct Backlog {
    memory: Vec<Incoming>,
    memory_bytes: usize,
    spill: Option<BufWriter<File>>,
    spilled: u64,
}

impl Backlog {
    /// Keeps `message`, whose line took `bytes`.
    pub fn push(&mut self, message: Incoming, bytes: usize) -> Result<(), BacklogError> {
        if self.spill.is_none() && self.memory_bytes + bytes <= MEMORY_BYTES {
            self.memory_bytes += bytes;
            self.memory.push(message);
            return Ok(());
        }
        let file = match &mut self.spill {
            Some(file) => file,
            None => self.spill.insert(BufWriter::new(tempfile::tempfile()?)),
        };
        let mut line = serde_json::to_vec(&message)?;
        line.push(b'\n');
        self.spilled += line.len() as u64;
        if self.spilled > SPILL_LIMIT {
            return Err(BacklogError::TooLarge);
        }
        file.write_all(&line)?;
        Ok(())
    }

    /// Everything kept: the messages in memory, then a reader of the rest.
    pub fn take(&mut self) -> Result<(Vec<Incoming>, Option<Spilled>), BacklogError> {
        let memory = std::mem::take(&mut self.memory);
        self.memory_bytes = 0;
        self.spilled = 0;
        let Some(writer) = self.spill.take() else {
            return Ok((memory, None));
        };
        let mut file = writer.into_inner().map_err(|err| err.into_error())?;
        file.rewind()?;
        Ok((memory, Some(Spilled(BufReader::new(file)))))
    }
}

/// The spilled messages, read back one at a time.
pub struct Spilled(BufReader<File>);

impl Spilled {
    /// The next message and the length of its line; `None` at the end.
    pub fn next_message(&mut self) -> Result<Option<(Incoming, usize)>, BacklogError> {
        let mut line = Vec::new();
        if self.0.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&line)?;
        Ok(Some((message, line.len())))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn note(i: usize, text: &str) -> Incoming {
        Incoming::Notification {
            method: format!("n/{i}"),
            params: json!({ "t": text }),
        }
    }

    fn method(message: &Incoming) -> String {
        match message {
            Incoming::Notification { method, .. } | Incoming::Request { method, .. } => {
                method.clone()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn past_the_memory_part_messages_go_to_the_file_and_come_back_in_order() {
        let big = "x".repeat(300_000);
        let mut backlog = Backlog::default();
        for i in 0..10 {
            backlog.push(note(i, &big), big.len()).unwrap();
        }
        assert_eq!(backlog.memory.len(), 3, "1 MiB in memory");
        let request = Incoming::Request {
            id: super::super::rpc::RequestId::Int(7),
            method: "n/10".into(),
            params: json!({ "t": "r" }),
        };
        backlog.push(request, 10).unwrap();
        let (memory, spilled) = backlog.take().unwrap();
        let mut methods: Vec<String> = memory.iter().map(method).collect();
        let mut spilled = spilled.expect("spilled");
        while let Some((message, len)) = spilled.next_message().unwrap() {
            assert!(len > 0);
            if let Incoming::Notification { params, .. } = &message {
                assert_eq!(params["t"].as_str().unwrap().len(), big.len());
            }
            methods.push(method(&message));
        }
        let expected: Vec<String> = (0..=10).map(|i| format!("n/{i}")).collect();
        assert_eq!(methods, expected);
        assert!(backlog.take().unwrap().1.is_none(), "taken once");
    }

    #[test]
    fn past_the_spill_limit_the_backlog_refuses() {
        let mut backlog = Backlog {
            spilled: SPILL_LIMIT - 10,
            spill: Some(BufWriter::new(tempfile::tempfile().unwrap())),
            ..Backlog::default()
        };
        let err = backlog.push(note(0, "too much"), 100).unwrap_err();
        assert!(matches!(err, BacklogError::TooLarge), "{err}");
    }
}
