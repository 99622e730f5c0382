//! Long strings of recorded events replaced by a digest
//! ([`super::SimConfig::digest_strings_over`]), so a test can check a
//! gigabyte of events without the simulator keeping it.

use serde_json::Value;

/// FNV-1a, 64 bits: enough to tell a changed or truncated string.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a string longer than the limit becomes: `digest:<len>:<fnv1a64>`.
pub fn digest_of(text: &str) -> String {
    format!("digest:{}:{:016x}", text.len(), fnv1a64(text.as_bytes()))
}

/// Replaces every string in `value` longer than `limit` bytes by its digest.
pub(super) fn digest_long_strings(value: &mut Value, limit: usize) {
    match value {
        Value::String(text) if text.len() > limit => *text = digest_of(text),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| digest_long_strings(item, limit)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| digest_long_strings(item, limit)),
        _ => {}
    }
}
