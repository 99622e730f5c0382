//! Request ids: 128 random bits from the OS, in hex. Kandan resolves
//! requests by id, so they must not be guessable.

use std::borrow::Borrow;
use std::fmt;

use super::ApprovalError;

/// Names one `port_forward_request`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PortRequestId(String);

impl PortRequestId {
    pub(crate) fn generate() -> Result<Self, ApprovalError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|source| ApprovalError::Random { source })?;
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(PortRequestId(hex))
    }
}

impl fmt::Display for PortRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Lets maps keyed by `PortRequestId` be searched with the `&str` of a control.
impl Borrow<str> for PortRequestId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let ids: HashSet<PortRequestId> = (0..1000)
            .map(|_| PortRequestId::generate().unwrap())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.to_string().len(), 32);
            assert!(id.to_string().bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
