//! A real CRI runtime for the tests: Debian's containerd (its CRI plugin is
//! built in), started on sockets and directories of its own, with a small
//! busybox image imported as an OCI archive. Pods are made the way the
//! kubelet makes them (RunPodSandbox, CreateContainer, StartContainer),
//! with host networking and the kubelet's cgroup parent, through the same
//! CRI client the daemon uses; only the messages the kubelet sends are
//! declared here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wirelens::metadata::runtime::cri::Cri;
use wirelens::metadata::runtime::cri_proto::{ContainerMetadata, ImageSpec, PodSandboxMetadata};

pub const IMAGE: &str = "docker.io/wirelens/busybox:test";

#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `NamespaceMode.NODE`: the host's namespace.
const NODE: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
struct NamespaceOption {
    #[prost(int32, tag = "1")]
    network: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "3")]
    log_directory: String,
    #[prost(btree_map = "string, string", tag = "6")]
    labels: BTreeMap<String, String>,
    #[prost(message, optional, tag = "8")]
    linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "3")]
    namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LinuxContainerConfig {
    #[prost(message, optional, tag = "2")]
    security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    command: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    envs: Vec<KeyValue>,
    #[prost(btree_map = "string, string", tag = "9")]
    labels: BTreeMap<String, String>,
    #[prost(string, tag = "11")]
    log_path: String,
    #[prost(message, optional, tag = "15")]
    linux: Option<LinuxContainerConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    container_id: String,
}

/// Requests naming one container or sandbox (field 1), and empty answers.
#[derive(Clone, PartialEq, prost::Message)]
struct ById {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// A pod made through the CRI.
pub struct Pod {
    pub id: String,
    config: PodSandboxConfig,
}

/// containerd with its CRI plugin, on a socket of its own.
pub struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
    pub socket: PathBuf,
    client: Cri,
    pods: Vec<String>,
}

impl Containerd {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("wirelens-containerd").tempdir().unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        for sub in ["cni-bin", "cni-conf", "logs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // No CNI: pods use the host's network, as hostNetwork pods do.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  disable_apparmor = true
  # The kubelet's -998 for sandboxes needs a privilege this machine lacks.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
"#,
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let process = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (apt-get install containerd; scripts/setup.sh does it)");
        // The client connects at its first call; made now so that a failure
        // below still stops containerd (Drop).
        let client = Cri::with_timeout(socket.clone(), Duration::from_secs(60)).unwrap();
        let mut me = Self { dir, process, socket, client, pods: Vec::new() };
        let ready = super::wait_for(Duration::from_secs(20), || me.socket.exists());
        assert!(ready.is_some(), "containerd not ready within 20 s");
        me.import_image();
        let cri =
            super::wait_for(Duration::from_secs(20), || me.client.call::<Empty, Empty>("Version", Empty {}).is_ok());
        assert!(cri.is_some(), "containerd's CRI not ready within 20 s");
        me
    }

    /// busybox (static) as `/`, written as an OCI image archive and
    /// imported with `ctr` into the CRI's namespace.
    fn import_image(&self) {
        let d = self.dir.path();
        let rootfs = d.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("/bin/busybox (apt-get install busybox-static; scripts/setup.sh does it)");
        for applet in ["sh", "sleep", "nc", "printf"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let layout = d.join("image");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let blob = |data: &[u8]| {
            let digest = format!("{:x}", Sha256::digest(data));
            std::fs::write(blobs.join(&digest), data).unwrap();
            serde_json::json!({"digest": format!("sha256:{digest}"), "size": data.len()})
        };
        let tar = Command::new("tar").arg("-C").arg(&rootfs).args(["-c", "."]).output().unwrap();
        assert!(tar.status.success());
        let mut layer = blob(&tar.stdout);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            "config": {"Cmd": ["/bin/sleep", "1000000"], "Env": ["PATH=/bin"]},
        });
        let mut config = blob(config.to_string().as_bytes());
        config["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
        let manifest_type = "application/vnd.oci.image.manifest.v1+json";
        let manifest =
            serde_json::json!({"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": [layer]});
        let mut manifest = blob(manifest.to_string().as_bytes());
        manifest["mediaType"] = manifest_type.into();
        manifest["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
        manifest["annotations"] = serde_json::json!({"io.containerd.image.name": IMAGE});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
        std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let archive = d.join("image.tar");
        let out = Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg(".").output().unwrap();
        assert!(out.status.success());
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive)
            .output()
            .expect("ctr (apt-get install containerd)");
        assert!(out.status.success(), "ctr import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A host-network pod under the kubelet's cgroup parent, with `labels`
    /// as the pod's labels.
    pub fn run_pod(&mut self, name: &str, namespace: &str, uid: &str, labels: &[(&str, &str)]) -> Pod {
        let host_network = Some(NamespaceOption { network: NODE });
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            log_directory: self.dir.path().join("logs").join(uid).display().to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext { namespace_options: host_network }),
            }),
        };
        let r: RunPodSandboxResponse = self
            .client
            .call("RunPodSandbox", RunPodSandboxRequest { config: Some(config.clone()) })
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.log()));
        self.pods.push(r.pod_sandbox_id.clone());
        Pod { id: r.pod_sandbox_id, config }
    }

    /// Start container `name` in `pod` running `script` under `sh -c`, with
    /// the labels the kubelet sets and `env`; its id.
    pub fn run_container(&mut self, pod: &Pod, name: &str, env: &[(&str, &str)], script: &str) -> String {
        let meta = pod.config.metadata.clone().unwrap();
        let labels = [
            ("io.kubernetes.container.name", name),
            ("io.kubernetes.pod.name", &meta.name),
            ("io.kubernetes.pod.namespace", &meta.namespace),
            ("io.kubernetes.pod.uid", &meta.uid),
        ];
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: IMAGE.into() }),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            envs: env.iter().map(|(k, v)| KeyValue { key: k.to_string(), value: v.to_string() }).collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption { network: NODE }),
                }),
            }),
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let r: CreateContainerResponse = self
            .client
            .call("CreateContainer", request)
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log()));
        let _: Empty = self
            .client
            .call("StartContainer", ById { id: r.container_id.clone() })
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", self.log()));
        r.container_id
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("level=error")).collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    pub fn path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for pod in std::mem::take(&mut self.pods) {
            let _: Result<Empty, _> = self.client.call("StopPodSandbox", ById { id: pod.clone() });
            let _: Result<Empty, _> = self.client.call("RemovePodSandbox", ById { id: pod });
        }
        // SIGTERM: containerd shuts down cleanly.
        super::servers::shut_down(&mut self.process, libc::SIGTERM, Duration::from_secs(15));
        // Unmount what may be left (a container's rootfs) so the temp dir can go.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}
