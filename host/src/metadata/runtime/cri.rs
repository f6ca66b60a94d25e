//! The Kubernetes CRI (`runtime.v1.RuntimeService`) over the runtime's unix
//! socket: containerd's and CRI-O's view of their containers and pods.
//!
//! A container's record comes from three calls: `ContainerStatus` (name,
//! image, labels; verbose, for the environment in its OCI spec),
//! `ListContainers` by id (its pod sandbox) and `PodSandboxStatus` (the
//! pod's labels, name and namespace). Pod labels are merged under the
//! container's own, so `IncludeK8sLabels: {app: web}` selects a pod's
//! containers as users expect; the pod's name and namespace fill the
//! `io.kubernetes.pod.*` labels when the container lacks them.
//!
//! Blocking: each call runs on a one-thread tokio runtime owned by the
//! metadata thread, with a short timeout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

use super::cri_proto::*;
use super::{split_env, ContainerInfo, ContainerRuntime};

const TIMEOUT: Duration = Duration::from_secs(2);

pub struct Cri {
    socket: PathBuf,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
    /// Connected lazily, dropped after a transport error so the next call
    /// reconnects (the runtime may have restarted).
    channel: Option<Channel>,
}

/// A failed call: the runtime's answer, or no answer at all.
#[derive(Debug)]
pub enum CallError {
    Status(tonic::Status),
    Unreachable(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(s) => write!(f, "{}: {}", s.code(), s.message()),
            CallError::Unreachable(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for CallError {}

impl Cri {
    pub fn new(socket: PathBuf) -> Result<Self> {
        Self::with_timeout(socket, TIMEOUT)
    }

    /// Calls that may take `timeout` (creating a pod takes seconds).
    pub fn with_timeout(socket: PathBuf, timeout: Duration) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("starting the CRI client's runtime")?;
        Ok(Self { socket, timeout, rt, channel: None })
    }

    fn channel(&mut self) -> Result<Channel> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let (socket, timeout) = (self.socket.clone(), self.timeout);
        // The URI is required by the API but unused: the connector below
        // always dials the socket.
        let endpoint = Endpoint::from_static("http://cri.local").connect_timeout(timeout).timeout(timeout);
        let channel = self
            .rt
            .block_on(async {
                tokio::time::timeout(
                        timeout,
                        endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                            let socket = socket.clone();
                            async move {
                                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
                            }
                        })),
                    )
                    .await
            })
            .map_err(|_| anyhow!("no answer within {timeout:?}"))?
            // The innermost cause only: tonic's chain repeats it.
            .map_err(|e| anyhow!("connecting to {}: {}", self.socket.display(), anyhow::Error::from(e).root_cause()))?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// One unary call of `runtime.v1.RuntimeService/<method>`.
    pub fn call<Req, Resp>(&mut self, method: &str, request: Req) -> Result<Resp, CallError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = self.channel().map_err(CallError::Unreachable)?;
        let path: http::uri::PathAndQuery = format!("/{RUNTIME_SERVICE}/{method}")
            .parse()
            .map_err(|e| CallError::Unreachable(anyhow!("method {method}: {e}")))?;
        let result = self.rt.block_on(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| CallError::Unreachable(anyhow!("{e}")))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(tonic::Request::new(request), path, codec).await.map_err(CallError::Status)
        });
        // Transport failures (the socket went away) come back as these
        // statuses: the runtime is unreachable, and the next call reconnects.
        let result = match result {
            Err(CallError::Status(s)) if matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) => {
                Err(CallError::Unreachable(anyhow!("{}: {}", s.code(), s.message())))
            }
            other => other,
        };
        if matches!(result, Err(CallError::Unreachable(_))) {
            self.channel = None;
        }
        result.map(tonic::Response::into_inner)
    }
}

/// The container's environment from a verbose status's `info` documents:
/// the OCI spec's `process.env` (containerd and CRI-O), else the CRI
/// config's `envs`.
fn env_of(info: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    for doc in info.values() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) else { continue };
        if let Some(env) = v.pointer("/runtimeSpec/process/env").and_then(|e| e.as_array()) {
            return env.iter().filter_map(|e| e.as_str()).map(split_env).collect();
        }
        if let Some(envs) = v.pointer("/config/envs").and_then(|e| e.as_array()) {
            return envs
                .iter()
                .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"].as_str()?.to_string())))
                .collect();
        }
    }
    Vec::new()
}

impl ContainerRuntime for Cri {
    fn describe(&self) -> String {
        format!("CRI at {}", self.socket.display())
    }

    fn list(&mut self) -> Result<Vec<String>> {
        let filter =
            ContainerFilter { state: Some(ContainerStateValue { state: CONTAINER_RUNNING }), ..Default::default() };
        let r: ListContainersResponse = self.call("ListContainers", ListContainersRequest { filter: Some(filter) })?;
        Ok(r.containers.into_iter().map(|c| c.id).collect())
    }

    fn inspect(&mut self, id: &str) -> Result<Option<ContainerInfo>> {
        let status: ContainerStatusResponse = match self
            .call("ContainerStatus", ContainerStatusRequest { container_id: id.to_string(), verbose: true })
        {
            Ok(s) => s,
            Err(CallError::Status(s)) if s.code() == Code::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(s) = status.status else { return Ok(None) };
        let filter = ContainerFilter { id: id.to_string(), ..Default::default() };
        let listed: ListContainersResponse =
            self.call("ListContainers", ListContainersRequest { filter: Some(filter) })?;
        let mut labels = std::collections::BTreeMap::new();
        if let Some(sandbox) = listed.containers.first().map(|c| c.pod_sandbox_id.clone()).filter(|s| !s.is_empty()) {
            let pod: PodSandboxStatusResponse =
                self.call("PodSandboxStatus", PodSandboxStatusRequest { pod_sandbox_id: sandbox, verbose: false })?;
            if let Some(pod) = pod.status {
                labels.extend(pod.labels);
                if let Some(m) = pod.metadata {
                    labels.entry("io.kubernetes.pod.name".to_string()).or_insert(m.name);
                    labels.entry("io.kubernetes.pod.namespace".to_string()).or_insert(m.namespace);
                    labels.entry("io.kubernetes.pod.uid".to_string()).or_insert(m.uid);
                }
            }
        }
        // The container's own labels win over its pod's.
        labels.extend(s.labels);
        Ok(Some(ContainerInfo {
            id: s.id,
            name: s.metadata.map(|m| m.name).unwrap_or_default(),
            image: s.image.map(|i| i.image).unwrap_or_default(),
            labels,
            env: env_of(&status.info).into_iter().collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_from_the_oci_spec_or_the_cri_config() {
        let containerd = r#"{"sandboxID":"s","runtimeSpec":{"process":{"env":["PATH=/bin","TIER=front=1","BARE"]}}}"#;
        let info = [("info".to_string(), containerd.to_string())].into_iter().collect();
        assert_eq!(
            env_of(&info),
            [("PATH", "/bin"), ("TIER", "front=1"), ("BARE", "")].map(|(k, v)| (k.into(), v.into())).to_vec()
        );
        let config = r#"{"config":{"envs":[{"key":"A","value":"b"}]}}"#;
        let info = [("info".to_string(), config.to_string())].into_iter().collect();
        assert_eq!(env_of(&info), vec![("A".into(), "b".into())]);
        let info = [("info".to_string(), "not json".to_string())].into_iter().collect();
        assert!(env_of(&info).is_empty());
    }
}
