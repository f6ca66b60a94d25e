//! A small Docker Engine API client over its unix socket: list running
//! containers and inspect one. Blocking with short timeouts; called only
//! from the metadata thread, never from the capture path.
//!
//! Requests are HTTP/1.0 so the engine answers with a plain body ended by
//! closing the connection (no chunked encoding to undo).
//!
//! The API version is negotiated as the Docker CLI does: `GET /version`
//! (unversioned) tells the engine's own version and the oldest it still
//! accepts; requests then use the engine's version capped at the newest
//! this client knows. Engines refuse versions below their minimum (Docker
//! 29 refuses anything below 1.44), so no fixed version serves them all.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{ContainerInfo, ContainerRuntime};

/// The newest API version this client is written against. What it reads
/// (`/containers/json`, `/containers/ID/json`: Id, Name, Config.Image,
/// Config.Labels, Config.Env) is the same from 1.24 to 1.51.
const CLIENT_MAX: ApiVersion = ApiVersion(1, 51);
/// Asked of an engine whose `/version` says nothing usable (pre-1.24
/// engines do not exist in the field any more; 1.24 is what every engine
/// from Docker 1.12 to 24 accepts).
const FALLBACK: ApiVersion = ApiVersion(1, 24);
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read (an inspect is a few KiB; a list of many containers more).
const MAX_RESPONSE: u64 = 16 << 20;

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: InspectConfig,
}

#[derive(Deserialize, Default)]
struct InspectConfig {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

/// An API version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.trim().trim_start_matches('v').split_once('.')?;
        Some(Self(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// `GET /version`, the fields negotiation needs.
#[derive(Deserialize)]
struct Version {
    #[serde(rename = "ApiVersion", default)]
    api: String,
    #[serde(rename = "MinAPIVersion", default)]
    min_api: String,
}

/// The version to ask an engine that answered `/version` with `body`: its
/// own version capped at [`CLIENT_MAX`], and never below its minimum.
pub fn negotiate(body: &[u8]) -> Result<ApiVersion> {
    let v: Version = serde_json::from_slice(body).context("parsing the engine's /version answer")?;
    let engine = ApiVersion::parse(&v.api)
        .with_context(|| format!("the engine's /version has no usable ApiVersion ({:?})", v.api))?;
    let mut chosen = engine.min(CLIENT_MAX);
    if let Some(min) = ApiVersion::parse(&v.min_api) {
        chosen = chosen.max(min);
    }
    Ok(chosen)
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

/// `GET path` on the engine's socket (`path` with its version prefix, if
/// any): the status code and the body.
fn get(socket: &Path, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).context("reading the engine's answer")?;
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no HTTP header in the engine's answer");
    };
    let status_line =
        String::from_utf8_lossy(&raw[..raw[..split].iter().position(|&b| b == b'\r').unwrap_or(split)]).into_owned();
    let Some(code) = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()) else {
        bail!("GET {path}: not an HTTP status line: {status_line:?}");
    };
    Ok((code, raw[split + 4..].to_vec()))
}

/// The Docker Engine API over its unix socket.
pub struct Docker {
    socket: PathBuf,
    /// Negotiated with the engine on first use; forgotten when a request
    /// fails, so a restarted (or upgraded) engine is asked again.
    version: Option<ApiVersion>,
}

impl Docker {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket, version: None }
    }

    /// The version prefix for this engine (`/v1.47`), negotiated if needed.
    fn prefix(&mut self) -> Result<String> {
        let version = match self.version {
            Some(v) => v,
            None => {
                let v = match get(&self.socket, "/version")? {
                    (200, body) => negotiate(&body).unwrap_or_else(|e| {
                        tracing::warn!("{}: {e:#}; asking for API {FALLBACK}", self.describe());
                        FALLBACK
                    }),
                    (code, body) => {
                        bail!("GET /version: HTTP {code}: {}", String::from_utf8_lossy(&body).trim())
                    }
                };
                tracing::debug!(api = %v, "{}: API version negotiated", self.describe());
                *self.version.insert(v)
            }
        };
        Ok(format!("/v{version}"))
    }

    /// `GET` a versioned path; a failure forgets the negotiated version.
    fn get_versioned(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        let full = format!("{}{path}", self.prefix()?);
        let answer = get(&self.socket, &full);
        if !matches!(answer, Ok((200 | 404, _))) {
            self.version = None;
        }
        answer
    }
}

impl ContainerRuntime for Docker {
    fn describe(&self) -> String {
        format!("docker at {}", self.socket.display())
    }

    fn list(&mut self) -> Result<Vec<String>> {
        let body = match self.get_versioned("/containers/json")? {
            (200, body) => body,
            (code, body) => bail!("GET /containers/json: HTTP {code}: {}", String::from_utf8_lossy(&body).trim()),
        };
        let listed: Vec<Listed> = serde_json::from_slice(&body).context("parsing the container list")?;
        Ok(listed.into_iter().map(|c| c.id).collect())
    }

    fn inspect(&mut self, id: &str) -> Result<Option<ContainerInfo>> {
        let body = match self.get_versioned(&format!("/containers/{id}/json"))? {
            (404, _) => return Ok(None),
            (200, body) => body,
            (code, body) => bail!("inspecting {id}: HTTP {code}: {}", String::from_utf8_lossy(&body).trim()),
        };
        let i: Inspect = serde_json::from_slice(&body).context("parsing a container inspect")?;
        Ok(Some(ContainerInfo {
            id: i.id,
            name: i.name.trim_start_matches('/').to_string(),
            image: i.config.image,
            labels: i.config.labels.unwrap_or_default(),
            env: i.config.env.unwrap_or_default().iter().map(|e| super::split_env(e)).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /version` in the shape Docker Engine 29 answers it (API 1.52,
    /// minimum 1.44: the 1.41 this client used to pin is refused).
    const ENGINE_29: &str = r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"29.1.2","Details":{"ApiVersion":"1.52","Arch":"amd64","BuildTime":"2025-12-02T21:54:47.000000000+00:00","Experimental":"false","GitCommit":"de45c2a","GoVersion":"go1.25.5","KernelVersion":"6.18.44","MinAPIVersion":"1.44","Os":"linux"}}],"Version":"29.1.2","ApiVersion":"1.52","MinAPIVersion":"1.44","GitCommit":"de45c2a","GoVersion":"go1.25.5","Os":"linux","Arch":"amd64","KernelVersion":"6.18.44","BuildTime":"2025-12-02T21:54:47.000000000+00:00"}"#;
    /// Debian 12's engine (20.10), which answers 1.41 at most.
    const ENGINE_20: &str =
        r#"{"Version":"20.10.24+dfsg1","ApiVersion":"1.41","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#;

    #[test]
    fn negotiates_within_what_both_sides_accept() {
        let v = negotiate(ENGINE_29.as_bytes()).unwrap();
        assert_eq!(v, CLIENT_MAX.min(ApiVersion(1, 52)));
        assert!(v >= ApiVersion(1, 44), "never below the engine's minimum: {v}");
        assert_eq!(negotiate(ENGINE_20.as_bytes()).unwrap(), ApiVersion(1, 41), "an older engine's own version");
        // A future engine whose minimum is past what this client knows:
        // ask its minimum (what we read has not changed in years).
        let future = r#"{"ApiVersion":"1.60","MinAPIVersion":"1.55"}"#;
        assert_eq!(negotiate(future.as_bytes()).unwrap(), ApiVersion(1, 55));
        assert!(negotiate(b"{}").is_err());
        assert!(negotiate(b"not json").is_err());
        assert!(ApiVersion(1, 9) < ApiVersion(1, 41), "compared as numbers, not text");
    }

    /// A fake engine on a unix socket that refuses versions below 1.44
    /// the way Docker 29 does, and records what was asked.
    #[test]
    fn asks_a_current_engine_with_a_version_it_accepts() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(3) {
                let mut conn = conn.unwrap();
                let mut line = String::new();
                std::io::BufReader::new(&conn).read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                log.lock().unwrap().push(path.clone());
                let (code, body) = if path == "/version" {
                    (200, ENGINE_29.to_string())
                } else if path.starts_with("/v1.4") && !path.starts_with("/v1.44") {
                    (
                        400,
                        r#"{"message":"client version 1.41 is too old. Minimum supported API version is 1.44"}"#.into(),
                    )
                } else if path.ends_with("/containers/json") {
                    (200, r#"[{"Id":"abc"}]"#.into())
                } else {
                    (404, "{}".into())
                };
                write!(conn, "HTTP/1.0 {code} X\r\nContent-Type: application/json\r\n\r\n{body}").unwrap();
            }
        });
        let mut docker = Docker::new(socket);
        assert_eq!(docker.list().unwrap(), vec!["abc".to_string()]);
        assert_eq!(docker.inspect("nope").unwrap(), None);
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked[0], "/version");
        assert!(asked[1].starts_with("/v1.5") && asked[1].ends_with("/containers/json"), "{asked:?}");
        assert_eq!(asked.len(), 3, "negotiated once: {asked:?}");
    }
}
