//! An independent decoder for the layer-7 tests: tshark (Wireshark's
//! dissectors) captures a test's own port on the loopback and counts the
//! transactions it decodes, per protocol, per connection side, to compare
//! with the daemon's records.
//!
//! Capture pitfalls (measured on tshark 4.0 here): "Capturing on 'lo'" is
//! printed before the capture runs (wait for "Capture started."); packets
//! still in the kernel's buffer are lost when tshark is stopped within
//! ~0.3 s of the last traffic (wait a second); the default 2 MB buffer
//! drops packets of fast loopback traffic (`-B 64`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running capture of one port (TCP and UDP) on the loopback.
pub struct Capture {
    child: Child,
    pub file: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

fn tshark() -> Command {
    let mut c = Command::new("tshark");
    c.env("LC_ALL", "C");
    c
}

impl Capture {
    /// Start capturing `port` and wait until packets are really captured.
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("capture.pcapng");
        let mut child = tshark()
            .args(["-q", "-B", "64", "-i", "lo", "-f", &format!("port {port}"), "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark (apt-get install tshark; scripts/setup.sh does it)");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let err = child.stderr.take().unwrap();
            let text = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if line.contains("Capture started.") {
                        let _ = tx.send(());
                    }
                    let mut t = text.lock().unwrap();
                    t.push_str(&line);
                    t.push('\n');
                }
            });
        }
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("tshark did not start capturing: {}", stderr.lock().unwrap());
        }
        Self { child, file, stderr, _dir: dir }
    }

    /// Stop (after the last packets reached the file) and check nothing was
    /// dropped.
    pub fn stop(self) -> Decoded {
        self.try_stop().unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Capture::stop`], saying why the capture cannot judge instead of
    /// failing: dumpcap dropped packets, or missed TCP segments (on a
    /// loaded machine it does, now and then). A test may then run its
    /// workload again.
    pub fn try_stop(mut self) -> Result<Decoded, String> {
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(30), "tshark did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        let err = self.stderr.lock().unwrap().clone();
        if err.contains("dropped") {
            return Err(format!("tshark dropped packets: the comparison would be wrong:\n{err}"));
        }
        // WIRELENS_KEEP_CAPTURE=DIR: keep a copy, to look at a mismatch.
        if let Some(keep) = std::env::var_os("WIRELENS_KEEP_CAPTURE") {
            let name = format!("capture-{}.pcapng", std::process::id());
            let _ = std::fs::copy(&self.file, std::path::Path::new(&keep).join(name));
        }
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let decoded = Decoded { file: self.file.clone(), _dir: dir };
        // A capture can miss segments without dumpcap counting a drop: a
        // PDU across the gap is then not decoded, and the comparison would
        // blame the daemon (a CI run once found a 300 KB MySQL row missing
        // from tshark's bytes, every call present). Said as what it is.
        let gaps = decoded.fields(&[], "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment", &["frame.number"]);
        if !gaps.is_empty() {
            return Err(format!(
                "the capture missed TCP segments (tshark marks frames {:?}): the comparison cannot tell\n{err}",
                gaps.iter().flatten().flatten().take(10).collect::<Vec<_>>()
            ));
        }
        Ok(decoded)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // A test that failed before `stop` leaves no capture behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished capture, to decode.
pub struct Decoded {
    file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Transactions of one side of a port, as the decoder counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls (requests answered or not, and one-way messages the daemon
    /// counts as calls).
    pub calls: u64,
    /// Calls that failed (error replies, status >= 400, error codes).
    pub failed: u64,
    /// Bytes of the messages the daemon counts as requests and responses.
    pub req_bytes: u64,
    pub resp_bytes: u64,
}

/// HTTP statuses (either version) of 400 and up among `codes`.
fn failed_statuses(codes: &[String]) -> u64 {
    codes.iter().filter(|c| c.parse::<u16>().is_ok_and(|c| c >= 400)).count() as u64
}

impl Decoded {
    /// `-T fields` output, one line per packet, fields separated by tabs and
    /// occurrences by `\x1f` (error texts hold commas).
    pub fn fields(&self, decode_as: &[String], filter: &str, fields: &[&str]) -> Vec<Vec<Vec<String>>> {
        self.fields_with(&[], decode_as, filter, fields)
    }

    /// [`Decoded::fields`] with more tshark options (`-o name:value`).
    fn fields_with(
        &self,
        options: &[String],
        decode_as: &[String],
        filter: &str,
        fields: &[&str],
    ) -> Vec<Vec<Vec<String>>> {
        let mut c = tshark();
        for o in options {
            c.args(["-o", o]);
        }
        c.arg("-r").arg(&self.file).args(["-Y", filter, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=\x1f"]);
        for d in decode_as {
            c.args(["-d", d]);
        }
        for f in fields {
            c.args(["-e", f]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "tshark -r: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                l.split('\t')
                    .map(|f| if f.is_empty() { vec![] } else { f.split('\x1f').map(String::from).collect() })
                    .collect()
            })
            .collect()
    }

    /// TCP payload bytes per direction, retransmissions left out:
    /// `(to the port, from the port)`.
    pub fn tcp_bytes(&self, port: u16) -> (u64, u64) {
        let rows = self.fields(&[], "tcp.len > 0 && !tcp.analysis.retransmission", &["tcp.dstport", "tcp.len"]);
        let mut out = (0, 0);
        for r in rows {
            let to_port = r[0].first().is_some_and(|p| p == &port.to_string());
            let len: u64 = r[1].first().and_then(|l| l.parse().ok()).unwrap_or(0);
            if to_port {
                out.0 += len;
            } else {
                out.1 += len;
            }
        }
        out
    }

    /// Redis: requests, error replies and bytes (every byte of RESP is a
    /// message), through `tests/e2e/resp_count.lua`.
    pub fn redis(&self, port: u16) -> Tally {
        let script = super::root().join("tests/e2e/resp_count.lua");
        let out = tshark()
            .arg("-q")
            .arg("-r")
            .arg(&self.file)
            .args(["-d", &format!("tcp.port=={port},resp"), "-X"])
            .arg(format!("lua_script:{}", script.display()))
            .env("RESP_PORT", port.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "tshark lua: {}", String::from_utf8_lossy(&out.stderr));
        let mut t = Tally::default();
        let (mut requests, mut replies) = (0, 0);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() != 4 {
                continue;
            }
            let (n, err): (u64, u64) = (w[2].parse().unwrap(), w[3].parse().unwrap());
            if w[1] == "req" {
                requests += n;
            } else {
                replies += n;
                t.failed += err;
            }
        }
        assert_eq!(requests, replies, "every request answered in the capture");
        t.calls = requests;
        (t.req_bytes, t.resp_bytes) = self.tcp_bytes(port);
        t
    }

    /// memcached, text and binary, one command per segment (tshark's text
    /// dissector reads the first command of a segment only): a call per
    /// command (one-way ones included); failed when a text reply is
    /// `ERROR`, `CLIENT_ERROR` or `SERVER_ERROR`, or a binary reply to a
    /// request that waits for one (not a quiet opcode or quit) has a status
    /// other than not found, exists and not stored. The text dissector
    /// (tshark 4.0) reads neither unknown commands nor error replies: those
    /// are found by tshark's regular expressions on the segments (a
    /// command line it did not read, a reply that starts with an error).
    /// Bytes: every byte is a message in the text protocol (binary replies
    /// to quit and quiet requests are not, so only text bytes mean
    /// anything here).
    pub fn memcached(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},memcache")];
        let mut t = Tally::default();
        let rows = self.fields(&d, "memcache", &["tcp.dstport", "memcache.command", "memcache.magic", "memcache.opcode", "memcache.status"]);
        for r in rows {
            let to_server = r[0].first().is_some_and(|p| p == &port.to_string());
            if to_server {
                t.calls += r[1].len() as u64 + r[2].iter().filter(|m| *m == "128").count() as u64;
                continue;
            }
            for ((magic, opcode), status) in r[2].iter().zip(&r[3]).zip(&r[4]) {
                let opcode: u8 = opcode.parse().unwrap_or(0);
                let quiet = matches!(opcode, 0x07 | 0x09 | 0x0d | 0x11..=0x1a | 0x1e | 0x24);
                if magic == "129" && !quiet && !matches!(status.as_str(), "0" | "1" | "2" | "5") {
                    t.failed += 1;
                }
            }
        }
        let unread_commands = format!(
            "!memcache.command && !memcache.magic && tcp.dstport=={port} && tcp.payload matches \"^[a-z_]+( [^\\r\\n]*)?\\r\\n$\""
        );
        t.calls += self.fields(&d, &unread_commands, &["frame.number"]).len() as u64;
        let error_replies = format!("tcp.srcport=={port} && tcp.payload matches \"^(CLIENT_|SERVER_)?ERROR\"");
        t.failed += self.fields(&d, &error_replies, &["frame.number"]).len() as u64;
        (t.req_bytes, t.resp_bytes) = self.tcp_bytes(port);
        t
    }

    /// MQTT: a call per packet the client sends that is not an
    /// acknowledgement of a delivery (CONNECT, PUBLISH at any QoS, PUBREL,
    /// SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH), and per PUBLISH,
    /// DISCONNECT and AUTH the server sends; failed when the server's
    /// CONNACK refuses (3.1.1 return code not 0, 5.0 reason code 0x80 and
    /// up) or an acknowledgement carries a reason or return code of 0x80 and
    /// up. No bytes (acknowledgements of deliveries are no messages).
    pub fn mqtt(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},mqtt")];
        let mut t = Tally::default();
        let fields = [
            "tcp.dstport",
            "mqtt.msgtype",
            "mqtt.conack.val",
            "mqtt.connack.reason_code",
            "mqtt.puback.reason_code",
            "mqtt.pubrec.reason_code",
            "mqtt.pubcomp.reason_code",
            "mqtt.suback.qos",
            "mqtt.suback.reason_code",
            "mqtt.unsuback.reason_code",
        ];
        for r in self.fields(&d, "mqtt", &fields) {
            let to_server = r[0].first().is_some_and(|p| p == &port.to_string());
            for kind in r[1].iter().filter_map(|k| k.parse::<u8>().ok()) {
                let call = if to_server { matches!(kind, 1 | 3 | 6 | 8 | 10 | 12 | 14 | 15) } else { matches!(kind, 3 | 14 | 15) };
                t.calls += u64::from(call);
            }
            if to_server {
                continue;
            }
            let code = |v: &String| v.parse::<u16>().unwrap_or(0);
            t.failed += r[2].iter().filter(|v| code(v) != 0).count() as u64;
            t.failed += r[3..].iter().flatten().filter(|v| code(v) >= 0x80).count() as u64;
        }
        t
    }

    /// Kafka: a call per request (its API key read by tshark; Produce with
    /// acks=0 is one, unanswered), bytes (every byte is a message's but the
    /// answers a broker gives to acks=0 anyway, as Tansu does). Failed:
    /// ApiVersions responses with a non-zero error code only (tshark 4.0
    /// misreads the error codes of flexible versions' other responses, so
    /// they are not counted here). Also the calls by API key.
    pub fn kafka(&self, port: u16) -> (Tally, std::collections::BTreeMap<String, u64>) {
        let d = vec![format!("tcp.port=={port},kafka")];
        let mut t = Tally::default();
        let mut by_key = std::collections::BTreeMap::new();
        let rows = self.fields(
            &d,
            "kafka",
            &["tcp.stream", "tcp.dstport", "kafka.api_key", "kafka.error", "kafka.correlation_id", "kafka.required_acks", "tcp.len"],
        );
        let mut fire_and_forget = std::collections::HashSet::new();
        let mut answered_anyway = 0u64;
        for r in rows {
            let stream = r[0].first().cloned().unwrap_or_default();
            let to_server = r[1].first().is_some_and(|p| p == &port.to_string());
            if to_server {
                for key in &r[2] {
                    t.calls += 1;
                    *by_key.entry(key.clone()).or_default() += 1;
                }
                for (acks, corr) in r[5].iter().zip(&r[4]) {
                    if acks == "0" {
                        fire_and_forget.insert((stream.clone(), corr.clone()));
                    }
                }
            } else {
                if r[2].first().is_some_and(|k| k == "18") {
                    t.failed += r[3].iter().filter(|e| *e != "0").count() as u64;
                }
                if r[4].len() == 1 && fire_and_forget.contains(&(stream, r[4][0].clone())) {
                    answered_anyway += r[6].first().and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
                }
            }
        }
        (t.req_bytes, t.resp_bytes) = self.tcp_bytes(port);
        t.resp_bytes -= answered_anyway;
        (t, by_key)
    }

    /// AMQP 0-9-1: a call per method frame the client sends but its
    /// answers to the server's handshake and closes (start-ok, secure-ok,
    /// tune-ok, close-ok), and per one-way method frame the server sends
    /// (connection.start, secure, tune, blocked, unblocked, basic.return,
    /// deliver, ack, nack); failed: a close from the server with a reply
    /// code other than 200 (it answers the request waiting on its channel,
    /// so it is no call of its own). No bytes (heartbeats and the protocol
    /// header are no messages).
    pub fn amqp(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},amqp")];
        let mut t = Tally::default();
        let rows = self.fields(
            &d,
            "amqp.method.class",
            &["tcp.dstport", "amqp.method.class", "amqp.method.method", "amqp.method.arguments.reply_code"],
        );
        for r in rows {
            let to_server = r[0].first().is_some_and(|p| p == &port.to_string());
            for (class, method) in r[1].iter().zip(&r[2]) {
                let m = (class.parse::<u16>().unwrap_or(0), method.parse::<u16>().unwrap_or(0));
                let call = if to_server {
                    !matches!(m, (10, 11 | 21 | 31 | 51) | (20, 41))
                } else {
                    matches!(m, (10, 10 | 20 | 30 | 60 | 61) | (60, 50 | 60 | 80 | 120))
                };
                t.calls += u64::from(call);
            }
            if !to_server {
                t.failed += r[3].iter().filter(|c| *c != "200").count() as u64;
            }
        }
        t
    }

    /// HTTP: requests, responses of status 400 and up, bytes (every byte is
    /// a message; interim 1xx responses are not calls and not used here).
    pub fn http(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},http")];
        let mut t = Tally::default();
        for r in self.fields(&d, "http", &["http.request.method", "http.response.code"]) {
            t.calls += r[0].len() as u64;
            t.failed += failed_statuses(&r[1]);
        }
        (t.req_bytes, t.resp_bytes) = self.tcp_bytes(port);
        t
    }

    /// HTTP/2 in the clear: a call per stream whose request headers carry
    /// `:method`; failed when its `:status` is 400 and up or its
    /// `grpc-status` is not 0. No bytes (frames of no call, like SETTINGS
    /// and WINDOW_UPDATE, share the segments).
    pub fn http2(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},http2")];
        let mut t = Tally::default();
        let rows = self.fields(
            &d,
            "http2.type == 1",
            &["http2.headers.method", "http2.headers.status", "http2.header.name", "http2.header.value"],
        );
        for r in rows {
            t.calls += r[0].len() as u64;
            t.failed += failed_statuses(&r[1]);
            // Names and values pair by position; a header block may carry
            // several frames' headers.
            for (name, value) in r[2].iter().zip(&r[3]) {
                if name == "grpc-status" && value != "0" {
                    t.failed += 1;
                }
            }
        }
        t
    }

    /// HTTP/1.1 that may upgrade to h2c: a call per HTTP/1 request and per
    /// HTTP/2 request headers (`:method`); failed when the status (either
    /// version) is 400 and up. No bytes.
    pub fn http_h2c(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},http")];
        let mut t = Tally::default();
        let fields = ["http.request.method", "http2.headers.method", "http.response.code", "http2.headers.status"];
        for r in self.fields(&d, "http.request || http.response || http2.type == 1", &fields) {
            t.calls += (r[0].len() + r[1].len()) as u64;
            t.failed += failed_statuses(&r[2]) + failed_statuses(&r[3]);
        }
        t
    }

    /// HTTP over TLS, decrypted with the session keys the client wrote
    /// (`SSLKEYLOGFILE`): requests and responses of status 400 and up. No
    /// bytes: those on the wire are ciphertext.
    pub fn https(&self, port: u16, keylog: &std::path::Path) -> Tally {
        let options = vec![format!("tls.keylog_file:{}", keylog.display())];
        let d = vec![format!("tcp.port=={port},tls")];
        let mut t = Tally::default();
        for r in self.fields_with(&options, &d, "http", &["http.request.method", "http.response.code"]) {
            t.calls += r[0].len() as u64;
            t.failed += failed_statuses(&r[1]);
        }
        t
    }

    /// PostgreSQL: a call per startup, simple query, Sync-ended batch,
    /// function call and Terminate; a failed call per Error; bytes of those
    /// messages (not of SSL requests and their one-byte answers, passwords
    /// or COPY data from the client, which are no requests).
    pub fn pgsql(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},pgsql")];
        let mut t = Tally::default();
        let rows = self.fields(&d, "pgsql", &["pgsql.frontend", "pgsql.type", "pgsql.length"]);
        for r in rows {
            for (i, kind) in r[1].iter().enumerate() {
                let frontend = r[0].get(i).or(r[0].first()).is_some_and(|f| f == "1" || f == "True");
                let len: u64 = r[2].get(i).and_then(|l| l.parse().ok()).unwrap_or(0);
                let untyped = matches!(
                    kind.as_str(),
                    "Startup message" | "SSL request" | "GSS encrypt request" | "Cancel request"
                );
                let wire = if untyped { len } else { len + 1 };
                if frontend {
                    match kind.as_str() {
                        "Startup message" | "Simple query" | "Sync" | "Function call" | "Termination" => {
                            t.calls += 1;
                            t.req_bytes += wire;
                        }
                        "SSL request"
                        | "GSS encrypt request"
                        | "Copy data"
                        | "Copy completion"
                        | "Copy failure"
                        | "Password message"
                        | "SASL initial response"
                        | "SASL response" => {}
                        _ => t.req_bytes += wire, // Parse, Bind, Describe, Execute, Close, Flush
                    }
                } else {
                    if kind == "Error" {
                        t.failed += 1;
                    }
                    t.resp_bytes += wire;
                }
            }
        }
        t
    }

    /// MySQL/MariaDB: a call per login (a client packet naming the user)
    /// and per command (QUIT and STMT_CLOSE,
    /// which get no answer, count as one-way calls); a failed call per ERR
    /// packet; bytes of every packet but the server's greeting.
    pub fn mysql(&self, port: u16) -> Tally {
        let d = vec![format!("tcp.port=={port},mysql")];
        let mut t = Tally::default();
        let rows = self.fields(
            &d,
            "mysql",
            &[
                "tcp.dstport",
                "mysql.command",
                "mysql.error_code",
                "mysql.packet_length",
                "mysql.protocol",
                "mysql.user",
            ],
        );
        for r in rows {
            let to_server = r[0].first().is_some_and(|p| p == &port.to_string());
            let packets: u64 = r[3].iter().filter_map(|l| l.parse::<u64>().ok()).map(|l| l + 4).sum();
            if to_server {
                t.calls += r[1].len() as u64 + r[5].len() as u64;
                t.req_bytes += packets;
            } else {
                t.failed += r[2].len() as u64;
                let greeting: u64 = if r[4].is_empty() { 0 } else { packets };
                t.resp_bytes += packets - greeting;
            }
        }
        t
    }

    /// DNS over UDP and TCP: queries, responses whose rcode is not 0, bytes
    /// (TCP messages with their length prefix).
    pub fn dns(&self, port: u16) -> Tally {
        let d = vec![format!("udp.port=={port},dns"), format!("tcp.port=={port},dns")];
        let mut t = Tally::default();
        let rows = self.fields(&d, "dns", &["dns.flags.response", "dns.flags.rcode", "udp.length", "dns.length"]);
        for r in rows {
            for (i, resp) in r[0].iter().enumerate() {
                let response = resp == "1" || resp == "True";
                let size: u64 = match r[3].get(i) {
                    Some(len) => len.parse::<u64>().unwrap_or(0) + 2,
                    None => r[2].first().and_then(|l| l.parse::<u64>().ok()).map(|l| l - 8).unwrap_or(0),
                };
                if response {
                    t.resp_bytes += size;
                    if r[1].get(i).is_some_and(|c| c != "0") {
                        t.failed += 1;
                    }
                } else {
                    t.calls += 1;
                    t.req_bytes += size;
                }
            }
        }
        t
    }
}

/// The daemon's view of the same traffic: `protocols` records matching
/// `side`, summed. Unknown outcomes are counted apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub calls: u64,
    pub failed: u64,
    pub unknown: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
}

pub fn observed(records: &[serde_json::Value], protocol: &str, side: impl Fn(&serde_json::Value) -> bool) -> Observed {
    let mut o = Observed::default();
    for r in records.iter().filter(|r| r["type"] == "protocols" && r["protocol"] == protocol && side(r)) {
        let n = super::daemon::num(r, "total_count");
        o.calls += n;
        match r["success"].as_str() {
            Some("0") => o.failed += n,
            Some("unknown") => o.unknown += n,
            _ => {}
        }
        o.req_bytes += super::daemon::num(r, "total_req_bytes");
        o.resp_bytes += super::daemon::num(r, "total_resp_bytes");
    }
    o
}

/// The daemon agrees with the decoder: every call counted, no failure that
/// was not one (outcomes the capture lost are unknown, never failures), and
/// the sizes add up.
pub fn assert_agree(what: &str, daemon: Observed, decoder: Tally) {
    assert_eq!(daemon.calls, decoder.calls, "{what}: calls (daemon {daemon:?}, tshark {decoder:?})");
    assert!(
        daemon.failed <= decoder.failed && daemon.failed + daemon.unknown >= decoder.failed,
        "{what}: failures (daemon {daemon:?}, tshark {decoder:?})"
    );
    assert_eq!(
        (daemon.req_bytes, daemon.resp_bytes),
        (decoder.req_bytes, decoder.resp_bytes),
        "{what}: request and response bytes (daemon {daemon:?}, tshark {decoder:?})"
    );
}
