//! A real Prometheus (Debian's) scraping one target, and instant queries
//! against it.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::servers::free_port;

/// Prometheus from Debian, scraping its targets every second.
pub struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: &str) -> Self {
        Self::start_targets(&[target])
    }

    /// Scraping several targets (`host:port`) in one job.
    pub fn start_targets(targets: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("prometheus.yml");
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &conf,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wirelens\n    static_configs:\n      - targets: [{list}]\n"),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus; scripts/setup.sh does it)");
        Self { port, child, _dir: dir }
    }

    /// The value of an instant query's first result, if any.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let v = self.query_raw(promql)?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// An instant query's whole answer (`status`, `data` or `error`), if
    /// Prometheus answered.
    pub fn query_raw(&self, promql: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-s", "--get", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
