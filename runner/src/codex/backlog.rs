//! What the app-server wrote before its thread opened (before the answer
//! to `thread/start` or `thread/resume`), kept to be handled after
//! `instance_started` (PROTOCOL.md section 7).
//!
//! None of it can go to Kandan yet, so it holds no budget: charges held
//! here would stop the reader before the answer, which comes after them.
//! Instead the first [`MEMORY_BYTES`] stay in memory and the rest go to an
//! unlinked temporary file, at most [`SPILL_LIMIT`]; past that the instance
//! fails. Once the thread is open the file is read back one message at a
//! time, each charged to the budget again; what the app-server writes
//! meanwhile joins the file behind it, so the order holds and the reader is
//! never stopped by messages waiting behind the file. Memory does not grow
//! with what the app-server writes: the file's reader holds one line.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::rpc::Incoming;
use super::state::State;
use crate::control::budget::Charge;

/// Kept in memory (by the bytes charged for their lines).
pub(crate) const MEMORY_BYTES: usize = 1 << 20;
/// Written to the temporary file at most.
pub(crate) const SPILL_LIMIT: u64 = 1 << 30;
/// Read from the file at a time.
const READ_CHUNK: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BacklogError {
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
pub(crate) struct Backlog {
    memory: Vec<Incoming>,
    memory_bytes: usize,
    spill: Option<Spill>,
}

/// The file, written at its end and read from `read` on.
struct Spill {
    file: File,
    written: u64,
    read: u64,
    /// Read from the file, not yet taken.
    buffer: Vec<u8>,
}

impl Backlog {
    /// Whether messages wait in the file: later ones must join them.
    pub(crate) fn spilling(&self) -> bool {
        self.spill.is_some()
    }

    /// Keeps `message`, whose line took `bytes`.
    pub(crate) fn push(&mut self, message: Incoming, bytes: usize) -> Result<(), BacklogError> {
        if self.spill.is_none() && self.memory_bytes + bytes <= MEMORY_BYTES {
            self.memory_bytes += bytes;
            self.memory.push(message);
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(Spill {
                file: tempfile::tempfile()?,
                written: 0,
                read: 0,
                buffer: Vec::new(),
            }),
        };
        let mut line = serde_json::to_vec(&message)?;
        line.push(b'\n');
        if spill.written + line.len() as u64 > SPILL_LIMIT {
            return Err(BacklogError::TooLarge);
        }
        spill.file.write_all_at(&line, spill.written)?;
        spill.written += line.len() as u64;
        Ok(())
    }

    /// The messages kept in memory, to handle as the thread opens.
    pub(crate) fn take_memory(&mut self) -> Vec<Incoming> {
        self.memory_bytes = 0;
        std::mem::take(&mut self.memory)
    }

    /// The length of the next message in the file, read in; `None` when
    /// the file holds nothing more (it is then closed).
    pub(crate) fn next_len(&mut self) -> Result<Option<usize>, BacklogError> {
        let Some(spill) = &mut self.spill else {
            return Ok(None);
        };
        loop {
            if let Some(at) = spill.buffer.iter().position(|&b| b == b'\n') {
                return Ok(Some(at + 1));
            }
            if spill.read == spill.written {
                // Only whole lines are written: nothing is left.
                self.spill = None;
                return Ok(None);
            }
            let want = (spill.written - spill.read).min(READ_CHUNK) as usize;
            let start = spill.buffer.len();
            spill.buffer.resize(start + want, 0);
            spill
                .file
                .read_exact_at(&mut spill.buffer[start..], spill.read)?;
            spill.read += want as u64;
        }
    }

    /// The next message in the file.
    pub(crate) fn pop(&mut self) -> Result<Option<Incoming>, BacklogError> {
        let Some(len) = self.next_len()? else {
            return Ok(None);
        };
        let Some(spill) = &mut self.spill else {
            return Ok(None);
        };
        let message = serde_json::from_slice(&spill.buffer[..len])?;
        spill.buffer.drain(..len);
        if spill.buffer.capacity() > 4 * READ_CHUNK as usize {
            spill.buffer.shrink_to(READ_CHUNK as usize);
        }
        if spill.buffer.is_empty() && spill.read == spill.written {
            self.spill = None;
        }
        Ok(Some(message))
    }
}

/// How the instance drains its backlog once its thread is open.
impl State {
    /// What came before the thread opened and was kept in memory; the
    /// rest follows from the run loop ([`State::backlog_next`]).
    pub(super) async fn handle_backlog(&mut self) {
        for message in self.backlog.take_memory() {
            self.on_backlogged(message, Charge::default()).await;
        }
    }

    /// The budget bytes the next message waiting in the backlog's file
    /// needs, once the thread is open and while one waits.
    pub(super) fn backlog_next(&mut self) -> Option<usize> {
        if !self.started {
            return None;
        }
        self.backlog.next_len().unwrap_or_else(|err| {
            self.failure = Some(crate::error_chain(&err));
            None
        })
    }

    /// Handles the next message of the backlog's file, charged `charge`.
    pub(super) async fn on_backlog_charge(&mut self, charge: Charge) {
        match self.backlog.pop() {
            Ok(Some(message)) => self.on_backlogged(message, charge).await,
            Ok(None) => {}
            Err(err) => self.failure = Some(crate::error_chain(&err)),
        }
    }

    async fn on_backlogged(&mut self, message: Incoming, charge: Charge) {
        self.charge = charge;
        match message {
            Incoming::Notification { method, params } => self.on_notification(method, params).await,
            Incoming::Request { id, method, params } => {
                self.on_server_request(id, method, params).await
            }
            _ => {}
        }
        self.charge = Charge::default();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn note(i: usize, text: &str) -> Incoming {
        Incoming::Notification {
            method: format!("n/{i}"),
            params: crate::wire::Params::of(&json!({ "t": text })),
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
        assert!(backlog.spilling());
        let mut methods: Vec<String> = backlog.take_memory().iter().map(method).collect();
        assert_eq!(methods.len(), 3, "1 MiB in memory");
        // Read back while more joins the file behind.
        for i in 10..13 {
            let message = backlog.pop().unwrap().expect("spilled");
            if let Incoming::Notification { params, .. } = &message {
                assert_eq!(params.value()["t"].as_str().unwrap().len(), big.len());
            }
            methods.push(method(&message));
            let request = Incoming::Request {
                id: super::super::rpc::RequestId::Int(i as i64),
                method: format!("n/{i}"),
                params: json!({ "t": "r" }),
            };
            backlog.push(request, 10).unwrap();
        }
        while let Some(message) = backlog.pop().unwrap() {
            methods.push(method(&message));
        }
        let expected: Vec<String> = (0..13).map(|i| format!("n/{i}")).collect();
        assert_eq!(methods, expected);
        assert!(!backlog.spilling(), "drained: the file is gone");
        assert_eq!(backlog.next_len().unwrap(), None);
    }

    #[test]
    fn past_the_spill_limit_the_backlog_refuses() {
        let mut backlog = Backlog {
            spill: Some(Spill {
                file: tempfile::tempfile().unwrap(),
                written: SPILL_LIMIT - 10,
                read: SPILL_LIMIT - 10,
                buffer: Vec::new(),
            }),
            ..Backlog::default()
        };
        let err = backlog.push(note(0, "too much"), 100).unwrap_err();
        assert!(matches!(err, BacklogError::TooLarge), "{err}");
    }
}
