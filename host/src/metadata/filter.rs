//! iLogtail's include/exclude filters, per process.
//!
//! A process is kept when it passes `EBPF.Pid` (in the kernel), every
//! configured `Include*` key matches it, and no configured `Exclude*` key
//! does. Within one map key (`IncludeContainerLabels`, `IncludeK8sLabels`,
//! `IncludeEnvs` and their `Exclude` twins) the entries are OR: one
//! matching entry is a match. An entry matches when the container has the
//! label (or variable) and its value matches the entry's regular
//! expression (an empty value: the key alone is enough). `IncludeK8sLabels`
//! look at the `io.kubernetes.*` labels the kubelet puts on containers,
//! like any label, and (through the CRI) at the pod's own labels, merged
//! under the container's. The container, pod and namespace keys only match
//! containers: with any `Include` key of those set, host processes are
//! excluded; `Exclude` keys of those never exclude a host process. The
//! command-line keys apply to every process.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use regex::Regex;

use super::runtime::ContainerInfo;
use crate::config::Common;

/// What is known of a process's container when deciding.
pub enum Container<'a> {
    /// Not in a container.
    Host,
    /// In a container whose metadata is not known (yet).
    Unknown,
    Known(&'a ContainerInfo),
}

type Entries = Vec<(String, Option<Regex>)>;

#[derive(Default)]
pub struct Filter {
    include_labels: Entries,
    exclude_labels: Entries,
    include_k8s: Entries,
    exclude_k8s: Entries,
    include_envs: Entries,
    exclude_envs: Entries,
    include_cmd: Option<Regex>,
    exclude_cmd: Option<Regex>,
    include_name: Option<Regex>,
    exclude_name: Option<Regex>,
    include_pod: Option<Regex>,
    exclude_pod: Option<Regex>,
    include_namespace: Option<Regex>,
    exclude_namespace: Option<Regex>,
}

fn entries(map: &BTreeMap<String, String>, key: &str) -> Result<Entries> {
    map.iter()
        .map(|(k, v)| {
            let re = if v.is_empty() {
                None
            } else {
                Some(Regex::new(v).with_context(|| format!("Common.{key}.{k}: bad regular expression"))?)
            };
            Ok((k.clone(), re))
        })
        .collect()
}

fn regex(s: &str, key: &str) -> Result<Option<Regex>> {
    if s.is_empty() {
        return Ok(None);
    }
    Regex::new(s).map(Some).with_context(|| format!("Common.{key}: bad regular expression"))
}

fn any_entry(entries: &Entries, values: &BTreeMap<String, String>) -> bool {
    entries.iter().any(|(k, re)| values.get(k).is_some_and(|v| re.as_ref().is_none_or(|re| re.is_match(v))))
}

impl Filter {
    pub fn new(c: &Common) -> Result<Self> {
        // The keys as `Common` lists them (in that order).
        let [il, el, ik, ek, ie, ee] = c.filter_maps().map(|(key, map)| entries(map, key));
        let [ic, ec, iname, ename, ipod, epod, ins, ens] = c.filter_regexes().map(|(key, re)| regex(re, key));
        Ok(Self {
            include_labels: il?,
            exclude_labels: el?,
            include_k8s: ik?,
            exclude_k8s: ek?,
            include_envs: ie?,
            exclude_envs: ee?,
            include_cmd: ic?,
            exclude_cmd: ec?,
            include_name: iname?,
            exclude_name: ename?,
            include_pod: ipod?,
            exclude_pod: epod?,
            include_namespace: ins?,
            exclude_namespace: ens?,
        })
    }

    fn container_includes(&self) -> bool {
        !self.include_labels.is_empty()
            || !self.include_k8s.is_empty()
            || !self.include_envs.is_empty()
            || self.include_name.is_some()
            || self.include_pod.is_some()
            || self.include_namespace.is_some()
    }

    fn container_excludes(&self) -> bool {
        !self.exclude_labels.is_empty()
            || !self.exclude_k8s.is_empty()
            || !self.exclude_envs.is_empty()
            || self.exclude_name.is_some()
            || self.exclude_pod.is_some()
            || self.exclude_namespace.is_some()
    }

    /// True when no key is set: everything is kept.
    pub fn is_empty(&self) -> bool {
        !self.container_includes()
            && !self.container_excludes()
            && self.include_cmd.is_none()
            && self.exclude_cmd.is_none()
    }

    /// Keep the process? `None`: it depends on container metadata not
    /// known yet.
    pub fn decide(&self, cmd: &str, container: Container) -> Option<bool> {
        if self.include_cmd.as_ref().is_some_and(|re| !re.is_match(cmd))
            || self.exclude_cmd.as_ref().is_some_and(|re| re.is_match(cmd))
        {
            return Some(false);
        }
        match container {
            Container::Host => Some(!self.container_includes()),
            Container::Unknown if self.container_includes() || self.container_excludes() => None,
            Container::Unknown => Some(true),
            Container::Known(c) => Some(self.container_matches(c)),
        }
    }

    /// The decision when the metadata never came (runtime down): include
    /// filters cannot be satisfied, exclude filters cannot match.
    pub fn decide_without_metadata(&self, cmd: &str) -> bool {
        // Like a host process: container includes leave it out, container
        // excludes cannot match it.
        self.decide(cmd, Container::Host) == Some(true)
    }

    fn container_matches(&self, c: &ContainerInfo) -> bool {
        let name = c.display_name();
        let pod = c.pod_name().unwrap_or("");
        let ns = c.namespace().unwrap_or("");
        let re = |r: &Option<Regex>, v: &str| r.as_ref().map(|r| r.is_match(v));
        let includes = [
            (!self.include_labels.is_empty()).then(|| any_entry(&self.include_labels, &c.labels)),
            (!self.include_k8s.is_empty()).then(|| any_entry(&self.include_k8s, &c.labels)),
            (!self.include_envs.is_empty()).then(|| any_entry(&self.include_envs, &c.env)),
            re(&self.include_name, name),
            re(&self.include_pod, pod).map(|m| m && !pod.is_empty()),
            re(&self.include_namespace, ns).map(|m| m && !ns.is_empty()),
        ];
        let excludes = [
            any_entry(&self.exclude_labels, &c.labels),
            any_entry(&self.exclude_k8s, &c.labels),
            any_entry(&self.exclude_envs, &c.env),
            re(&self.exclude_name, name).unwrap_or(false),
            !pod.is_empty() && re(&self.exclude_pod, pod).unwrap_or(false),
            !ns.is_empty() && re(&self.exclude_namespace, ns).unwrap_or(false),
        ];
        includes.iter().all(|m| m.unwrap_or(true)) && !excludes.iter().any(|&m| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, labels: &[(&str, &str)], env: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "x".into(),
            name: name.into(),
            image: "img".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn filter(yaml: &str) -> Filter {
        let c: Common = serde_yaml_ng::from_str(yaml).unwrap();
        Filter::new(&c).unwrap()
    }

    #[test]
    fn includes_and_excludes_combine_as_documented() {
        let web = container("web", &[("app", "web"), ("io.kubernetes.pod.namespace", "shop")], &[("PORT", "80")]);
        let db = container("db", &[("app", "db")], &[("PORT", "5432")]);
        let f = filter("IncludeContainerLabels: {app: ^web$, tier: ''}");
        assert_eq!(f.decide("nginx", Container::Known(&web)), Some(true));
        assert_eq!(f.decide("pg", Container::Known(&db)), Some(false));
        assert_eq!(f.decide("sshd", Container::Host), Some(false), "container includes exclude the host");
        assert_eq!(f.decide("x", Container::Unknown), None, "waits for metadata");
        assert!(!f.decide_without_metadata("x"));
        let f = filter("ExcludeEnvs: {PORT: '^5432$'}");
        assert_eq!(f.decide("pg", Container::Known(&db)), Some(false));
        assert_eq!(f.decide("nginx", Container::Known(&web)), Some(true));
        assert_eq!(f.decide("sshd", Container::Host), Some(true), "container excludes never exclude the host");
        assert!(f.decide_without_metadata("x"));
        let f = filter("IncludeNamespaceNameRegex: ^shop$\nExcludeCmdRegex: debug");
        assert_eq!(f.decide("nginx", Container::Known(&web)), Some(true));
        assert_eq!(f.decide("nginx --debug", Container::Known(&web)), Some(false));
        assert_eq!(f.decide("pg", Container::Known(&db)), Some(false), "no namespace");
        let f = filter("IncludeCmdRegex: ^curl");
        assert_eq!(f.decide("curl x", Container::Host), Some(true));
        assert_eq!(f.decide("wget x", Container::Unknown), Some(false), "decided by the command alone");
        assert!(filter("{}").is_empty());
    }
}
