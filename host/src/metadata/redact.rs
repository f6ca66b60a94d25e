//! Secrets in command lines become `***` before anything downstream (the
//! filters, processors and flushers) sees them.
//!
//! Built-in rules cover the usual ways programs take secrets on their
//! command line:
//! - `--password=X` / `--password X` (and `--passwd`, `--pass`, `--token`,
//!   `--secret`, `--api-key`, `--apikey`, `--access-key`, `--secret-key`,
//!   `--auth`) for any program;
//! - `-pX` for the MySQL and MariaDB clients (`-p` alone asks at the prompt);
//! - `-a X` (and `--pass X`, `--user X --pass X`) for redis-cli and
//!   redis-benchmark;
//! - `NAME=X` assignments where NAME ends in `PASSWORD`, `PASSWD`, `TOKEN`,
//!   `SECRET`, `_PWD` or `_AUTH` (`env PGPASSWORD=x psql`, `MYSQL_PWD=x`,
//!   `REDISCLI_AUTH=x`);
//! - passwords in URLs: `scheme://user:X@host`.
//!
//! More can be configured (`Wirelens.RedactPatterns`: regular expressions
//! whose first capture group, or whole match, is replaced), and all of it
//! turned off (`Wirelens.RedactCmdline: false`).

use regex::Regex;

/// The mask that replaces a secret.
pub const MASK: &str = "***";

/// Options that take a secret, for every program.
const SECRET_OPTIONS: &[&str] = &[
    "--password",
    "--passwd",
    "--pass",
    "--token",
    "--secret",
    "--api-key",
    "--apikey",
    "--access-key",
    "--secret-key",
    "--auth",
];

/// Programs whose `-pSECRET` is a password (attached to the flag).
const MYSQL_CLIENTS: &[&str] = &[
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlshow",
    "mysqlcheck",
    "mysqlslap",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
    "mariadb-import",
    "mariadb-show",
    "mariadb-check",
    "mariadb-slap",
];

/// Programs whose `-a SECRET` is a password.
const REDIS_CLIENTS: &[&str] = &["redis-cli", "redis-benchmark", "valkey-cli", "keydb-cli"];

/// The redaction rules in force.
#[derive(Clone, Debug)]
pub struct Redactor {
    enabled: bool,
    extra: Vec<Regex>,
    url: Regex,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(true, &[]).expect("no extra patterns")
    }
}

impl Redactor {
    /// The built-in rules (if `enabled`) and `patterns` (regular
    /// expressions; their first capture group, or whole match, is masked).
    pub fn new(enabled: bool, patterns: &[String]) -> Result<Self, regex::Error> {
        Ok(Self {
            enabled,
            extra: patterns.iter().map(|p| Regex::new(p)).collect::<Result<_, _>>()?,
            url: Regex::new(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)").expect("valid"),
        })
    }

    /// `cmd` with its secrets masked.
    pub fn redact(&self, cmd: &str) -> String {
        if !self.enabled {
            return cmd.to_string();
        }
        let args: Vec<&str> = cmd.split(' ').collect();
        let program = args.first().map(|p| p.rsplit('/').next().unwrap_or(p)).unwrap_or("");
        // `env A=1 prog ...`, `sudo prog ...`: the program is the first
        // argument that is neither an assignment nor a known wrapper.
        let programs: Vec<&str> =
            std::iter::once(program).chain(args.iter().skip(1).map(|a| a.rsplit('/').next().unwrap_or(a))).collect();
        let is = |set: &[&str]| programs.iter().take_while(|p| !p.starts_with('-')).any(|p| set.contains(p));
        let (mysql, redis) = (is(MYSQL_CLIENTS), is(REDIS_CLIENTS));
        let mut out: Vec<String> = Vec::with_capacity(args.len());
        let mut mask_next = false;
        for arg in &args {
            if std::mem::take(&mut mask_next) {
                out.push(MASK.into());
                continue;
            }
            out.push(self.redact_arg(arg, mysql, redis, &mut mask_next));
        }
        let mut text = out.join(" ");
        text = self.url.replace_all(&text, format!("${{1}}{MASK}${{3}}")).into_owned();
        for re in &self.extra {
            text = mask_matches(re, &text);
        }
        text
    }

    fn redact_arg(&self, arg: &str, mysql: bool, redis: bool, mask_next: &mut bool) -> String {
        for option in SECRET_OPTIONS {
            if arg == *option {
                *mask_next = true;
                return arg.to_string();
            }
            if let Some(value) = arg.strip_prefix(option).and_then(|rest| rest.strip_prefix('=')) {
                if !value.is_empty() {
                    return format!("{option}={MASK}");
                }
            }
        }
        if mysql && arg.len() > 2 && arg.starts_with("-p") && !arg.starts_with("--") {
            return format!("-p{MASK}");
        }
        if redis && arg == "-a" {
            *mask_next = true;
            return arg.to_string();
        }
        if let Some((name, value)) = arg.split_once('=') {
            let upper = name.to_ascii_uppercase();
            // PGPASSWORD, DB_PASSWORD, API_TOKEN, MYSQL_PWD, REDISCLI_AUTH
            // (but not PWD, the working directory).
            let secret_name = ["PASSWORD", "PASSWD", "TOKEN", "SECRET"].iter().any(|s| upper.ends_with(s))
                || ["_PWD", "_AUTH"].iter().any(|s| upper.ends_with(s));
            let is_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if secret_name && is_name && !value.is_empty() {
                return format!("{name}={MASK}");
            }
        }
        arg.to_string()
    }
}

/// Every match of `re` in `text` with its first group (or itself) masked.
fn mask_matches(re: &Regex, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let m = caps.get(1).or_else(|| caps.get(0)).expect("a match has group 0");
        out.push_str(&text[last..m.start()]);
        out.push_str(MASK);
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_rule() {
        let r = Redactor::default();
        for (cmd, want) in [
            ("app --password=hunter2 --port 5", "app --password=*** --port 5"),
            ("app --password hunter2 x", "app --password *** x"),
            ("deploy --token abc --secret=s3 --api-key=k", "deploy --token *** --secret=*** --api-key=***"),
            ("mysql -uroot -phunter2 -h db", "mysql -uroot -p*** -h db"),
            ("/usr/bin/mariadb -psecret app", "/usr/bin/mariadb -p*** app"),
            ("mysql -p app", "mysql -p app"),
            ("redis-cli -p 6379 -a hunter2 GET k", "redis-cli -p 6379 -a *** GET k"),
            ("redis-benchmark -a pw -t get", "redis-benchmark -a *** -t get"),
            ("env PGPASSWORD=hunter2 psql -h db", "env PGPASSWORD=*** psql -h db"),
            ("MYSQL_PWD=x mysql", "MYSQL_PWD=*** mysql"),
            ("env REDISCLI_AUTH=x PWD=/srv redis-cli", "env REDISCLI_AUTH=*** PWD=/srv redis-cli"),
            ("job API_TOKEN=t1 DB_PASSWORD=p2 X=1", "job API_TOKEN=*** DB_PASSWORD=*** X=1"),
            ("psql postgresql://app:hunter2@db:5432/shop", "psql postgresql://app:***@db:5432/shop"),
            ("redis-cli -u redis://:pw@127.0.0.1:6379", "redis-cli -u redis://:***@127.0.0.1:6379"),
            ("curl http://example.com/x?a=1", "curl http://example.com/x?a=1"),
        ] {
            assert_eq!(r.redact(cmd), want, "{cmd}");
        }
        // `-p` is a port for redis-cli, `-a` means nothing special elsewhere.
        assert_eq!(r.redact("redis-cli -p 6380 PING"), "redis-cli -p 6380 PING");
        assert_eq!(r.redact("ls -a /tmp"), "ls -a /tmp");
        assert_eq!(r.redact("nc -p 80 host"), "nc -p 80 host");
    }

    #[test]
    fn extra_patterns_and_off() {
        let r = Redactor::new(true, &[r"--key-file\s+(\S+)".into(), r"sk_live_\w+".into()]).unwrap();
        assert_eq!(r.redact("tool --key-file /etc/k sk_live_abc"), "tool --key-file *** ***");
        let off = Redactor::new(false, &[]).unwrap();
        assert_eq!(off.redact("mysql -phunter2"), "mysql -phunter2");
        assert!(Redactor::new(true, &["(".into()]).is_err());
    }
}
