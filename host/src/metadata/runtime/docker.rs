//! A small Docker Engine API client over its unix socket: list running
//! containers and inspect one. Blocking with short timeouts; called only
//! from the metadata thread, never from the capture path.
//!
//! Requests are HTTP/1.0 so the engine answers with a plain body ended by
//! closing the connection (no chunked encoding to undo).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{ContainerInfo, Runtime};

/// The API version asked for (Docker 20.10 and later answer it).
const API: &str = "v1.41";
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

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

/// `GET path` on the engine's socket: the status code and the body.
fn get(socket: &Path, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET /{API}{path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
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

/// The body of a 200 answer to `GET path`.
fn get_ok(socket: &Path, path: &str) -> Result<Vec<u8>> {
    match get(socket, path)? {
        (200, body) => Ok(body),
        (code, body) => bail!("GET {path}: HTTP {code}: {}", String::from_utf8_lossy(&body).trim()),
    }
}

/// The Docker Engine API over its unix socket.
pub struct Docker {
    socket: PathBuf,
}

impl Docker {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }
}

impl Runtime for Docker {
    fn describe(&self) -> String {
        format!("docker at {}", self.socket.display())
    }

    fn list(&mut self) -> Result<Vec<String>> {
        let body = get_ok(&self.socket, "/containers/json")?;
        let listed: Vec<Listed> = serde_json::from_slice(&body).context("parsing the container list")?;
        Ok(listed.into_iter().map(|c| c.id).collect())
    }

    fn inspect(&mut self, id: &str) -> Result<Option<ContainerInfo>> {
        let body = match get(&self.socket, &format!("/containers/{id}/json"))? {
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
