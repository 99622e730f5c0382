//! code-server 4.100.3 from `tests/fixtures/code-server` (installed by
//! `cargo xtask setup --tests`), and what the editor tests need around it:
//! a hand-made `.vsix`, a TCP -> Unix proxy for the browser, and a search
//! for processes left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use runner::editor::KandanAccess;
use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

use crate::bench::procstat;

/// `tests/fixtures/code-server` in this checkout.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/code-server")
}

/// The code-server to test: `$KANDAN_CODE_SERVER_BIN`, else the fixture's.
/// `None` (the test prints why and skips) when the fixture is missing; under
/// CI (`CI` set) a missing fixture panics instead.
pub fn code_server_bin(test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os("KANDAN_CODE_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixture_dir().join("node_modules/.bin/code-server"));
    if bin.exists() {
        return Some(bin);
    }
    let why = format!(
        "{} missing: run `cargo xtask setup --tests` (npm ci in tests/fixtures/code-server)",
        bin.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
    eprintln!("skipping {test}: {why}");
    None
}

/// Writes a minimal VS Code extension package to `vsix`: publisher `kandan`,
/// name `collab-probe`, activated on startup finished, running
/// `extension_js`. A `.vsix` is a zip; Python's zipfile writes it.
pub fn write_vsix(vsix: &Path, extension_js: &str) -> Result<()> {
    let package = serde_json::json!({
        "name": "collab-probe",
        "displayName": "Kandan collaboration probe",
        "publisher": "kandan",
        "version": "0.0.1",
        "engines": {"vscode": "^1.80.0"},
        "main": "./extension.js",
        "activationEvents": ["onStartupFinished"]
    });
    let manifest = r#"<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">
  <Metadata>
    <Identity Language="en-US" Id="collab-probe" Version="0.0.1" Publisher="kandan" />
    <DisplayName>Kandan collaboration probe</DisplayName>
    <Description xml:space="preserve">Writes the kandan.collaboration setting to a file</Description>
    <Properties>
      <Property Id="Microsoft.VisualStudio.Code.Engine" Value="^1.80.0" />
    </Properties>
  </Metadata>
  <Installation>
    <InstallationTarget Id="Microsoft.VisualStudio.Code" />
  </Installation>
  <Dependencies />
  <Assets>
    <Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" Addressable="true" />
  </Assets>
</PackageManifest>
"#;
    let content_types = r#"<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
  <Default Extension=".json" ContentType="application/json" />
  <Default Extension=".js" ContentType="application/javascript" />
  <Default Extension=".vsixmanifest" ContentType="text/xml" />
</Types>
"#;
    let files = serde_json::json!({
        "[Content_Types].xml": content_types,
        "extension.vsixmanifest": manifest,
        "extension/package.json": serde_json::to_string_pretty(&package)?,
        "extension/extension.js": extension_js,
    });
    let script = "import json, sys, zipfile\n\
        files = json.loads(sys.argv[2])\n\
        with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
        \x20   for name, text in files.items():\n\
        \x20       z.writestr(name, text)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(vsix)
        .arg(files.to_string())
        .status()
        .context("run python3 to zip the .vsix")?;
    ensure!(status.success(), "python3 zip failed: {status}");
    Ok(())
}

/// A TCP listener on 127.0.0.1 that relays every connection to a Unix
/// socket, as `socat TCP-LISTEN:P,fork UNIX-CONNECT:sock` would: Chromium
/// cannot speak to a Unix socket. Dropping it stops accepting.
pub struct UnixProxy {
    port: u16,
    task: JoinHandle<()>,
}

impl UnixProxy {
    pub async fn start(socket: &Path) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let socket = socket.to_path_buf();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Ok(mut unix) = UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
            }
        });
        Ok(UnixProxy { port, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for UnixProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Live processes whose environment mentions `needle` (e.g. a test's state
/// directory, which every editor process has in its `XDG_*_HOME`).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            procstat::alive(*pid)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

/// Live processes in the process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| procstat::stat(*pid).is_ok_and(|stat| stat.state != 'Z' && stat.pgrp == pgid))
        .collect()
}

/// The TCP ports on which a process of `pids` listens (via their socket
/// inodes in /proc/net/tcp and tcp6).
pub fn tcp_listen_ports(pids: &[u32]) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address st ... inode: fields 1, 3 and 9; 0A is LISTEN.
            if fields.len() > 9
                && fields[3] == "0A"
                && inodes.contains(fields[9])
                && let Some(port) = fields[1]
                    .rsplit_once(':')
                    .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The bearer token [`AssetServer`] accepts.
pub const TOKEN: &str = "test-token-123";

/// A request's path and `Authorization` header.
pub type Seen = (String, Option<String>);

/// Kandan's asset routes: the extension and the server asset, only with the
/// bearer token; every request's path and `Authorization` is recorded.
pub struct AssetServer {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AssetServer {
    /// Serves `vsix` at `/assets/oct.vsix` and a small script at
    /// `/assets/oct-server.js` to requests bearing [`TOKEN`].
    pub async fn start(vsix: Vec<u8>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let vsix = Bytes::from(vsix);
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let vsix = vsix.clone();
                let record = record.clone();
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let auth = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let path = request.uri().path().to_string();
                    record.lock().unwrap().push((path.clone(), auth.clone()));
                    let authorized = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
                    let (status, body) = match (authorized, path.as_str()) {
                        (false, _) => (StatusCode::UNAUTHORIZED, Bytes::from_static(b"no")),
                        (true, "/assets/oct.vsix") => (StatusCode::OK, vsix.clone()),
                        (true, "/assets/oct-server.js") => {
                            (StatusCode::OK, Bytes::from_static(b"// the relay\n"))
                        }
                        (true, _) => (StatusCode::NOT_FOUND, Bytes::from_static(b"missing")),
                    };
                    let response = Response::builder()
                        .status(status)
                        .body(Full::new(body))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(AssetServer { port, seen, task })
    }

    /// The runner's view of this origin, with `token`.
    pub fn access(&self, token: &str) -> KandanAccess {
        KandanAccess::from_url(
            &format!("ws://127.0.0.1:{}/runner/socket", self.port),
            token,
        )
        .unwrap()
    }
}

impl Drop for AssetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `collaboration` object for [`AssetServer`]'s routes, with a few keys
/// passed on to the settings.
pub fn collaboration_object() -> serde_json::Value {
    serde_json::json!({
        "extensionAssetPath": "/assets/oct.vsix",
        "serverAssetPath": "/assets/oct-server.js",
        "roomId": "room-42",
        "displayName": "Ada",
        "options": {"readOnly": false}
    })
}
