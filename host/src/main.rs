//! The `wirelens` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wirelens::protocols::registry::Entry;
use wirelens::protocols::{reload::PluginDirWatcher, LoadedPlugin, Registry, Runtime, SandboxLimits, Source};

/// See Cargo.toml: the per-event path allocates a lot; mimalloc does it cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// wirelens: watch every process's network calls without touching them.
///
/// eBPF programs see each network system call and its payload; WebAssembly
/// protocol plugins (HTTP, and any you add) turn the bytes into layer-7
/// calls. Records go to stdout (one JSON object per line); logs go to stderr.
#[derive(Parser)]
#[command(name = "wirelens", version = wirelens::VERSION, about, long_about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log lines as text, or as one JSON object per line (for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Directory for compiled plugin artifacts (keyed by content hash), so a
    /// restart does not recompile. Default: $WIRELENS_CACHE_DIR, else
    /// $XDG_CACHE_HOME/wirelens, else ~/.cache/wirelens.
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// Languages `plugins new` writes projects in.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    C,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// sysexits(3)'s EX_CONFIG: the configuration is bad. systemd units name it
/// in `RestartPreventExitStatus`, so a bad file is not restarted in a loop.
const EXIT_BAD_CONFIG: u8 = 78;

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: capture every process's network calls and print
    /// records (JSON lines) to the configured flushers until SIGINT/SIGTERM.
    /// Needs root (eBPF) unless EBPF.Enabled is false.
    Run {
        /// Configuration file (iLogtail's YAML or JSON shape), e.g. configs/l4.yaml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage protocol plugins.
    #[command(subcommand)]
    Plugins(PluginsCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file without running; prints the error
    /// (naming the key and file) and exits non-zero when it is bad.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginsCmd {
    /// List built-in plugins and those in a plugin directory: name, version,
    /// WIT version, source and state (active, shadowed, invalid: reason).
    List {
        /// Plugin directory to include.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Load and validate one plugin file; print what `list` would, or the
    /// error. Exits non-zero when the plugin is not usable.
    Check {
        /// The plugin component (.wasm).
        file: PathBuf,
    },
    /// Start a plugin project: `new --lang c NAME` writes NAME/NAME.c (a
    /// working example parser to change) and the C SDK (sdk/README-c.md).
    /// Rust plugins start from sdk/README.md.
    New {
        /// The project's directory; its last part names the plugin
        /// (NAME.c, NAME.wasm).
        dir: PathBuf,
        /// The plugin's language.
        #[arg(long, value_enum)]
        lang: Lang,
    },
    /// Build a plugin into a component. A Rust crate (written with
    /// wirelens-sdk) is compiled with stable Rust for wasm32-unknown-unknown;
    /// a C project (its .c files, written with the C SDK) with clang for
    /// wasm32 and wasm-ld. Either is then encoded as a component that
    /// imports nothing but the contract's host.log.
    Build {
        /// Directory of the plugin: a crate (holding its Cargo.toml) or a
        /// C project (holding NAME.c).
        #[arg(default_value = ".")]
        crate_dir: PathBuf,
        /// Where to write NAME.wasm (a plugin directory, typically).
        #[arg(long, short, default_value = ".", value_name = "DIR")]
        out: PathBuf,
        /// Cargo target directory for the wasm build of a crate. Default: CRATE_DIR/target.
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
        /// Cargo features to enable.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
    },
}

fn main() -> ExitCode {
    // No transparent huge pages for this process. The allocator asks for
    // them on its arenas (MADV_HUGEPAGE), and the first touch of each one
    // zeroes 2 MiB inside whatever allocation reached it: up to a fifth of
    // the daemon's CPU in the first second of a load, while the ring buffer
    // filled behind it (seen in a third of the starts under nginx at 95k
    // requests/s, in none of the starts without).
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // Commands that print (`plugins list | head`) end quietly when the
        // reader goes away, as command-line tools do, instead of panicking
        // on the broken pipe. The daemon keeps Rust's default (ignored, so
        // a flusher's write fails and is counted instead).
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // The daemon's large copies (see copy_tuning): this may start the
    // program again, so it comes before any thread or log line.
    let running = matches!(cli.command, Command::Run { .. });
    let restart_failed = running.then(wirelens::copy_tuning::restart_with_vector_copies).flatten();
    init_logs(cli.verbose, cli.log_format);
    if let Some(why) = restart_failed {
        tracing::warn!("{why}");
    }
    if running {
        // What the copies run with (/proc/PID/environ may not show it: glibc
        // rewrites the variable's original text when it reads it).
        tracing::debug!("GLIBC_TUNABLES: {}", std::env::var("GLIBC_TUNABLES").as_deref().unwrap_or("(not set)"));
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(colour_logs()).init(),
        // Fields at the top level, so a shipper reads `message` and `level`
        // without digging.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// Colour only for a person at a terminal: not in files, pipes, journald or
/// `kubectl logs`, and never with `NO_COLOR` set (no-color.org).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cache_dir = cli.cache_dir.or_else(wirelens::protocols::cache::default_dir);
    match cli.command {
        Command::Run { config } => {
            let config = match wirelens::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(EXIT_BAD_CONFIG));
                }
            };
            wirelens::daemon::run(config, cache_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCmd::Check { file }) => match wirelens::config::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(EXIT_BAD_CONFIG))
            }
        },
        Command::Plugins(PluginsCmd::List { dir }) => {
            let runtime = Runtime::new(SandboxLimits::default(), cache_dir)?;
            let registry = Registry::new(runtime, Default::default());
            registry.load_builtins();
            // Loading through the watcher's scan lists exactly what the daemon would.
            let _watcher = dir.as_deref().map(|d| PluginDirWatcher::start(registry.clone(), d)).transpose()?;
            print_entries(&registry.catalog().entries);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCmd::Check { file }) => {
            let runtime = Runtime::new(SandboxLimits::default(), cache_dir)?;
            let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            match LoadedPlugin::load(&runtime, &bytes, Source::File(file.clone()), &Default::default()) {
                Ok(p) => {
                    let m = &p.meta;
                    print_entries(&[Entry {
                        name: m.name.to_string(),
                        version: m.version.clone(),
                        wit_version: m.wit_version.clone(),
                        source: m.source.to_string(),
                        state: "ok".into(),
                    }]);
                    println!("fields: {}", m.field_names.join(", "));
                    println!("ports:  {:?}", m.default_ports);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}: {e:#}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Plugins(PluginsCmd::New { dir, lang: Lang::C }) => {
            let source = wirelens_plugin_builder::c::new_project(&dir)?;
            println!("{}", source.display());
            println!("build it with: wirelens plugins build {} --out PLUGIN_DIR", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCmd::Build { crate_dir, out, .. })
            if wirelens_plugin_builder::c::is_c_project(&crate_dir) =>
        {
            let path = wirelens_plugin_builder::c::CBuild::new(&crate_dir, &out).run()?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCmd::Build { crate_dir, out, target_dir, features }) => {
            let mut build = wirelens_plugin_builder::Build::new(&crate_dir, &out);
            if let Some(t) = target_dir {
                build.target_dir = t;
            }
            build.features = features;
            let path = build.run()?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_entries(entries: &[Entry]) {
    let rows: Vec<[&str; 5]> = entries
        .iter()
        .map(|e| [e.name.as_str(), e.version.as_str(), e.wit_version.as_str(), e.source.as_str(), e.state.as_str()])
        .collect();
    let header = ["NAME", "VERSION", "WIT", "SOURCE", "STATE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
