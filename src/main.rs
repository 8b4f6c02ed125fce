//! The `switchboard` command: parses the command line, loads the config and
//! runs the server from the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::config::{self, Config, ConfigError, HandlerConfig};
use switchboard::shutdown::Signals;
use switchboard::{Server, limits};

/// Exit status for a configuration mistake (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 78;
/// Exit status for a failure at run time (a listener that cannot bind, ...).
const EXIT_FAILURE: u8 = 1;

/// An async TCP server daemon: TOML-configured listeners routed to echo,
/// download, keyword-bot and random-bot handlers.
///
/// With no config file, the embedded default runs: echo on 127.0.0.1:10010,
/// download on 127.0.0.1:1111 (serving the current directory), keyword-bot on
/// 127.0.0.1:10086 and random-bot on 127.0.0.1:10087.
///
/// Exit status: 0 after a clean shutdown, 1 when the server cannot run (for
/// example a port is taken), 2 for a command-line mistake, 78 for a config
/// mistake, 130 when a second SIGINT/SIGTERM cut the shutdown short.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about)]
struct Cli {
    /// TOML config file; without it the embedded default runs.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Run,
    /// Validate the config and print the listeners it defines.
    Check,
    /// Print the embedded default config (a documented example of every key).
    DefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::DefaultConfig => {
            print!("{}", config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Command::Check => match load(cli.config.as_deref()) {
            Ok(config) => {
                print_check(&config);
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Run => match load(cli.config.as_deref()) {
            Ok(config) => match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            },
            Err(e) => config_error(&e),
        },
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::from_file(path),
        None => Config::embedded_default(),
    }
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("switchboard: config error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn run(config: Config) -> anyhow::Result<()> {
    let _log_guard = switchboard::logging::init(&config.server)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.server.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let signals = Signals::install().context("cannot install signal handlers")?;
        let files = limits::raise_open_file_limit();
        let needed = limits::descriptors_needed(&config);
        if files.soft.is_some_and(|soft| soft < needed) {
            tracing::warn!(
                limit = ?files.soft,
                needed,
                "the open-file limit is below what max_connections allows; \
                 beyond it new clients wait until descriptors free (raise LimitNOFILE / ulimit -n)"
            );
        }
        let server = Server::bind(&config)?;
        println!(
            "switchboard {} serving ({}):",
            env!("CARGO_PKG_VERSION"),
            config.source
        );
        for l in server.listeners() {
            println!("  {:<16} {:<12} {}", l.name, l.handler.name(), l.addr);
        }
        server.run(signals.wait()).await;
        anyhow::Ok(())
    })?;
    // Connections abandoned after the grace period end with the runtime here.
    runtime.shutdown_background();
    Ok(())
}

fn print_check(config: &Config) {
    println!(
        "{}: OK, {} listener(s)",
        config.source,
        config.listeners.len()
    );
    for l in &config.listeners {
        let detail = match &l.handler {
            HandlerConfig::Echo => String::new(),
            HandlerConfig::Download(d) => {
                format!(" root={} chunk_size={}", d.root.display(), d.chunk_size)
            }
            HandlerConfig::KeywordBot(b) => format!(" rules={}", b.rules.len()),
            HandlerConfig::RandomBot(b) => format!(
                " history_limit={} farewell={:?}",
                b.history_limit, b.farewell
            ),
        };
        println!(
            "  {:<16} {:<12} {:<22} max_connections={} idle_timeout={} encoding={}{detail}",
            l.name,
            l.handler.kind().name(),
            l.bind,
            l.max_connections,
            humantime::format_duration(l.idle_timeout),
            l.encoding.name(),
        );
    }
}
