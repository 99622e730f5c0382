//! Per-port attributes (`[[ports]]` entries, as VS Code's `portsAttributes`):
//! which listeners they apply to, and what they say about them.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::PortRange;
use crate::detect::process_info::ProcessInfo;

/// How a forwarded port is spoken to (`protocol`; the forwarder's
/// setting per port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    /// Plain HTTP, never probed.
    Http,
    /// TLS from the first connection.
    Https,
    /// Plain HTTP until the server resets it or answers with a TLS record,
    /// then TLS if a probe succeeds.
    #[default]
    Auto,
}

/// What happens when a matching listener is detected (`on_detect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnDetect {
    /// Kandan is asked (`port_forward_request`): the default.
    #[default]
    Ask,
    /// Shown by `watch` and `status`, never requested, so never forwarded.
    Silent,
    /// Hidden everywhere: as if it did not listen.
    Ignore,
}

/// What the matching entry says about a listener; the defaults when none
/// matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct PortAttributes {
    /// Replaces the label made from the command line.
    pub(crate) label: Option<String>,
    pub(crate) protocol: Protocol,
    pub(crate) on_detect: OnDetect,
}

/// A glob over the full command line (`*` and `?` cross `/`, so `*vite*`
/// matches `node /x/node_modules/.bin/vite`).
#[derive(Clone, Debug)]
pub(crate) struct CommandGlob(glob::Pattern);

impl CommandGlob {
    pub(crate) fn matches(&self, command: &str) -> bool {
        const OPTIONS: glob::MatchOptions = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.0.matches_with(command, OPTIONS)
    }
}

impl<'de> Deserialize<'de> for CommandGlob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(de::Error::custom("empty command pattern"));
        }
        glob::Pattern::new(&text)
            .map(CommandGlob)
            .map_err(|err| de::Error::custom(format!("invalid pattern {text:?}: {err}")))
    }
}

/// `port = 9229`, `port = "9229"` or `port = "9229-9230"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortSpec(pub PortRange);

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Spec;
        impl Visitor<'_> for Spec {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (\"N\") or a range (\"N-M\")")
            }
            fn visit_i64<E: de::Error>(self, port: i64) -> Result<PortSpec, E> {
                self.visit_str(&port.to_string())
            }
            fn visit_u64<E: de::Error>(self, port: u64) -> Result<PortSpec, E> {
                self.visit_str(&port.to_string())
            }
            fn visit_str<E: de::Error>(self, spec: &str) -> Result<PortSpec, E> {
                spec.parse().map(PortSpec).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Spec)
    }
}

/// The longest `label` taken.
const MAX_LABEL: usize = 100;

/// One `[[ports]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortRule {
    port: Option<PortSpec>,
    command: Option<CommandGlob>,
    label: Option<String>,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    on_detect: OnDetect,
}

/// One `[[ports]]` entry: it applies to a listener when its `port` and its
/// `command` (those it has; at least one) match.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawPortRule")]
pub(crate) struct PortRule {
    port: Option<PortRange>,
    command: Option<CommandGlob>,
    attributes: PortAttributes,
}

impl TryFrom<RawPortRule> for PortRule {
    type Error = &'static str;

    fn try_from(raw: RawPortRule) -> Result<Self, Self::Error> {
        if raw.port.is_none() && raw.command.is_none() {
            return Err("a [[ports]] entry needs `port` or `command`");
        }
        if let Some(label) = &raw.label {
            if label.trim().is_empty() {
                return Err("`label` is empty");
            }
            // A label is a name in a list, not a message.
            if label.chars().count() > MAX_LABEL {
                return Err("`label` is longer than 100 characters");
            }
        }
        Ok(PortRule {
            port: raw.port.map(|spec| spec.0),
            command: raw.command,
            attributes: PortAttributes {
                label: raw.label,
                protocol: raw.protocol,
                on_detect: raw.on_detect,
            },
        })
    }
}

impl PortRule {
    pub(crate) fn matches(&self, port: u16, process: &ProcessInfo) -> bool {
        self.port.is_none_or(|range| range.contains(port))
            && self
                .command
                .as_ref()
                .is_none_or(|glob| glob.matches(&process.command))
    }

    pub(crate) fn attributes(&self) -> &PortAttributes {
        &self.attributes
    }
}

/// The attributes of the first rule of `rules` that matches, if any.
pub(crate) fn first_match<'a>(
    rules: impl IntoIterator<Item = &'a PortRule>,
    port: u16,
    process: &ProcessInfo,
) -> Option<&'a PortAttributes> {
    rules
        .into_iter()
        .find(|rule| rule.matches(port, process))
        .map(PortRule::attributes)
}
