//! Field types that validate while they are read: once a control is typed,
//! its port, method, path, headers and body are known good, and forwarding
//! does not check them again.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A local TCP port, 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let port = u64::deserialize(deserializer)
            .map_err(|_| de::Error::custom("must be an integer from 1 to 65535"))?;
        match u16::try_from(port) {
            Ok(port) if port != 0 => Ok(Port(port)),
            _ => Err(de::Error::custom("must be an integer from 1 to 65535")),
        }
    }
}

/// A string, borrowed from the control's text when it has no escapes
/// (serde's own `Cow<str>` always copies: a header name and value each
/// cost an allocation).
pub(super) struct Text<'de>(pub(super) Cow<'de, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

/// An HTTP method token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method(pub http::Method);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(deserializer)?;
        http::Method::from_bytes(text.as_bytes())
            .map(Method)
            .map_err(|_| de::Error::custom("must be an http method token"))
    }
}

/// A request path in origin form: starts with `/`, so a control can never
/// name another host in an absolute-form target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPath(pub String);

impl<'de> Deserialize<'de> for UrlPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        if path.starts_with('/') {
            Ok(UrlPath(path))
        } else {
            Err(de::Error::custom("must start with `/`"))
        }
    }
}

/// An absolute path (`allowedCwds`; a start's `cwd` is checked by the cwd
/// policy instead, which answers `cwd_not_allowed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsolutePath(pub PathBuf);

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = PathBuf::from(String::deserialize(deserializer)?);
        if path.is_absolute() {
            Ok(AbsolutePath(path))
        } else {
            Err(de::Error::custom("must be an absolute path"))
        }
    }
}

/// Most header pairs a control may carry. A flood is refused while it is
/// read, before anything is built from it (an `http::HeaderMap` panics past
/// 32,768 entries).
pub(crate) const MAX_HEADER_PAIRS: usize = 1000;
/// Most header bytes (names and values) a control may carry.
pub(crate) const MAX_HEADER_BYTES: usize = 256 * 1024;

/// `headers`: an object (`{"name": "value"}` or `{"name": ["v1", "v2"]}`)
/// or a list of `[name, value]` pairs, read straight into a header map
/// (repeated names kept in order), at most [`MAX_HEADER_PAIRS`] pairs and
/// [`MAX_HEADER_BYTES`] bytes. Written (in a response) as `[name, value]`
/// pairs straight from the map, a value not in UTF-8 lossily.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Headers(pub HeaderMap);

#[derive(Default)]
struct Collect {
    map: HeaderMap,
    pairs: usize,
    bytes: usize,
}

impl Collect {
    fn push<E: de::Error>(&mut self, name: &str, value: &str) -> Result<(), E> {
        self.pairs += 1;
        self.bytes += name.len() + value.len();
        if self.pairs > MAX_HEADER_PAIRS || self.bytes > MAX_HEADER_BYTES {
            return Err(E::custom(
                "must hold at most 1000 pairs and 256 KiB of names and values",
            ));
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| E::custom(format!("has an invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| E::custom(format!("has an invalid value for {name}")))?;
        self.map.append(name, value);
        Ok(())
    }
}

/// The value of one name in the object form, a string or a list of
/// strings, pushed as it is read (serde's `untagged` would buffer each
/// value first and try it twice).
struct Values<'c> {
    name: &'c str,
    collect: &'c mut Collect,
}

impl<'de> de::DeserializeSeed<'de> for Values<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Values<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.collect.push(self.name, value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Text(value)) = seq.next_element()? {
            self.collect.push(self.name, &value)?;
        }
        Ok(())
    }
}

struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = Headers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of strings or string lists, or a list of [name, value] pairs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
        let mut collect = Collect::default();
        while let Some(Text(name)) = map.next_key()? {
            map.next_value_seed(Values {
                name: &name,
                collect: &mut collect,
            })?;
        }
        Ok(Headers(collect.map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Headers, A::Error> {
        let mut collect = Collect::default();
        while let Some((Text(name), Text(value))) = seq.next_element()? {
            collect.push(&name, &value)?;
        }
        Ok(Headers(collect.map))
    }
}

#[cfg(test)]
impl Headers {
    /// The headers `pairs`, in order.
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            map.append(name, HeaderValue::from_str(value).expect("a header value"));
        }
        Headers(map)
    }
}

impl Headers {
    /// About the length of the headers as JSON pairs (more if a value
    /// needs escapes).
    pub(crate) fn wire_len(&self) -> usize {
        let pair = |(name, value): (&HeaderName, &HeaderValue)| name.as_str().len() + value.len();
        // `["",""],` around each pair.
        self.0.iter().map(pair).sum::<usize>() + 8 * self.0.len()
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter()
                .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()))),
        )
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HeadersVisitor)
    }
}

/// `bodyBase64`: standard alphabet, padded; decoded once, into the buffer
/// forwarding sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body(pub Bytes);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl Visitor<'_> for BodyVisitor {
            type Value = Body;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Body, E> {
                base64_simd::STANDARD
                    .decode_to_vec(text)
                    .map(|bytes| Body(Bytes::from(bytes)))
                    .map_err(|_| E::custom("must be valid base64"))
            }
        }
        deserializer.deserialize_str(BodyVisitor)
    }
}

/// `approve` / `deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

/// `start_instance`'s `approvalPolicy`, passed to Codex as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    Untrusted,
    OnRequest,
    Never,
}

/// `start_instance`'s `sandbox`, passed to Codex as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

/// A Kandan user id, echoed back as it came (number or string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "an integer or a string")]
pub enum ActorId {
    Int(i64),
    Str(String),
}

/// WebSocket frame kinds carried by `forward_websocket_send` / `_message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opcode {
    Text,
    Binary,
    /// Payload at most 125 bytes.
    Ping,
    /// Payload at most 125 bytes.
    Pong,
}
