//! Which container a process runs in, from its `/proc/PID/cgroup`.
//!
//! Layouts understood (cgroup v2 `0::PATH` and v1 `N:controllers:PATH`):
//! - Docker, cgroupfs driver: `/docker/<id>`; systemd driver:
//!   `/system.slice/docker-<id>.scope`
//! - containerd (CRI) under the kubelet: cgroupfs
//!   `/kubepods/<qos>/pod<uid>/<id>`, systemd
//!   `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope`
//! - CRI-O: `.../crio-<id>.scope`, or `/kubepods/.../pod<uid>/crio-<id>`
//! - Podman: `.../libpod-<id>.scope`
//! - Docker under the kubelet (dockershim, or `--cgroup-parent`):
//!   `/kubepods/<qos>/pod<uid>/<id>` and `kubepods-...-pod<uid>.slice/docker-<id>.scope`
//!
//! A container id is 64 hex digits; the pod uid is reported with `-`
//! (systemd slice names write it with `_`).

/// The container a process runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// 64 hex digits.
    pub id: String,
    /// `docker`, `containerd`, `crio`, `podman`, or `kubepods` when only
    /// the kubelet's layout says it (a bare id under a pod).
    pub runtime: &'static str,
    /// The Kubernetes pod's uid, under the kubelet's layout.
    pub pod_uid: Option<String>,
}

/// The container of a process whose `/proc/PID/cgroup` reads `text`.
pub fn container_of(text: &str) -> Option<ContainerRef> {
    text.lines().filter_map(|line| line.splitn(3, ':').nth(2)).find_map(from_path)
}

fn from_path(path: &str) -> Option<ContainerRef> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let pod_uid = parts.iter().find_map(|p| pod_uid(p));
    // The container is the deepest part that names one.
    for part in parts.iter().rev() {
        let (runtime, rest) = match *part {
            p if p.starts_with("docker-") => ("docker", &p["docker-".len()..]),
            p if p.starts_with("cri-containerd-") => ("containerd", &p["cri-containerd-".len()..]),
            p if p.starts_with("crio-") => ("crio", &p["crio-".len()..]),
            p if p.starts_with("libpod-") => ("podman", &p["libpod-".len()..]),
            p => {
                let runtime = if parts.first() == Some(&"docker") {
                    "docker"
                } else if pod_uid.is_some() {
                    "kubepods"
                } else {
                    continue;
                };
                (runtime, p)
            }
        };
        let id = rest.strip_suffix(".scope").unwrap_or(rest);
        if is_container_id(id) {
            return Some(ContainerRef { id: id.to_string(), runtime, pod_uid });
        }
    }
    None
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let at = part.rfind("pod")?;
    let before = &part[..at];
    if !(before.is_empty() || before.ends_with('-')) {
        return None;
    }
    let uid = part[at + 3..].replace('_', "-");
    let looks_like_uid = uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    looks_like_uid.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2c5a0e9b1d4c7a8e6f0b2d4a6c8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d";
    const UID: &str = "6a1b2c3d-4e5f-6789-abcd-ef0123456789";

    fn check(text: &str, runtime: &str, pod: bool) {
        let c = container_of(text).unwrap_or_else(|| panic!("no container in {text}"));
        assert_eq!(c.id, ID, "{text}");
        assert_eq!(c.runtime, runtime, "{text}");
        assert_eq!(c.pod_uid.as_deref(), pod.then_some(UID), "{text}");
    }

    #[test]
    fn every_layout() {
        let uid_ = UID.replace('-', "_");
        // Docker, cgroup v2, cgroupfs and systemd drivers.
        check(&format!("0::/docker/{ID}\n"), "docker", false);
        check(&format!("0::/system.slice/docker-{ID}.scope\n"), "docker", false);
        // Docker, cgroup v1.
        check(&format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n0::/\n"), "docker", false);
        // Docker with the kubelet's cgroup parent (dockershim, or --cgroup-parent).
        check(&format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"), "kubepods", true);
        check(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/docker-{ID}.scope\n"
            ),
            "docker",
            true,
        );
        // containerd (CRI), cgroupfs and systemd.
        check(&format!("0::/kubepods/burstable/pod{UID}/{ID}\n"), "kubepods", true);
        check(&format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope\n"), "containerd", true);
        check(&format!("0::/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope\n"), "containerd", true);
        // CRI-O, systemd and cgroupfs; v1 line.
        check(&format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope\n"), "crio", true);
        check(&format!("4:cpu,cpuacct:/kubepods/pod{UID}/crio-{ID}\n"), "crio", true);
        // Podman.
        check(&format!("0::/machine.slice/libpod-{ID}.scope/container\n"), "podman", false);
    }

    #[test]
    fn host_processes_have_none() {
        for text in [
            "0::/\n",
            "0::/init.scope\n",
            "0::/user.slice/user-0.slice/session-3.scope\n",
            "0::/system.slice/docker.service\n",
            "0::/kubepods/besteffort/pod1234\n",
            "12:pids:/\n",
            "",
            "garbage",
        ] {
            assert_eq!(container_of(text), None, "{text}");
        }
    }
}
