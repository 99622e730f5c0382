//! Open Collaboration set-up before an editor starts (PROTOCOL.md section
//! 8): fetch `extensionAssetPath` and `serverAssetPath` from Kandan's HTTP
//! origin with the token, install the extension into the editor's
//! extensions, and write the rest of `collaboration`, with `serverUrl`, into
//! its user settings under `kandan.collaboration`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde_json::{Map, Value};

use super::EditorId;
use super::dirs::EditorDirs;
use super::fetch::{self, FetchError};
use super::process::{self, Group};

/// The settings key the extension reads.
pub(crate) const SETTINGS_KEY: &str = "kandan.collaboration";
/// The largest asset accepted.
const MAX_ASSET: usize = 64 << 20;
/// How long one asset may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `code-server --install-extension` may take (0.6 s usually).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Kandan's HTTP origin and the runner's token. The token never shows in
/// `Debug`.
#[derive(Clone)]
pub struct KandanAccess {
    origin: String,
    token: String,
}

impl fmt::Debug for KandanAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KandanAccess")
            .field("origin", &self.origin)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl KandanAccess {
    /// From the runner's `--url`: `ws` -> `http`, `wss` -> `https` (`http`
    /// and `https` stay), keeping host and port and dropping any
    /// `user:password@`, path and query.
    pub fn from_url(url: &str, token: &str) -> Result<Self, CollaborationError> {
        let bad = || CollaborationError::BadKandanUrl;
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let scheme = match uri.scheme_str() {
            Some("ws" | "http") => "http",
            Some("wss" | "https") => "https",
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority.host();
        if host.is_empty() {
            return Err(bad());
        }
        let origin = match authority.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        Ok(KandanAccess {
            origin,
            token: token.to_string(),
        })
    }

    /// `http(s)://host[:port]`.
    #[cfg(test)]
    fn origin(&self) -> &str {
        &self.origin
    }

    /// The absolute URL of a path on the origin; only paths (`/x`) are
    /// accepted, so the token never goes to another host.
    fn url_of(&self, field: &'static str, path: &str) -> Result<Uri, CollaborationError> {
        let bad = || CollaborationError::BadAssetPath {
            field,
            path: path.to_string(),
        };
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(bad());
        }
        let url = format!("{}{path}", self.origin);
        let uri: Uri = url.parse().map_err(|_| bad())?;
        Ok(uri)
    }
}

/// Why the collaboration set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum CollaborationError {
    /// The runner's URL has no usable origin.
    #[error("the runner's Kandan URL has no ws/wss/http/https origin")]
    BadKandanUrl,
    /// The runner was set up without Kandan's origin and token.
    #[error("no Kandan origin and token to fetch the assets with")]
    NoKandan,
    /// `collaboration` is not an object.
    #[error("`collaboration` is not an object")]
    NotAnObject,
    /// A required field is missing or not a string.
    #[error("`collaboration.{0}` is missing or not a string")]
    MissingField(&'static str),
    /// An asset path is not a path on Kandan's origin.
    #[error("`collaboration.{field}` is not a path on Kandan's origin: {path:?}")]
    BadAssetPath { field: &'static str, path: String },
    /// An asset could not be fetched.
    #[error("cannot fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    /// An asset, or the settings, could not be written.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `code-server --install-extension` failed.
    #[error("installing the extension failed (status {code:?}): {output}")]
    Install { code: Option<i32>, output: String },
    /// `code-server --install-extension` could not be run.
    #[error("cannot run code-server --install-extension")]
    InstallSpawn(#[source] Box<super::EditorError>),
}

/// A parsed `collaboration` object.
#[derive(Clone, Debug)]
pub(crate) struct Collaboration {
    extension_path: String,
    server_path: String,
    /// Every other key, passed on to the settings.
    rest: Map<String, Value>,
}

impl Collaboration {
    pub(crate) fn parse(value: &Value) -> Result<Self, CollaborationError> {
        let mut rest = value
            .as_object()
            .ok_or(CollaborationError::NotAnObject)?
            .clone();
        let mut take = |field: &'static str| match rest.remove(field) {
            Some(Value::String(path)) => Ok(path),
            _ => Err(CollaborationError::MissingField(field)),
        };
        let extension_path = take("extensionAssetPath")?;
        let server_path = take("serverAssetPath")?;
        Ok(Collaboration {
            extension_path,
            server_path,
            rest,
        })
    }

    /// Fetches both assets, installs the extension and writes the settings.
    pub(crate) async fn apply(
        &self,
        access: Option<&KandanAccess>,
        program: &Path,
        dirs: &EditorDirs,
        id: &EditorId,
    ) -> Result<(), CollaborationError> {
        let access = access.ok_or(CollaborationError::NoKandan)?;
        let extension_url = access.url_of("extensionAssetPath", &self.extension_path)?;
        let server_url = access.url_of("serverAssetPath", &self.server_path)?;
        let (extension, server) = tokio::join!(
            fetch_asset(&extension_url, &access.token),
            fetch_asset(&server_url, &access.token)
        );
        let (extension, server) = (extension?, server?);
        let vsix = dirs.assets.join("collaboration.vsix");
        write(&vsix, &extension)?;
        write(&dirs.assets.join("collaboration-server"), &server)?;
        install_extension(program, &vsix, dirs, id).await?;
        let mut settings = self.rest.clone();
        settings.insert("serverUrl".into(), Value::String(server_url.to_string()));
        let user = dirs.user_data.join("User");
        let file = user.join("settings.json");
        std::fs::create_dir_all(&user).map_err(|source| CollaborationError::Write {
            path: user.clone(),
            source,
        })?;
        let mut root = Map::new();
        root.insert(SETTINGS_KEY.into(), Value::Object(settings));
        let text = serde_json::to_vec_pretty(&Value::Object(root)).unwrap_or_default();
        write(&file, &text)
    }
}

async fn fetch_asset(url: &Uri, token: &str) -> Result<bytes::Bytes, CollaborationError> {
    fetch::get_with_bearer(url, token, MAX_ASSET, FETCH_TIMEOUT)
        .await
        .map_err(|source| CollaborationError::Fetch {
            url: url.to_string(),
            source,
        })
}

fn write(path: &Path, contents: &[u8]) -> Result<(), CollaborationError> {
    std::fs::write(path, contents).map_err(|source| CollaborationError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `code-server --install-extension X.vsix` into the editor's folders,
/// offline, with the editor's environment.
async fn install_extension(
    program: &Path,
    vsix: &Path,
    dirs: &EditorDirs,
    id: &EditorId,
) -> Result<(), CollaborationError> {
    // Short-lived, in its own session: ended with its marker below.
    let mut command = process::command(program, dirs, id, None)
        .map_err(|err| CollaborationError::InstallSpawn(Box::new(err)))?;
    command
        .arg("--install-extension")
        .arg(vsix)
        .arg("--extensions-dir")
        .arg(&dirs.extensions)
        .arg("--user-data-dir")
        .arg(&dirs.user_data)
        .args(["--config", "/dev/null"])
        .current_dir(&dirs.root);
    let mut group = Group::spawn(command, program, id, None)
        .map_err(|err| CollaborationError::InstallSpawn(Box::new(err)))?;
    let code = tokio::time::timeout(INSTALL_TIMEOUT, group.wait())
        .await
        .ok()
        .flatten();
    // What it left running (or all of it, after the timeout) goes.
    group.end().await;
    // code-server prints a failure and still exits 0 for some bad packages.
    let output = group.tail();
    let failed = output.contains("Failed Installing Extensions");
    if code != Some(0) || failed {
        // The messages, not node's stack frames.
        let output = output
            .lines()
            .filter(|line| !line.trim_start().starts_with("at "))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(CollaborationError::Install { code, output });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_from_the_runner_url() {
        let origin = |url| KandanAccess::from_url(url, "t").map(|a| a.origin().to_string());
        assert_eq!(
            origin("wss://k.example/runner/socket").unwrap(),
            "https://k.example"
        );
        assert_eq!(
            origin("ws://127.0.0.1:4000/runner/socket?x=1").unwrap(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            origin("ws://user:pw@[::1]:4000/s").unwrap(),
            "http://[::1]:4000"
        );
        assert_eq!(origin("https://k.example").unwrap(), "https://k.example");
        assert!(origin("ftp://k.example/").is_err());
        assert!(origin("not a url").is_err());
    }

    #[test]
    fn asset_paths_stay_on_the_origin() {
        let access = KandanAccess::from_url("wss://k.example/runner/socket", "secret").unwrap();
        assert_eq!(
            access
                .url_of("x", "/assets/oct.vsix?v=1")
                .unwrap()
                .to_string(),
            "https://k.example/assets/oct.vsix?v=1"
        );
        for path in ["https://evil.example/x", "//evil.example/x", "x.vsix", ""] {
            assert!(access.url_of("x", path).is_err(), "{path}");
        }
        assert!(!format!("{access:?}").contains("secret"));
    }

    #[test]
    fn parse_keeps_the_other_keys() {
        let value = serde_json::json!({
            "extensionAssetPath": "/a.vsix",
            "serverAssetPath": "/s.js",
            "roomId": "r1",
            "nested": {"a": 1}
        });
        let collab = Collaboration::parse(&value).unwrap();
        assert_eq!(collab.extension_path, "/a.vsix");
        assert_eq!(collab.server_path, "/s.js");
        assert_eq!(collab.rest.len(), 2);
        assert_eq!(collab.rest["roomId"], "r1");
        assert!(matches!(
            Collaboration::parse(&serde_json::json!({"serverAssetPath": "/s"})),
            Err(CollaborationError::MissingField("extensionAssetPath"))
        ));
        assert!(matches!(
            Collaboration::parse(&serde_json::json!([])),
            Err(CollaborationError::NotAnObject)
        ));
    }
}
