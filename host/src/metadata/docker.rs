//! A small Docker Engine API client over its unix socket: list running
//! containers and inspect one. Blocking with short timeouts; called only
//! from the metadata thread, never from the capture path.
//!
//! Requests are HTTP/1.0 so the engine answers with a plain body ended by
//! closing the connection (no chunked encoding to undo).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The API version asked for (Docker 20.10 and later answer it).
const API: &str = "v1.41";
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read (an inspect is a few KiB; a list of many containers more).
const MAX_RESPONSE: u64 = 16 << 20;

/// What records and filters use of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` entries split at the first `=`.
    pub env: BTreeMap<String, String>,
}

impl ContainerInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Kubernetes pod name, from the runtime's `io.kubernetes.pod.name` label.
    pub fn pod_name(&self) -> Option<&str> {
        self.label("io.kubernetes.pod.name")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.label("io.kubernetes.pod.namespace")
    }

    /// The container's name as Kubernetes knows it when it is a pod's
    /// container, else the runtime's name.
    pub fn display_name(&self) -> &str {
        self.label("io.kubernetes.container.name").unwrap_or(&self.name)
    }
}

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

/// `GET path` on the engine's socket; the body of a 200 answer.
fn get(socket: &Path, path: &str) -> Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET /{API}{path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).context("reading the engine's answer")?;
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no HTTP header in the engine's answer");
    };
    let status =
        String::from_utf8_lossy(&raw[..raw[..split].iter().position(|&b| b == b'\r').unwrap_or(split)]).into_owned();
    if status.split(' ').nth(1).is_none_or(|code| code != "200") {
        bail!("GET {path}: {status}");
    }
    Ok(raw[split + 4..].to_vec())
}

/// Ids of the running containers.
pub fn list(socket: &Path) -> Result<Vec<String>> {
    let body = get(socket, "/containers/json")?;
    let listed: Vec<Listed> = serde_json::from_slice(&body).context("parsing the container list")?;
    Ok(listed.into_iter().map(|c| c.id).collect())
}

/// One container's name, image, labels and environment.
pub fn inspect(socket: &Path, id: &str) -> Result<ContainerInfo> {
    let body = get(socket, &format!("/containers/{id}/json"))?;
    let i: Inspect = serde_json::from_slice(&body).context("parsing a container inspect")?;
    Ok(ContainerInfo {
        id: i.id,
        name: i.name.trim_start_matches('/').to_string(),
        image: i.config.image,
        labels: i.config.labels.unwrap_or_default(),
        env: i
            .config
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e, String::new()),
            })
            .collect(),
    })
}
