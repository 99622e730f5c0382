//! An inclusive range of ports, as `[[ports]]` `port` and `--ignore-port`
//! write it. Here, with the config that names ports, so that `pipeline`
//! (which matches them) imports `config` and not the other way round.

use std::fmt;
use std::str::FromStr;

/// An inclusive range of ports (`9229` or `6000-6100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortRange {
    pub(crate) start: u16,
    pub(crate) end: u16,
}

impl PortRange {
    pub(crate) fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    pub(crate) fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Why a port spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PortRangeError {
    /// The spec was empty.
    #[error("empty port spec: expected a port like 9229 or a range like 6000-6100")]
    EmptyPort,
    /// A part of the spec is not a number from 1 to 65535.
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    InvalidPort(String),
    /// A range whose start is above its end.
    #[error("invalid port range {start}-{end}: the start is above the end")]
    ReversedRange { start: u16, end: u16 },
}

fn parse_port(text: &str) -> Result<u16, PortRangeError> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(PortRangeError::InvalidPort(text.trim().to_string())),
        Ok(port) => Ok(port),
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    /// Parses `9229` or `6000-6100` (for `--ignore-port`).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(PortRangeError::EmptyPort);
        }
        match spec.split_once('-') {
            None => Ok(PortRange::single(parse_port(spec)?)),
            Some((start, end)) => {
                let (start, end) = (parse_port(start)?, parse_port(end)?);
                if start > end {
                    return Err(PortRangeError::ReversedRange { start, end });
                }
                Ok(PortRange { start, end })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("9229".parse(), Ok(PortRange::single(9229)));
        assert_eq!(
            " 6000-6100 ".parse(),
            Ok(PortRange {
                start: 6000,
                end: 6100
            })
        );
        assert_eq!("80-80".parse::<PortRange>().unwrap().to_string(), "80");
        assert_eq!(
            "1-65535".parse::<PortRange>().unwrap().to_string(),
            "1-65535"
        );
    }

    #[test]
    fn refuses_bad_port_specs() {
        assert_eq!("".parse::<PortRange>(), Err(PortRangeError::EmptyPort));
        for (spec, part) in [
            ("0", "0"),
            ("65536", "65536"),
            ("http", "http"),
            ("6000-", ""),
            ("-5", ""),
            ("1-2-3", "2-3"),
        ] {
            assert_eq!(
                spec.parse::<PortRange>(),
                Err(PortRangeError::InvalidPort(part.into())),
                "{spec}"
            );
        }
        assert_eq!(
            "6100-6000".parse::<PortRange>(),
            Err(PortRangeError::ReversedRange {
                start: 6100,
                end: 6000
            })
        );
        let message = "6100-6000".parse::<PortRange>().unwrap_err().to_string();
        assert!(message.contains("6100-6000"), "{message}");
    }
}
