//! Container runtimes asked for container metadata: the Docker Engine API
//! (`docker.rs`) and the Kubernetes CRI (`cri.rs`, containerd and CRI-O).
//! Each answers for its own containers; the metadata thread
//! (`../containers.rs`) asks every configured runtime.

use std::collections::BTreeMap;

use anyhow::Result;

pub mod cri;
pub mod cri_proto;
pub mod docker;

/// A container runtime's API, called from the metadata thread only
/// (blocking, with short timeouts).
pub trait ContainerRuntime: Send {
    /// What and where, for logs: `docker at /var/run/docker.sock`.
    fn describe(&self) -> String;
    /// Ids of the running containers.
    fn list(&mut self) -> Result<Vec<String>>;
    /// One container, or `None` when the runtime answers that it has no
    /// such container (it may belong to another runtime).
    fn inspect(&mut self, id: &str) -> Result<Option<ContainerInfo>>;
}

/// What records and filters use of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// The runtime's name for it (without Docker's leading `/`).
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

/// `KEY=VALUE` split at the first `=` (a bare `KEY` has an empty value).
pub fn split_env(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (entry.to_string(), String::new()),
    }
}
