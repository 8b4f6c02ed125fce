//! The `switchboard` command: parses the command line, loads the config and
//! runs the server from the library.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::config::{self, Config, ConfigError, Transport};
use switchboard::{ActivatedSockets, Daemon, DaemonError};

/// Exit status for a configuration mistake (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 78;
/// Exit status for a failure at run time (a listener that cannot bind, ...),
/// and for a probe that found a listener not serving.
const EXIT_FAILURE: u8 = 1;
/// Exit status for a command-line mistake (as clap uses).
const EXIT_USAGE: u8 = 2;
/// Exit status of `send` when a reply was an `ERR ...` line.
const EXIT_REFUSED: u8 = 3;

/// `get --help`'s last part: examples and exit statuses.
const GET_HELP: &str = "\
Examples:
  switchboard get 127.0.0.1:1111 big.iso          # -> ./big.iso
  switchboard get 127.0.0.1:1111 big.iso -c       # resume a cut download
  switchboard get 127.0.0.1:1111 docs -r -o docs  # mirror a directory
  switchboard get 127.0.0.1:1111 a.txt --raw      # the tutorial's protocol
  switchboard get https://localhost:8443/big.iso --cacert ca.pem   # over TLS

Exit status:
  0  the file (or the whole tree) was saved
  1  a network or server error, an answer refused, a port that is not a
     download listener, a file in the way, or a mirror incomplete; a TLS
     failure: a certificate not trusted, for another name or expired, a
     port that does not speak TLS, a client certificate required or refused
  2  a command-line mistake, or a directory named without -r; a --cacert,
     --cert or --key file that cannot be used, or no system CAs
  3  not found, or refused by the server (404, 403, an ERR line)
  4  the transfer broke off; FILE.part is kept: run again with -c (over TLS,
     a raw download the server closed without close_notify); get -r -c
     resumes a cut tar stream";

/// `send --help`'s last part: examples and exit statuses.
const SEND_HELP: &str = "\
Examples:
  switchboard send 127.0.0.1:10086 hello time
  printf 'a\\nb\\n' | switchboard send 127.0.0.1:10010
  switchboard send 127.0.0.1:10086 你好 --encoding gbk
  switchboard send --udp 127.0.0.1:10010 hello
  switchboard send --tls localhost:10443 hello --cacert ca.pem

Exit status:
  0  every message had its reply, and none was an ERR line
  1  a network error: no connection, no reply in time, the server closed
     before every reply came (or, over UDP, nothing listens); a TLS
     failure (see get --help), or a close without close_notify (what came
     may be truncated)
  2  a command-line mistake (--tls with --udp); a --cacert, --cert or --key
     file that cannot be used, or no system CAs
  3  every reply came, but one or more were ERR lines (the server refused)";

/// `chat --help`'s last part: examples and exit statuses.
const CHAT_HELP: &str = "\
Examples:
  switchboard chat 127.0.0.1:10087
  switchboard chat --udp 127.0.0.1:10087
  switchboard chat --udp 127.0.0.1:10087 --farewell ciao
  switchboard chat --tls localhost:10443 --cacert ca.pem

Exit status:
  0  the chat ended: an empty line, Ctrl-D, the server's close, or over UDP
     the reply to a farewell
  1  a network error: no connection, a line not taken in time, nothing
     listens (UDP), or no reply to the farewell in time (UDP); a TLS
     failure (see get --help), or a close without close_notify
  2  a command-line mistake (--tls with --udp); a --cacert, --cert or --key
     file that cannot be used, or no system CAs";

/// `probe --help`'s last part: exit statuses.
const PROBE_HELP: &str = "\
Exit status:
  0  every listener serves (a `warn` line, such as a TLS certificate that
     expires within 14 days, is still a pass: health checks must not fail
     a server that works; alert on the expiry metric, or grep for warn)
  1  a listener does not serve, or serves an expired TLS certificate
  2  a command-line mistake, or a listener the config does not have
  78 the config has a mistake";

/// An async TCP and UDP server daemon: TOML-configured listeners routed to
/// echo, download, keyword-bot, random-bot and metrics (Prometheus) handlers.
///
/// With no config file, the embedded default runs: echo on 127.0.0.1:10010,
/// download on 127.0.0.1:1111 (serving the current directory), keyword-bot on
/// 127.0.0.1:10086 and random-bot on 127.0.0.1:10087, and echo, keyword-bot
/// and random-bot over UDP on the same port numbers.
///
/// Signals: SIGTERM or SIGINT shut down gracefully (a second one exits at
/// once); SIGHUP re-reads the config file and applies it without dropping
/// connections.
///
/// Exit status: 0 after a clean shutdown, 1 when the server cannot run (for
/// example a port is taken), 2 for a command-line mistake, 78 for a config
/// mistake (including sockets passed by systemd that match no listener),
/// 130 when a second SIGINT/SIGTERM cut the shutdown short.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about)]
struct Cli {
    /// TOML config file; without it the embedded default runs.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Run(ConfigFileArg),
    /// Validate the config and print the listeners it defines.
    Check(ConfigFileArg),
    /// Print the embedded default config (a documented example of every key).
    DefaultConfig,
    /// Check that the listeners of the config serve, each with the handler
    /// its config names: echo must echo a random token, keyword-bot must give
    /// the reply its rules determine, random-bot must say its goodbye to its
    /// farewell, download must refuse `..`, metrics must be scraped. One line
    /// per listener; exit status 0 only if all of them pass (for health
    /// checks).
    ///
    /// A listener with [listener.tls] is probed over TLS (its certificate is
    /// accepted whoever signed it, as the config is the probe's own): an
    /// expired certificate fails, one that expires within 14 days passes
    /// with a `warn` line.
    #[command(after_help = PROBE_HELP)]
    Probe {
        #[command(flatten)]
        config: ConfigArg,
        /// How long each listener gets to answer (e.g. "3s", "500ms"; more than 0).
        #[arg(long, default_value = "3s", value_parser = positive_duration)]
        timeout: Duration,
        /// Listeners to probe, by name; all when none is given.
        #[arg(value_name = "LISTENER")]
        listeners: Vec<String>,
    },
    /// Fetch a file (or with -r a directory tree) from a download listener:
    /// over HTTP into FILE.part, renamed when complete and the length
    /// matches; -c resumes, and only continues the same version of the
    /// file.
    #[command(after_help = GET_HELP)]
    Get {
        /// The download listener, HOST:PORT; or a URL, http://HOST:PORT/NAME
        /// or https://HOST:PORT/NAME (TLS), which names the file too.
        #[arg(value_name = "ADDR|URL")]
        addr: String,
        /// The name on the server (a file, or a directory with -r); not
        /// given when the URL has it.
        name: Option<String>,
        /// Where to write (default: the name's last part, here).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Resume FILE.part left by an earlier run (Range and If-Range);
        /// with -r, also a cut tar stream, from its first member not yet
        /// whole.
        #[arg(short = 'c', long = "continue")]
        resume: bool,
        /// Fetch a directory tree into the output directory: as one tar
        /// stream (NAME.tar) when the server offers it, else through its
        /// listings, a request per file. With -c, a cut tar stream
        /// resumes at its first member not yet whole (one record in DIR
        /// says where), and cut files of the listings resume each.
        #[arg(short, long)]
        recursive: bool,
        /// Use the raw protocol (no size check, no resume).
        #[arg(long)]
        raw: bool,
        /// Print nothing but errors.
        #[arg(short, long)]
        quiet: bool,
        /// Bound of the whole run, every file and listing of -r included
        /// (e.g. "10m", "2h").
        #[arg(long, default_value = "24h", value_parser = positive_duration)]
        deadline: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send each MESSAGE (or each line of stdin) as a line to a line server
    /// (echo, keyword-bot, random-bot) and print each reply.
    #[command(after_help = SEND_HELP)]
    Send {
        /// The server, HOST:PORT.
        addr: String,
        /// Messages; stdin's lines when none is given.
        messages: Vec<String>,
        /// Over UDP: each message is one datagram, each reply one datagram.
        #[arg(long)]
        udp: bool,
        /// Over TLS (TCP only): the server's certificate is checked against
        /// the system's CAs (or --cacert) and the host of ADDR.
        #[arg(long, conflicts_with = "udp")]
        tls: bool,
        /// Write the server's bytes unchanged (by default, control
        /// characters are shown as escapes such as \x1b).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show what a random-bot listener's history holds, read from its
    /// SQLite file or Redis key (a memory history is inside the daemon and
    /// cannot be read from here).
    #[command(
        after_help = "Examples:\n  switchboard history -c /etc/switchboard/switchboard.toml random-bot --count\n  switchboard history -c switchboard.toml random-bot --tail 20"
    )]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["count", "tail"])))]
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// The random-bot listener, by name.
        listener: String,
        /// Print the number of messages kept, as a bare number.
        #[arg(long)]
        count: bool,
        /// Print the newest N messages, oldest first, one per line
        /// (decoded from the listener's encoding, control characters shown
        /// as escapes such as \x1b).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// With --tail: write the messages' bytes as stored, unchanged.
        #[arg(long, requires = "tail")]
        raw: bool,
    },
    /// Chat with a line server: each line typed is sent, every line it
    /// sends is shown; an empty line or Ctrl-D ends the chat, and so does
    /// the server's close (a bot's goodbye to a farewell) or, over UDP, the
    /// reply to a farewell (--farewell).
    #[command(after_help = CHAT_HELP)]
    Chat {
        /// The server, HOST:PORT.
        addr: String,
        /// Over UDP: each line is one datagram, each reply one datagram.
        #[arg(long)]
        udp: bool,
        /// Over TLS (TCP only): the server's certificate is checked against
        /// the system's CAs (or --cacert) and the host of ADDR.
        #[arg(long, conflicts_with = "udp")]
        tls: bool,
        /// Over UDP, a message that ends the chat once its reply came, as the
        /// server's close does over TCP (the random-bot's `farewell`; give it
        /// again for more than one, or "" for none).
        #[arg(long, value_name = "WORD", default_value = "bye")]
        farewell: Vec<String>,
        /// Write the server's bytes unchanged (by default, control
        /// characters are shown as escapes such as \x1b).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The config file, also accepted after the command (`switchboard check -c FILE`).
#[derive(Debug, Default, clap::Args)]
struct ConfigArg {
    /// TOML config file; without it the embedded default runs.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The config file of `run` and `check`, with or without `-c`
/// (`switchboard check my.toml`, what a new user types first).
#[derive(Debug, Default, clap::Args)]
struct ConfigFileArg {
    #[command(flatten)]
    config: ConfigArg,
    /// The config file, given without -c.
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
}

impl ConfigFileArg {
    fn into_config_arg(self) -> ConfigArg {
        ConfigArg {
            config: self.config.config.or(self.file),
        }
    }
}

/// What every client command takes.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The server's text encoding: utf-8 or gbk.
    #[arg(long, default_value = "utf-8", value_parser = encoding)]
    encoding: switchboard::TextEncoding,
    /// send: the deadline of the whole run. chat: the bound of the
    /// connect (with its TLS handshake), of each line sent, and of the wait
    /// for the server's last words. get: the bound of the connect (with its
    /// TLS handshake), of each wait for data, and of each response head and
    /// listing as a whole (see --deadline).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

/// How a client's TLS is verified (`get https://`, `send --tls`, `chat --tls`).
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// TLS: trust only the CA certificates in FILE (PEM), not the system's.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// TLS: do not verify the server's certificate at all (a warning says so).
    #[arg(long)]
    insecure: bool,
    /// TLS: present this client certificate chain (PEM), for a server that
    /// asks for one (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// TLS: the private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl TlsArgs {
    /// True when a TLS flag was given.
    fn any(&self) -> bool {
        self.cacert.is_some() || self.insecure || self.cert.is_some()
    }

    /// The client's TLS when `on`; `None` when off. A TLS flag without TLS,
    /// or a file that cannot be used, is said as `switchboard COMMAND: ...`,
    /// and is the exit status to return (2).
    fn client_tls(
        &self,
        command: &str,
        on: bool,
        how_on: &str,
    ) -> Result<Option<switchboard::client::ClientTls>, ExitCode> {
        if !on {
            if self.any() {
                print_err(&format!(
                    "switchboard {command}: --cacert, --insecure, --cert and --key are for TLS: \
                     {how_on}"
                ));
                return Err(ExitCode::from(EXIT_USAGE));
            }
            return Ok(None);
        }
        let trust = match (&self.cacert, self.insecure) {
            (Some(file), _) => switchboard::client::Trust::CaFile(file.clone()),
            (None, true) => switchboard::client::Trust::Insecure,
            (None, false) => switchboard::client::Trust::System,
        };
        let options = switchboard::client::TlsOptions {
            trust,
            identity: self.cert.clone().zip(self.key.clone()),
        };
        match switchboard::client::ClientTls::new(&options) {
            Ok(tls) => {
                if tls.insecure() {
                    print_err(&format!(
                        "switchboard {command}: warning: --insecure: the server's certificate is \
                         not verified; anyone on the path can pose as the server"
                    ));
                }
                Ok(Some(tls))
            }
            Err(e) => {
                print_err(&format!("switchboard {command}: {e}"));
                Err(ExitCode::from(EXIT_USAGE))
            }
        }
    }
}

fn encoding(text: &str) -> Result<switchboard::TextEncoding, String> {
    match text.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => Ok(switchboard::TextEncoding::Utf8),
        "gbk" => Ok(switchboard::TextEncoding::Gbk),
        _ => Err("utf-8 or gbk".to_owned()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or(Command::Run(ConfigFileArg::default()));
    // `-c FILE` before the command, or after it.
    let config_path = |after: ConfigArg| after.config.or(cli.config.clone());
    match command {
        Command::DefaultConfig => {
            print_out(config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Command::Check(after) => match load(config_path(after.into_config_arg()).as_deref()) {
            Ok(config) => {
                // Valid, so exit 0; what is doubtful goes to stderr.
                for warning in &config.warnings {
                    print_err(&format!("switchboard: warning: {warning}"));
                }
                print_out(&check_report(&config));
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Run(after) => {
            let path = config_path(after.into_config_arg());
            // Before anything else opens a descriptor: the numbers systemd
            // passed must still be the sockets it passed.
            let activated = match ActivatedSockets::from_env() {
                Ok(activated) => activated,
                Err(e) => {
                    print_err(&format!("switchboard: {e}"));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match load(path.as_deref()) {
                Ok(config) => run(config, path, activated),
                Err(e) => config_error(&e),
            }
        }
        Command::Probe {
            config,
            timeout,
            listeners,
        } => match load(config_path(config).as_deref()) {
            Ok(config) => probe(&config, &listeners, timeout),
            Err(e) => config_error(&e),
        },
        Command::Get {
            addr,
            name,
            output,
            resume,
            recursive,
            raw,
            quiet,
            deadline,
            client,
        } => {
            let target = match switchboard::client::get_target(&addr, name.as_deref()) {
                Ok(target) => target,
                Err(e) => {
                    print_err(&switchboard::client::escape_text(&format!(
                        "switchboard get: {e}"
                    )));
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let tls = match client
                .tls
                .client_tls("get", target.https, "use an https:// URL")
            {
                Ok(tls) => tls,
                Err(code) => return code,
            };
            let options = switchboard::client::GetOptions {
                addr: target.addr,
                name: target.name,
                output,
                resume,
                recursive,
                raw,
                quiet,
                encoding: client.encoding,
                timeout: client.timeout,
                deadline,
                tls,
            };
            match client_runtime().map(|rt| rt.block_on(switchboard::client::get(&options))) {
                Some(Ok(_)) => ExitCode::SUCCESS,
                Some(Err(e)) => {
                    // The message may quote the server: escaped, always.
                    let line = format!("switchboard get: {e}");
                    print_err(&switchboard::client::escape_text(&line));
                    ExitCode::from(e.exit_status())
                }
                None => ExitCode::from(EXIT_FAILURE),
            }
        }
        Command::Send {
            addr,
            messages,
            udp,
            tls,
            raw,
            client,
        } => {
            let tls = match client.tls.client_tls("send", tls, "add --tls") {
                Ok(tls) => tls,
                Err(code) => return code,
            };
            let options = line_options(addr, udp, raw, Vec::new(), tls, &client);
            run_lines("send", async move {
                let stdin = tokio::io::BufReader::new(tokio::io::stdin());
                let mut out = tokio::io::stdout();
                let sent = switchboard::client::send(&options, messages, stdin, &mut out).await?;
                if sent.refusals > 0 {
                    return Ok(Err(format!(
                        "{} of {} replies were ERR lines (the server refused)",
                        sent.refusals, sent.replies
                    )));
                }
                Ok(Ok(()))
            })
        }
        Command::History {
            config,
            listener,
            count,
            tail,
            raw,
        } => match load(config_path(config).as_deref()) {
            Ok(config) => {
                let what = match (count, tail) {
                    (_, Some(n)) => switchboard::history::Inspect::Tail(n),
                    _ => switchboard::history::Inspect::Count,
                };
                history(&config, &listener, what, shown(raw))
            }
            Err(e) => config_error(&e),
        },
        Command::Chat {
            addr,
            udp,
            tls,
            raw,
            farewell,
            client,
        } => {
            let tls = match client.tls.client_tls("chat", tls, "add --tls") {
                Ok(tls) => tls,
                Err(code) => return code,
            };
            let options = line_options(addr, udp, raw, farewell, tls, &client);
            run_lines("chat", async move {
                let stdin = tokio::io::BufReader::new(tokio::io::stdin());
                let mut out = tokio::io::stdout();
                switchboard::client::chat(&options, stdin, &mut out)
                    .await
                    .map(Ok)
            })
        }
    }
}

fn line_options(
    addr: String,
    udp: bool,
    raw: bool,
    farewell: Vec<String>,
    tls: Option<switchboard::client::ClientTls>,
    client: &ClientArgs,
) -> switchboard::client::LineOptions {
    switchboard::client::LineOptions {
        addr,
        encoding: client.encoding,
        timeout: client.timeout,
        udp,
        shown: shown(raw),
        farewell,
        tls,
    }
}

/// How a server's words are written: `--raw` passes their bytes through.
fn shown(raw: bool) -> switchboard::client::Shown {
    if raw {
        switchboard::client::Shown::Raw
    } else {
        switchboard::client::Shown::Escaped
    }
}

/// A runtime for a client command (one thread is plenty).
fn client_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            print_err(&format!("switchboard: cannot start the tokio runtime: {e}"));
            None
        }
    }
}

/// Runs a line client writing to stdout; exit status 1 on a network error,
/// 3 when the run went through but the server refused (`Ok(Err(why))`).
fn run_lines(
    command: &str,
    client: impl std::future::Future<Output = std::io::Result<Result<(), String>>>,
) -> ExitCode {
    let Some(runtime) = client_runtime() else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let result = runtime.block_on(client);
    // Stdin may still be read by a blocking thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(why)) => {
            print_err(&format!("switchboard {command}: {why}"));
            ExitCode::from(EXIT_REFUSED)
        }
        Err(e) => {
            let line = format!("switchboard {command}: {e}");
            print_err(&switchboard::client::escape_text(&line));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::from_file(path),
        None => Config::embedded_default(),
    }
}

fn config_error(err: &ConfigError) -> ExitCode {
    print_err(&format!("switchboard: config error: {err}"));
    ExitCode::from(EXIT_CONFIG)
}

fn run(config: Config, path: Option<PathBuf>, activated: ActivatedSockets) -> ExitCode {
    match serve(config, path, activated) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_err(&format!("switchboard: {e:#}"));
            let in_use = e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            });
            if in_use {
                print_err(
                    "switchboard: another program (another switchboard?) listens there: stop it, \
                     or give the listener another bind in a config of your own \
                     (switchboard default-config > my.toml, edit it, switchboard -c my.toml)",
                );
            }
            let config_mistake = e
                .downcast_ref::<DaemonError>()
                .is_some_and(DaemonError::is_config_mistake);
            ExitCode::from(if config_mistake {
                EXIT_CONFIG
            } else {
                EXIT_FAILURE
            })
        }
    }
}

fn serve(config: Config, path: Option<PathBuf>, activated: ActivatedSockets) -> anyhow::Result<()> {
    let _log_guard = switchboard::init_logging(&config.server)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.server.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(&config, path, activated)?;
        // A closed stdout (`switchboard | true`) must not stop the server.
        print_out(&daemon.banner());
        daemon.run().await;
        Ok::<(), DaemonError>(())
    })?;
    // Connections abandoned after the grace period end with the runtime here.
    runtime.shutdown_background();
    Ok(())
}

/// Writes to stdout; a closed or full stdout is ignored, not a panic
/// (`switchboard check | head -0`).
fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Writes one line to stderr; a closed stderr is ignored, not a panic.
fn print_err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A duration of at least a millisecond (what timers resolve), for `--timeout`.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration < Duration::from_millis(1) => {
            Err("must be at least 1ms".to_owned())
        }
        Ok(duration) => Ok(duration),
        Err(e) => Err(e.to_string()),
    }
}

fn probe(config: &Config, listeners: &[String], timeout: std::time::Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print_err(&format!("switchboard: cannot start the tokio runtime: {e}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let results = match runtime.block_on(switchboard::probe(config, listeners, timeout)) {
        Ok(results) => results,
        Err(e) => {
            print_err(&format!("switchboard: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut report = String::new();
    for r in &results {
        let millis = r.elapsed.as_secs_f64() * 1000.0;
        report.push_str(&match (&r.outcome, &r.warning) {
            (Ok(how), None) => format!(
                "ok    {:<16} {:<22} {how} in {millis:.1} ms\n",
                r.name,
                r.shown_addr()
            ),
            // Still a pass (exit 0): the server works today.
            (Ok(how), Some(warning)) => format!(
                "warn  {:<16} {:<22} {how} in {millis:.1} ms; {warning}\n",
                r.name,
                r.shown_addr()
            ),
            (Err(why), _) => format!("FAIL  {:<16} {:<22} {why}\n", r.name, r.shown_addr()),
        });
    }
    print_out(&report);
    if results.iter().all(|r| r.ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// `switchboard history`: the count, or the newest messages, of the
/// history of the random-bot listener called `name`. Messages are printed
/// one per line, decoded from the listener's encoding and escaped (or with
/// `--raw`, as stored).
fn history(
    config: &Config,
    name: &str,
    what: switchboard::history::Inspect,
    shown: switchboard::client::Shown,
) -> ExitCode {
    let Some(listener) = config.listeners.iter().find(|l| l.name == name) else {
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        print_err(&format!(
            "switchboard history: no listener \"{name}\" in {} (its listeners: {})",
            config.source,
            names.join(", ")
        ));
        return ExitCode::from(EXIT_USAGE);
    };
    let config::HandlerConfig::RandomBot(bot) = &listener.handler else {
        print_err(&format!(
            "switchboard history: listener \"{name}\" runs the {} handler, which keeps no history",
            listener.handler.name()
        ));
        return ExitCode::from(EXIT_USAGE);
    };
    let Some(runtime) = client_runtime() else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let inspected = runtime.block_on(switchboard::history::inspect(name, &bot.history, what));
    match inspected {
        Ok(switchboard::history::Inspected::Count(n)) => {
            print_out(&format!("{n}\n"));
            ExitCode::SUCCESS
        }
        Ok(switchboard::history::Inspected::Messages(messages)) => {
            let mut out = Vec::new();
            for message in messages {
                out.extend_from_slice(&shown.render(&message, listener.encoding));
                out.push(b'\n');
            }
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A Redis server's words may be in it.
            let line = format!("switchboard history: {e}");
            print_err(&switchboard::client::escape_text(&line));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// What `check` prints: a header, then one line per listener with its
/// common settings and its handler's summary.
fn check_report(config: &Config) -> String {
    let mut report = format!(
        "{}: OK, {} listener(s)\n",
        config.source,
        config.listeners.len()
    );
    for l in &config.listeners {
        let summary = l.handler.summary();
        let detail = if summary.is_empty() {
            String::new()
        } else {
            format!(" {summary}")
        };
        let common = match &l.transport {
            Transport::Tcp => format!(
                "max_connections={} idle_timeout={}",
                l.max_connections,
                humantime::format_duration(l.idle_timeout)
            ),
            Transport::Udp(udp) => format!(
                "max_datagram_bytes={} reply_bytes_per_source={}",
                udp.max_datagram_bytes, udp.reply_bytes_per_source
            ),
        };
        let addr = match (&l.transport, &l.tls) {
            (Transport::Udp(_), _) => format!("{}/udp", l.bind),
            (Transport::Tcp, None) => l.bind.to_string(),
            (Transport::Tcp, Some(tls)) => match tls.mode {
                switchboard::tls::Mode::Required => format!("{}/tls", l.bind),
                switchboard::tls::Mode::Optional => format!("{}/tls+plain", l.bind),
            },
        };
        report.push_str(&format!(
            "  {:<16} {:<12} {:<22} {common} encoding={}{detail}\n",
            l.name,
            l.handler.name(),
            addr,
            l.encoding.name(),
        ));
    }
    report
}
