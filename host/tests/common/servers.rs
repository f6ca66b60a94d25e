//! Real servers from Debian for the end-to-end tests, each on a free
//! loopback port in its own temporary directory, stopped on drop. A missing
//! server fails the test with the package to install (scripts/setup.sh
//! installs them all).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Sum of `total_count` over `protocols` records of `protocol` matching `pred`.
pub fn calls(records: &[Value], protocol: &str, pred: impl Fn(&Value) -> bool) -> u64 {
    super::daemon::l7_total(records, protocol, "total_count", pred)
}

/// The record is the client side of a connection to `port` on this host.
pub fn client_of(r: &Value, port: u16) -> bool {
    r["role"] == "client"
        && super::daemon::remote(r)["remote_port"].as_str().and_then(|p| p.parse::<u16>().ok()) == Some(port)
}

/// The record's process command line contains `what`.
pub fn cmd_has(r: &Value, what: &str) -> bool {
    r["_process_cmd_"].as_str().unwrap_or("").contains(what)
}

fn spawn(cmd: &mut Command, package: &str) -> Child {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install {package}; scripts/setup.sh does it)"))
}

fn run(cmd: &mut Command, package: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().unwrap_or_else(|e| panic!("{program}: {e} (apt-get install {package}; scripts/setup.sh does it)"))
}

/// Retry `ready` for up to 30 s.
fn wait_ready(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not become ready within 30 s");
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Send `signal` to our child, give it `limit` to exit, then kill it.
pub fn shut_down(child: &mut Child, signal: i32, limit: Duration) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
}

/// MariaDB with a fresh data directory; root logs in without a password.
pub struct MariaDb {
    pub port: u16,
    pub child: Child,
    /// Requiring TLS (`require_secure_transport`): the client connects with `--ssl`.
    pub tls: bool,
    dir: tempfile::TempDir,
}

impl MariaDb {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same requiring TLS, with `cert`.
    pub fn start_tls(cert: &Cert) -> Self {
        Self::start_with(Some(cert))
    }

    fn start_with(cert: Option<&Cert>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = run(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display())),
            "mariadb-server",
        );
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let tls: Vec<String> = match cert {
            Some(c) => vec![
                format!("--ssl-cert={}", c.cert.display()),
                format!("--ssl-key={}", c.key.display()),
                "--require-secure-transport=ON".into(),
            ],
            None => vec![],
        };
        let child = spawn(
            Command::new("mariadbd")
                .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
                .args(&tls)
                .args(["--innodb-buffer-pool-size=16M", "--skip-name-resolve"])
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--port={port}")),
            "mariadb-server",
        );
        let s = Self { port, child, tls: cert.is_some(), dir };
        wait_ready("mariadbd", || s.sql("SELECT 1").status.success());
        s
    }

    /// Run statements with the mariadb client (continuing past errors).
    pub fn sql(&self, statements: &str) -> Output {
        run(
            Command::new("mariadb").args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-uroot",
                "--force",
                if self.tls { "--ssl" } else { "--skip-ssl" },
                "-e",
                statements,
            ]),
            "mariadb-client",
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// PostgreSQL with a fresh cluster (trust authentication), run as the
/// `postgres` user the Debian package creates: the server refuses root.
pub struct Postgres {
    pub port: u16,
    pub child: Child,
    /// Serving TLS (`ssl=on`): psql and pgbench connect with `sslmode=require`.
    pub tls: bool,
    _dir: tempfile::TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").args([flag, "postgres"]), "postgresql");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no postgres user: apt-get install postgresql (scripts/setup.sh does it)"))
    };
    (id("-u"), id("-g"))
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same with `ssl=on` and `cert`.
    pub fn start_tls(cert: &Cert) -> Self {
        Self::start_with(Some(cert))
    }

    fn start_with(cert: Option<&Cert>) -> Self {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_user();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let out = run(
            Command::new(format!("{PG_BIN}/initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data)
                .uid(uid)
                .gid(gid),
            "postgresql",
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        // The server reads its key as its own user, and only from a file
        // no one else may read.
        let mut ssl = vec!["-c".to_string(), "ssl=off".to_string()];
        if let Some(c) = cert {
            let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            for (from, to) in [(&c.cert, &cert_file), (&c.key, &key_file)] {
                std::fs::copy(from, to).unwrap();
                std::os::unix::fs::chown(to, Some(uid), Some(gid)).unwrap();
                std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            }
            ssl = [
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", cert_file.display()),
                format!("ssl_key_file={}", key_file.display()),
            ]
            .into_iter()
            .flat_map(|o| ["-c".to_string(), o])
            .collect();
        }
        let child = spawn(
            Command::new(format!("{PG_BIN}/postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(&ssl)
                .uid(uid)
                .gid(gid),
            "postgresql",
        );
        let s = Self { port, child, tls: cert.is_some(), _dir: dir };
        wait_ready("postgres", || s.psql(&["-c", "SELECT 1"]).status.success());
        s
    }

    /// Run psql with these arguments against the server.
    pub fn psql(&self, args: &[&str]) -> Output {
        run(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-X", "-q"])
                .env("PGSSLMODE", if self.tls { "require" } else { "disable" })
                .args(args),
            "postgresql-client",
        )
    }

    /// `pgbench -i -s 1`: the tables pgbench and the sample queries use.
    pub fn init_pgbench(&self) {
        let init = self.pgbench(&["-i", "-s", "1", "-q", "postgres"]);
        assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }

    /// psql's sample: two counts of pgbench_branches and a query of a
    /// missing table (which fails, SQLSTATE 42P01).
    pub fn psql_sample(&self) {
        let psql = self.psql(&[
            "-c",
            "SELECT count(*) FROM pgbench_branches WHERE bid = 1",
            "-c",
            "SELECT count(*) FROM pgbench_branches WHERE bid = 2",
            "-c",
            "SELECT * FROM missing_table",
        ]);
        assert!(String::from_utf8_lossy(&psql.stderr).contains("missing_table"), "the bad query fails");
    }

    /// pgbench's default transaction 10 times, with the simple protocol
    /// then the extended one (one client).
    pub fn pgbench_both_protocols(&self) {
        for mode in ["simple", "extended"] {
            let bench = self.pgbench(&["-M", mode, "-t", "10", "-c", "1", "-n", "postgres"]);
            assert!(bench.status.success(), "pgbench -M {mode}: {}", String::from_utf8_lossy(&bench.stderr));
        }
    }

    /// Run pgbench with these arguments against the server.
    pub fn pgbench(&self, args: &[&str]) -> Output {
        run(
            Command::new("pgbench")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .env("PGSSLMODE", if self.tls { "require" } else { "disable" })
                .args(args),
            "postgresql-contrib",
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is the postmaster's "fast" shutdown: it stops its backends too.
        shut_down(&mut self.child, libc::SIGINT, Duration::from_secs(10));
    }
}

/// nginx serving `root` with one worker; `/echo` answers 201.
pub struct Nginx {
    pub port: u16,
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(root: &Path) -> Self {
        Self::start_with(root, None)
    }

    /// The same over HTTPS, with `cert` (from [`self_signed`]).
    pub fn start_tls(root: &Path, cert: &Cert) -> Self {
        Self::start_with(root, Some(cert))
    }

    /// nginx speaking HTTP/2 in the clear (prior knowledge: clients start
    /// with the preface).
    pub fn start_h2c(root: &Path) -> Self {
        Self::start_listening(root, " http2")
    }

    /// [`Nginx::start_h2c`], where `/demo.Store/Slow` answers after 3 s
    /// (the echo module's `echo_sleep`: libnginx-mod-http-echo, which
    /// scripts/setup.sh installs).
    pub fn start_h2c_slow(root: &Path) -> Self {
        let module = "/usr/lib/nginx/modules/ngx_http_echo_module.so";
        assert!(Path::new(module).exists(), "{module}: apt-get install libnginx-mod-http-echo (scripts/setup.sh)");
        Self::start_configured(
            root,
            " http2",
            &format!("load_module {module};"),
            "location /demo.Store/Slow { echo_sleep 3; echo late; }",
        )
    }

    /// nginx speaking HTTP/2 over TLS (ALPN h2), with `cert`.
    pub fn start_tls_h2(root: &Path, cert: &Cert) -> Self {
        let tls =
            format!(" ssl http2; ssl_certificate {}; ssl_certificate_key {}", cert.cert.display(), cert.key.display());
        Self::start_listening(root, &tls)
    }

    fn start_with(root: &Path, cert: Option<&Cert>) -> Self {
        let tls = match cert {
            Some(c) => format!(" ssl; ssl_certificate {}; ssl_certificate_key {}", c.cert.display(), c.key.display()),
            None => String::new(),
        };
        Self::start_listening(root, &tls)
    }

    /// nginx with `listen 127.0.0.1:PORT{tls}`.
    fn start_listening(root: &Path, tls: &str) -> Self {
        Self::start_configured(root, tls, "", "")
    }

    /// ... with `main` at the top of the configuration and `locations`
    /// in the server.
    fn start_configured(root: &Path, tls: &str, main: &str, locations: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "{main} daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
             uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}{tls}; root {}; location /echo {{ return 201 \"created\\n\"; }}\n\
             location /gz/ {{ gzip on; gzip_types *; gzip_min_length 0; }}\n\
             location /wide {{ add_header X-Pad \"{}\"; return 200 \"wide\\n\"; }} {locations} }} }}\n",
            root.display(),
            // A response head longer than the HTTP plugin copies (512 bytes).
            "p".repeat(800)
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = spawn(Command::new("nginx").arg("-c").arg(&conf_path).arg("-p").arg(dir.path()), "nginx-light");
        let s = Self { port, child, _dir: dir };
        wait_ready("nginx", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        s
    }
}

/// A self-signed certificate for `localhost` and its key.
pub struct Cert {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Make a self-signed certificate (RSA 2048, one day) with openssl.
pub fn self_signed() -> Cert {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl",
    );
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    Cert { cert, key, _dir: dir }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A loopback port free for both TCP and UDP right now (outside the
/// ephemeral range, so clients do not take it in the meantime).
pub fn free_port() -> u16 {
    // Tests of this binary run in parallel: each call starts elsewhere.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let first = 20000 + ((std::process::id() % 4000) as u16 + call.wrapping_mul(997)) % 9000;
    for port in (first..30000).step_by(7).chain((20000..first).step_by(7)) {
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 30000");
}

/// A redis-server on loopback, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    pub child: Child,
    /// Serving TLS only: redis-cli and redis-benchmark connect with `--tls`.
    pub tls: bool,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same serving TLS only (`--tls-port`, no client certificates).
    pub fn start_tls(cert: &Cert) -> Self {
        Self::start_with(Some(cert))
    }

    fn start_with(cert: Option<&Cert>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        match cert {
            None => cmd.args(["--port", &port.to_string()]),
            Some(c) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(&c.cert)
                .arg("--tls-key-file")
                .arg(&c.key),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server; scripts/setup.sh does it)");
        let s = Self { port, child, tls: cert.is_some(), _dir: dir };
        for _ in 0..100 {
            if s.cli(&["PING"]).trim() == "PONG" {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer on port {port}");
    }

    /// `--tls --insecure` first when the server serves TLS.
    pub fn tls_args(&self) -> &'static [&'static str] {
        if self.tls {
            &["--tls", "--insecure"]
        } else {
            &[]
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(self.tls_args())
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Docker engine started by the test (bridge, iptables and forwarding
/// off: containers use the host network), on the default socket
/// `/var/run/docker.sock`, with a busybox image imported. Stopped (with its
/// containers) on drop.
pub struct DockerEngine {
    child: Child,
    dir: tempfile::TempDir,
    containers: Vec<String>,
}

pub const BUSYBOX_IMAGE: &str = "wirelens-busybox:test";

impl DockerEngine {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A leftover engine from an interrupted run would hold the socket.
        let _ = Command::new("pkill").args(["-x", "dockerd"]).status();
        std::thread::sleep(Duration::from_millis(300));
        let child = spawn(
            Command::new("dockerd")
                .args(["-H", "unix:///var/run/docker.sock", "--bridge=none", "--iptables=false"])
                .args(["--ip6tables=false", "--ip-forward=false", "--ip-masq=false"])
                .arg(format!("--data-root={}", d.join("root").display()))
                .arg(format!("--exec-root={}", d.join("exec").display()))
                .arg(format!("--pidfile={}", d.join("dockerd.pid").display())),
            "docker.io",
        );
        let engine = Self { child, dir, containers: Vec::new() };
        wait_ready("dockerd", || Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()));
        // The image: busybox (static) as / with the applets the tests use.
        let rootfs = engine.dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("/bin/busybox (apt-get install busybox-static; scripts/setup.sh does it)");
        for applet in ["sh", "nc", "sleep", "printf", "wget"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let import = format!("tar -C {} -c . | docker import - {BUSYBOX_IMAGE}", rootfs.display());
        let out = run(Command::new("sh").args(["-c", &import]), "docker.io");
        assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
        engine
    }

    /// `docker run -d --network host ARGS... IMAGE sh -c SCRIPT`; returns the id.
    pub fn run(&mut self, args: &[&str], script: &str) -> String {
        self.run_image(BUSYBOX_IMAGE, args, script)
    }

    /// An image `name`: busybox, and these host programs with every shared
    /// library `ldd` names for them (copies: in a container they are other
    /// files than the host's).
    pub fn import_with(&self, name: &str, programs: &[&str]) {
        let rootfs = self.dir.path().join(name.replace([':', '/'], "-"));
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        for program in programs {
            let path = String::from_utf8(
                run(Command::new("sh").args(["-c", &format!("command -v {program}")]), program).stdout,
            )
            .unwrap();
            let ldd = String::from_utf8(run(Command::new("ldd").arg(path.trim()), "libc-bin").stdout).unwrap();
            // `name => /path (addr)` and `/lib64/ld-linux-x86-64.so.2 (addr)`.
            let libs =
                ldd.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(str::to_string));
            for file in std::iter::once(path.trim().to_string()).chain(libs) {
                let to = rootfs.join(file.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&file, &to).unwrap_or_else(|e| panic!("copying {file}: {e}"));
            }
        }
        let import = format!("tar -C {} -c . | docker import - {name}", rootfs.display());
        let out = run(Command::new("sh").args(["-c", &import]), "docker.io");
        assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `docker run -d --network host ARGS... IMAGE sh -c SCRIPT`; returns the id.
    pub fn run_image(&mut self, image: &str, args: &[&str], script: &str) -> String {
        self.run_command(image, args, &["sh", "-c", script])
    }

    /// `docker run -d --network host ARGS... IMAGE COMMAND...`; returns the id.
    pub fn run_command(&mut self, image: &str, args: &[&str], command: &[&str]) -> String {
        let out = run(
            Command::new("docker").args(["run", "-d", "--network", "host"]).args(args).arg(image).args(command),
            "docker.io",
        );
        assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.containers.push(id.clone());
        id
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f"]).args(&self.containers).output();
        }
        // SIGTERM: dockerd cleans up its mounts.
        shut_down(&mut self.child, libc::SIGTERM, Duration::from_secs(15));
        let exec = self.dir.path().join("exec");
        let _ = Command::new("sh")
            .args(["-c", &format!("grep -o '{}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l", exec.display())])
            .status();
    }
}

/// Python's HTTP server on a free loopback port, serving `dir`.
pub fn http_server(dir: &std::path::Path) -> (Child, u16) {
    let mut server = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port = line.split(" port ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    (server, port)
}

/// dnsmasq on 127.0.0.1:`port`, answering `*.x.test` with 1.2.3.4.
pub fn dnsmasq(port: u16) -> Child {
    Command::new("dnsmasq")
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root", "--pid-file="])
        .args(["--listen-address", "127.0.0.1", "--address=/x.test/1.2.3.4"])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (apt-get install dnsmasq-base; scripts/setup.sh does it)")
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): status and body, or `None`
/// when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// memcached on loopback (TCP only), stopped on drop.
pub struct Memcached {
    pub port: u16,
    pub child: Child,
}

impl Memcached {
    pub fn start() -> Self {
        let port = free_port();
        let child = spawn(
            Command::new("memcached").args(["-l", "127.0.0.1", "-U", "0", "-u", "nobody", "-p", &port.to_string()]),
            "memcached",
        );
        wait_ready("memcached", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Self { port, child }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// nats-server on loopback, stopped on drop.
pub struct NatsServer {
    pub port: u16,
    pub child: Child,
}

impl NatsServer {
    pub fn start() -> Self {
        let port = free_port();
        let child = spawn(Command::new("nats-server").args(["-a", "127.0.0.1", "-p", &port.to_string()]), "nats-server");
        wait_ready("nats-server", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Self { port, child }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// mosquitto on loopback with two listeners: `port` lets anyone in,
/// `closed_port` refuses clients without a password (every test client).
/// Stopped on drop.
pub struct Mosquitto {
    pub port: u16,
    pub closed_port: u16,
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, closed_port) = (free_port(), free_port());
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
                 listener {closed_port} 127.0.0.1\nallow_anonymous false\n"
            ),
        )
        .unwrap();
        let child = spawn(Command::new("mosquitto").arg("-c").arg(&conf), "mosquitto mosquitto-clients");
        wait_ready("mosquitto", || {
            [port, closed_port].iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        Self { port, closed_port, child, _dir: dir }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Tansu, a Kafka-compatible broker (in memory), on loopback; stopped on
/// drop.
pub struct Tansu {
    pub port: u16,
    pub child: Child,
}

impl Tansu {
    pub fn start() -> Self {
        let tansu = Self::start_on(free_port());
        wait_ready("tansu", || std::net::TcpStream::connect(("127.0.0.1", tansu.port)).is_ok());
        tansu
    }

    /// Started on `port`, without waiting for it to listen (a test of a
    /// client that starts first).
    pub fn start_on(port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = spawn(
            Command::new("tansu").args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ]),
            "tansu (scripts/setup.sh installs it in /usr/local/bin)",
        );
        Self { port, child }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A RabbitMQ node of its own (name, ports and data under a temporary
/// directory the rabbitmq user owns: the Debian wrapper runs the broker as
/// that user), on loopback; stopped on drop. Starting takes about 10 s.
pub struct RabbitMq {
    pub port: u16,
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl RabbitMq {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("enabled_plugins"), "[].").unwrap();
        let chown = Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(d).status().unwrap();
        assert!(chown.success(), "chown rabbitmq (apt-get install rabbitmq-server; scripts/setup.sh does it)");
        let (port, dist) = (free_port(), free_port());
        let child = spawn(
            Command::new("rabbitmq-server")
                .env("RABBITMQ_NODENAME", format!("wl{port}@localhost"))
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", d.join("log"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
                .env("RABBITMQ_PID_FILE", d.join("pid")),
            "rabbitmq-server",
        );
        wait_ready("rabbitmq-server", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Self { port, child, _dir: dir }
    }

    /// The broker's own process (beam.smp, under the wrapper scripts and
    /// `su`): the one listening on the port.
    pub fn broker_pid(&self) -> u32 {
        let out = Command::new("ss").args(["-Hltnp", &format!("sport = :{}", self.port)]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text.find("pid=").expect("the RabbitMQ node listens") + 4;
        text[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        // The node itself, then its wrapper (epmd, shared, stays).
        let pid = self.broker_pid();
        let _ = Command::new("kill").arg(pid.to_string()).status();
        stop(&mut self.child);
    }
}
