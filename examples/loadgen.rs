//! Benchmark load generator for switchboard (loopback only).
//!
//! ```text
//! loadgen --addr 127.0.0.1:10010 echo --connections 4      # MB/s through echo, every byte verified
//! loadgen --addr 127.0.0.1:10010 connect --workers 8       # connections/s, p50/p99 latency (--proxy-v2: behind a PROXY header)
//! loadgen --addr 127.0.0.1:10010 hold --connections 10000  # idle connections; server RSS per connection
//! loadgen --addr 127.0.0.1:1111 hold --connections 2000 --path /f --expect-size N   # idle HTTP keep-alive connections
//! loadgen --addr 127.0.0.1:1111 download --file F --expect-size N --expect-sha256 HEX   # MB/s
//! loadgen --addr 127.0.0.1:10086 lines --connections 8     # bot request/reply rate, p50/p99
//! loadgen --addr 127.0.0.1:8443 tls-handshake --workers 8      # full TLS 1.3 handshakes/s (no resumption)
//! loadgen --addr 127.0.0.1:8443 tls-hold --connections 2000 --path /f --expect-size N   # RSS per idle TLS connection
//! ```
//!
//! The TLS modes (`tls-handshake`, `tls-hold`) speak TLS 1.3 with X25519 only,
//! resume no session, and do not verify the server's certificate or its
//! handshake signature: the server still does all its work (key exchange,
//! signing), and the load generator's core is spared an ECDSA verification
//! per handshake, which costs more than the server's signature and would
//! make the client the limit. Never use this client for anything else.
//!
//! Each mode prints a small table, then exactly one JSON line starting with
//! `{"mode":"..."` that holds every parameter and result (`null` where a
//! value was not measured) and `"ok"`. An `--addr` whose IP is not loopback
//! is refused. Every loop is bounded by `--duration` or by counts, every
//! connect, read and write by a timeout, and the whole run by a hard deadline
//! (`--deadline`, default: the run's nominal length + 60 s). Exit status: 0
//! when something was measured and every check passed; 1 on a verification
//! error, when nothing could be measured, or on any other failure; 2 for a
//! command-line mistake.
//!
//! With `--server-pid`, the server's RSS is sampled during the run and its
//! CPU time over the run reported (`server_cpu_s`, `server_busy`, and per
//! unit of work: `server_cpu_us_per_mb`, `_per_conn`, `_per_msg`). Client
//! sockets to 127.0.0.1 take turns on source addresses 127.0.0.2 onwards,
//! so that thousands of connections a second do not run out of ports.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::{Args, CommandFactory, Parser, Subcommand, error::ErrorKind};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout, timeout_at};

/// Bound on one connect, and on one read, write or request/reply exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connects in flight at once when opening many connections.
const CONNECT_CONCURRENCY: usize = 256;
/// Latency samples kept in all (each worker keeps its share).
const LATENCY_CAP: usize = 2_000_000;
/// Server RSS sampling period.
const RSS_INTERVAL: Duration = Duration::from_millis(50);
/// Added to a run's nominal length to make the default hard deadline.
const DEADLINE_SLACK_SECS: f64 = 60.0;
/// Period of the echo pattern: a prime, so chunk boundaries drift across it.
const PATTERN_PERIOD: usize = 65_521;
/// Read buffer of the echo verifier.
const ECHO_READ_BUF: usize = 64 * 1024;
/// Read buffer of a download client.
const DOWNLOAD_READ_BUF: usize = 256 * 1024;
/// Longest reply accepted from a bot or to a `connect` message.
const MAX_REPLY: usize = 1024 * 1024;

/// Load generator for switchboard benchmarks (loopback only).
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Cli {
    /// Server address; its IP must be loopback (required).
    #[arg(long, global = true, value_name = "IP:PORT", value_parser = loopback)]
    addr: Option<SocketAddr>,
    /// Measured duration in seconds (echo, connect, lines; download and hold are bounded by counts).
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECS", value_parser = secs)]
    duration: f64,
    /// Print only the JSON line.
    #[arg(long, global = true)]
    json_only: bool,
    /// Sample this process's VmRSS from /proc every 50 ms during the run.
    #[arg(long, global = true, value_name = "PID")]
    server_pid: Option<u32>,
    /// Hard deadline for the whole run, in seconds [default: nominal length + 60].
    #[arg(long, global = true, value_name = "SECS", value_parser = secs)]
    deadline: Option<f64>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Stream bytes through the echo listener, verifying every byte; MB/s.
    Echo(EchoArgs),
    /// Connect, one message, one reply, close; connections/s and latency.
    Connect(ConnectArgs),
    /// Open many idle connections, keep them, check that each still answers.
    Hold(HoldArgs),
    /// N clients fetch a file R times, verifying length and SHA-256; MB/s.
    Download(DownloadArgs),
    /// Request/reply lines against a bot; messages/s and latency.
    Lines(LinesArgs),
    /// HTTP/1.1 GETs of one small file on keep-alive connections (any HTTP
    /// server: switchboard's download port, nginx); requests/s and latency.
    Requests(RequestsArgs),
    /// UDP datagrams against a UDP echo, each client with one in flight,
    /// verifying every reply; datagrams/s and latency. A reply that does
    /// not come within 100 ms counts as lost (reported, not an error).
    Datagrams(DatagramsArgs),
    /// Full TLS 1.3 handshakes (X25519, no resumption), each on a new
    /// connection: connect, handshake, close_notify, wait for the server's
    /// close; handshakes/s and latency, and the load generator's own CPU.
    TlsHandshake(HandshakeArgs),
    /// Open many TLS connections, complete each handshake, keep them idle,
    /// then check that each still answers an HTTP GET; server RSS per
    /// connection (any HTTPS server: switchboard's download port, nginx).
    TlsHold(TlsHoldArgs),
}

#[derive(Debug, Args)]
struct HandshakeArgs {
    /// Workers, each with one handshake in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    workers: u32,
    /// Server name sent in the ClientHello (SNI).
    #[arg(long, default_value = "localhost", value_name = "NAME")]
    server_name: String,
}

#[derive(Debug, Args)]
struct TlsHoldArgs {
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Seconds the connections stay idle once all are open.
    #[arg(long, default_value_t = 2.0, value_name = "SECS", value_parser = secs)]
    hold: f64,
    /// The path each connection GETs after the hold, e.g. /small.txt.
    #[arg(long, value_name = "PATH")]
    path: String,
    /// Expected body length of that GET.
    #[arg(long, value_name = "BYTES")]
    expect_size: u64,
    /// Server name sent in the ClientHello (SNI).
    #[arg(long, default_value = "localhost", value_name = "NAME")]
    server_name: String,
}

#[derive(Debug, Args)]
struct DatagramsArgs {
    /// Clients, each a UDP socket of its own.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// Bytes per datagram (at least 8: a sequence number leads it).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=65_507))]
    size: u32,
}

#[derive(Debug, Args)]
struct RequestsArgs {
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// The path requested, e.g. /small.txt.
    #[arg(long, value_name = "PATH")]
    path: String,
    /// Expected body length.
    #[arg(long, value_name = "BYTES")]
    expect_size: u64,
}

#[derive(Debug, Args)]
struct EchoArgs {
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Bytes in flight per connection: how far the writer may run ahead of the verified reader.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=1 << 30))]
    window: u32,
    /// Bytes per write (at most the window).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    chunk: u32,
    /// Split the duration into this many sessions, each on fresh
    /// connections. On loopback one set of connections settles into a fast
    /// or a slow pace for its lifetime (the kernel's TCP state, not the
    /// server); several sessions average over those instead of drawing one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sessions: u32,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    workers: u32,
    /// Message sent on each connection; the escapes \n \r \t \\ are understood.
    #[arg(long, default_value = "hello\\n", value_name = "TEXT")]
    message: String,
    /// Expect every connection to be refused: closed by the server without
    /// a byte (an access list's `deny`); nothing is sent.
    #[arg(long)]
    refused: bool,
    /// Send a PROXY protocol v2 header (the connection's own addresses)
    /// before the message, in the same write, as a balancer would.
    #[arg(long)]
    proxy_v2: bool,
}

#[derive(Debug, Args)]
struct HoldArgs {
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Seconds the connections stay idle once all are open.
    #[arg(long, default_value_t = 2.0, value_name = "SECS", value_parser = secs)]
    hold: f64,
    /// HTTP keep-alive instead of echo: each connection GETs this path
    /// once before the hold (so the server holds an idle keep-alive
    /// connection after a request) and once after it, instead of a ping.
    #[arg(long, value_name = "PATH", requires = "expect_size")]
    path: Option<String>,
    /// Expected body length of those GETs.
    #[arg(long, value_name = "BYTES", requires = "path")]
    expect_size: Option<u64>,
}

/// Client read buffer of a held connection: a small response fits.
const HOLD_READ_BUFFER: usize = 2048;

#[derive(Debug, Args)]
struct DownloadArgs {
    /// Name requested from the download listener.
    #[arg(long, value_name = "NAME")]
    file: String,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    repeat: u32,
    /// Expected length; without it (or the hash) every fetch must match the first.
    #[arg(long, value_name = "BYTES")]
    expect_size: Option<u64>,
    /// Expected SHA-256, 64 hex digits.
    #[arg(long, value_name = "HEX", value_parser = sha256_hex)]
    expect_sha256: Option<String>,
    /// Hash every fetch. By default each client hashes its first fetch and
    /// checks only the length of the later ones, so that SHA-256 on the
    /// load generator's core does not become what is measured.
    #[arg(long)]
    hash_all: bool,
    /// Fetch over HTTP/1.1 (`GET /NAME`, one request a connection) instead
    /// of the raw protocol; the body must follow a 200 head.
    #[arg(long)]
    http: bool,
}

#[derive(Debug, Args)]
struct LinesArgs {
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Message sent (one line; "\n" is appended).
    #[arg(long, default_value = "hello", value_name = "TEXT")]
    message: String,
}

fn loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|e| format!("{e} (expected IP:PORT)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; benchmarks stay on loopback"
        ));
    }
    Ok(addr)
}

fn secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err("expected seconds from 0 to 86400".into()),
    }
}

fn sha256_hex(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("expected 64 hex digits".into())
    }
}

/// One value of a report.
#[derive(Debug)]
enum Val {
    Str(String),
    U(u64),
    F(f64),
    Null,
}

macro_rules! val_from {
    ($($t:ty => |$v:ident| $e:expr;)*) => {$(impl From<$t> for Val { fn from($v: $t) -> Self { $e } })*};
}
val_from! {
    u64 => |v| Val::U(v);
    usize => |v| Val::U(v as u64);
    u32 => |v| Val::U(v.into());
    f64 => |v| Val::F(v);
    &str => |v| Val::Str(v.to_owned());
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

impl Val {
    fn human(&self) -> String {
        match self {
            Val::Str(s) => s.escape_debug().to_string(),
            Val::F(f) => format!("{f:.3}"),
            Val::Null => "-".into(),
            other => other.json(),
        }
    }

    fn json(&self) -> String {
        match self {
            Val::Str(s) => json_string(s),
            Val::U(u) => u.to_string(),
            Val::F(f) if f.is_finite() => format!("{f:.3}"),
            Val::F(_) | Val::Null => "null".into(),
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a mode measured: parameters and results in print order, and the
/// checks that failed.
#[derive(Debug)]
struct Report {
    mode: &'static str,
    fields: Vec<(&'static str, Val)>,
    failures: Vec<String>,
}

impl Report {
    fn new(mode: &'static str, ctx: &Ctx) -> Self {
        let mut report = Report {
            mode,
            fields: Vec::new(),
            failures: Vec::new(),
        };
        report.put("addr", ctx.addr.to_string().as_str());
        report
    }

    fn put(&mut self, key: &'static str, val: impl Into<Val>) {
        self.fields.push((key, val.into()));
    }

    /// A numeric field already reported.
    fn number(&self, key: &str) -> Option<f64> {
        self.fields.iter().find_map(|(k, v)| match v {
            Val::U(u) if *k == key => Some(*u as f64),
            Val::F(f) if *k == key => Some(*f),
            _ => None,
        })
    }

    fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    fn print(&self, json_only: bool) {
        if !json_only {
            let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(4);
            println!("{:<width$}  {}", "mode", self.mode);
            for (key, val) in &self.fields {
                println!("{key:<width$}  {}", val.human());
            }
        }
        let mut line = format!("{{\"mode\":{}", json_string(self.mode));
        for (key, val) in &self.fields {
            let _ = write!(line, ",{}:{}", json_string(key), val.json());
        }
        println!("{line},\"ok\":{}}}", self.failures.is_empty());
    }
}

fn read_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    Some(kb.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()? * 1024)
}

/// CPU time a process and its waited-for children used so far, in seconds:
/// utime, stime, cutime and cstime of `/proc/PID/stat`, in ticks of
/// USER_HZ, which Linux fixes at 100 for user space.
fn read_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: Vec<u64> = after_name
        .split_whitespace()
        .skip(11) // state .. cmajflt: fields 3 to 13
        .take(4)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    (ticks.len() == 4).then(|| ticks.iter().sum::<u64>() as f64 / 100.0)
}

/// Samples a server's VmRSS every [`RSS_INTERVAL`], keeping the maximum,
/// and the CPU time it used during the run.
struct ServerSampler {
    pid: Option<u32>,
    before: Option<u64>,
    cpu_before: Option<f64>,
    started: Instant,
    max: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl ServerSampler {
    fn start(pid: Option<u32>) -> anyhow::Result<Self> {
        let max = Arc::new(AtomicU64::new(0));
        let (mut before, mut task) = (None, None);
        if let Some(pid) = pid {
            let rss = read_rss(pid).with_context(|| format!("cannot read VmRSS of pid {pid}"))?;
            max.store(rss, Relaxed);
            before = Some(rss);
            let max = max.clone();
            task = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(RSS_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    if let Some(rss) = read_rss(pid) {
                        max.fetch_max(rss, Relaxed);
                    }
                }
            }));
        }
        Ok(ServerSampler {
            pid,
            before,
            cpu_before: pid.and_then(read_cpu_seconds),
            started: Instant::now(),
            max,
            task,
        })
    }

    /// The RSS now (also counted in the maximum).
    fn now(&self) -> Option<u64> {
        let rss = read_rss(self.pid?)?;
        self.max.fetch_max(rss, Relaxed);
        Some(rss)
    }

    /// Stops sampling and adds `rss_before_bytes`, `rss_max_bytes`,
    /// `server_cpu_s` and `server_busy` (its CPU time over the wall time of
    /// the whole run) to the report, and the server's CPU time per unit of
    /// the mode's work (`work`: the report's key that counts it, the name
    /// of the per-unit key, and the unit's size in that count).
    fn finish(mut self, report: &mut Report, work: Option<(&str, &'static str, f64)>) {
        self.now();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let cpu = match (self.pid.and_then(read_cpu_seconds), self.cpu_before) {
            (Some(after), Some(before)) => Some(after - before),
            _ => None,
        };
        report.put("server_pid", self.pid);
        report.put("rss_before_bytes", self.before);
        report.put("rss_max_bytes", self.pid.map(|_| self.max.load(Relaxed)));
        report.put("server_cpu_s", cpu);
        let wall = self.started.elapsed().as_secs_f64();
        report.put("server_busy", cpu.map(|cpu| cpu / wall));
        if let Some((count_key, per_unit_key, unit)) = work {
            let units = report.number(count_key).map(|count| count / unit);
            let per_unit = match (cpu, units) {
                (Some(cpu), Some(units)) if units > 0.0 => Some(cpu * 1e6 / units),
                _ => None,
            };
            report.put(per_unit_key, per_unit);
        }
    }
}

/// What every mode gets.
struct Ctx {
    addr: SocketAddr,
    duration: Duration,
    /// The hard deadline of the whole run.
    deadline: Instant,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(addr) = cli.addr else {
        let mut cmd = Cli::command();
        cmd.error(
            ErrorKind::MissingRequiredArgument,
            "--addr IP:PORT is required",
        )
        .exit();
    };
    let nominal = match &cli.mode {
        Mode::Hold(args) => args.hold,
        Mode::TlsHold(args) => args.hold,
        _ => cli.duration,
    };
    let deadline_s = cli.deadline.unwrap_or(nominal + DEADLINE_SLACK_SECS);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs_f64(deadline_s);
        let ctx = Ctx {
            addr,
            duration: Duration::from_secs_f64(cli.duration),
            deadline,
        };
        match timeout_at(deadline, run(&cli, &ctx)).await {
            Ok(result) => result,
            Err(_) => bail!("hard deadline of {deadline_s} s reached; nothing to report"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(report) => {
            report.print(cli.json_only);
            for why in &report.failures {
                eprintln!("loadgen: {}: {why}", report.mode);
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli, ctx: &Ctx) -> anyhow::Result<Report> {
    let nofile = raise_nofile_limit();
    let server = ServerSampler::start(cli.server_pid)?;
    let mut report = match &cli.mode {
        Mode::Echo(args) => echo(ctx, args).await?,
        Mode::Connect(args) => connect(ctx, args).await?,
        Mode::Hold(args) => hold(ctx, args, &server, nofile).await?,
        Mode::Download(args) => download(ctx, args).await?,
        Mode::Lines(args) => lines(ctx, args).await?,
        Mode::Requests(args) => requests(ctx, args).await?,
        Mode::Datagrams(args) => datagrams(ctx, args).await?,
        Mode::TlsHandshake(args) => handshake(ctx, args).await?,
        Mode::TlsHold(args) => tls_hold(ctx, args, &server).await?,
    };
    // The server's CPU time per unit of work: with the load generator as
    // the limit, equal rates can hide unequal costs.
    let work = match &cli.mode {
        Mode::Echo(_) => Some(("total_verified_bytes", "server_cpu_us_per_mb", 1e6)),
        Mode::Download(_) => Some(("bytes", "server_cpu_us_per_mb", 1e6)),
        Mode::Connect(_) => Some(("completed", "server_cpu_us_per_conn", 1.0)),
        Mode::Lines(_) => Some(("completed", "server_cpu_us_per_msg", 1.0)),
        Mode::Requests(_) => Some(("completed", "server_cpu_us_per_req", 1.0)),
        Mode::Datagrams(_) => Some(("completed", "server_cpu_us_per_datagram", 1.0)),
        Mode::TlsHandshake(_) => Some(("completed", "server_cpu_us_per_handshake", 1.0)),
        Mode::Hold(_) | Mode::TlsHold(_) => None,
    };
    server.finish(&mut report, work);
    Ok(report)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum
        && let Err(e) = setrlimit(Resource::Nofile, raised)
    {
        eprintln!("loadgen: cannot raise RLIMIT_NOFILE: {e}");
    }
    getrlimit(Resource::Nofile).current
}

/// `\n`, `\r`, `\t` and `\\` in a command-line message become the characters.
fn unescape(text: &str) -> String {
    let (mut out, mut chars) = (String::new(), text.chars());
    while let Some(c) = chars.next() {
        match (c, (c == '\\').then(|| chars.next()).flatten()) {
            (_, Some('n')) => out.push('\n'),
            (_, Some('r')) => out.push('\r'),
            (_, Some('t')) => out.push('\t'),
            (_, Some('\\')) => out.push('\\'),
            (c, Some(other)) => out.extend([c, other]),
            (c, None) => out.push(c),
        }
    }
    out
}

/// Source addresses the clients' sockets take turns on, 127.0.0.2 onwards:
/// one address has only the ephemeral port range (about 28 000 ports), and
/// at thousands of connections a second its ports sit in TIME_WAIT, so
/// that the kernel's search for a free one, not the server, would set the
/// connect rate.
const SOURCE_ADDRESSES: u32 = 250;

/// Connects to `addr` (from the next of [`SOURCE_ADDRESSES`] when it is
/// IPv4 loopback), with TCP_NODELAY, bounded by [`IO_TIMEOUT`].
async fn open(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);
    let connect = async {
        match addr {
            SocketAddr::V4(v4) if v4.ip().is_loopback() => {
                let turn = NEXT_SOURCE.fetch_add(1, Relaxed) % u64::from(SOURCE_ADDRESSES);
                let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + turn as u8);
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                socket.connect(addr).await
            }
            _ => TcpStream::connect(addr).await,
        }
    };
    let stream = timeout(IO_TIMEOUT, connect)
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens up to `n` connections, [`CONNECT_CONCURRENCY`] at a time, starting
/// none after `until`; returns those that opened, the number that failed and
/// the first errors.
async fn open_many(addr: SocketAddr, n: usize, until: Instant) -> (Vec<TcpStream>, u64, String) {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    let (mut streams, mut failed, mut first) = (Vec::with_capacity(n), 0u64, String::new());
    let mut collect = |r: Result<anyhow::Result<TcpStream>, _>| match r {
        Ok(Ok(stream)) => streams.push(stream),
        Ok(Err(e)) => {
            failed += 1;
            if failed <= 3 {
                let _ = write!(first, "{e:#}; ");
            }
        }
        Err(e) => {
            failed += 1;
            let _ = write!(first, "{e}; ");
        }
    };
    for _ in 0..n {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        if Instant::now() >= until {
            break;
        }
        set.spawn(async move {
            let stream = open(addr).await;
            drop(permit);
            stream
        });
        while let Some(r) = set.try_join_next() {
            collect(r);
        }
    }
    while let Some(r) = set.join_next().await {
        collect(r);
    }
    (streams, failed, first)
}

/// Opens exactly `n` connections or fails.
async fn open_all(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let (streams, failed, first) = open_many(addr, n, Instant::now() + IO_TIMEOUT * 4).await;
    ensure!(
        streams.len() == n,
        "opened {} of {n} connections ({failed} failed: {first})",
        streams.len()
    );
    Ok(streams)
}

fn mb_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// The deterministic byte stream of the echo connections (each starts at its own offset).
fn pattern(extra: usize) -> Arc<[u8]> {
    let period =
        (0..PATTERN_PERIOD as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8);
    let period: Vec<u8> = period.collect();
    period
        .iter()
        .chain(period.iter().cycle().take(extra))
        .copied()
        .collect()
}

#[derive(Debug, Default)]
struct EchoCounters {
    verified: AtomicU64,
    mismatches: AtomicU64,
    io_errors: AtomicU64,
}

/// What one echo session measured.
#[derive(Debug, Default)]
struct EchoSession {
    /// Bytes verified within the measured time.
    verified: u64,
    /// Bytes verified in all, the drain after the measured time included.
    total_verified: u64,
    elapsed: Duration,
    mismatches: u64,
    short: usize,
    io_errors: u64,
}

async fn echo(ctx: &Ctx, args: &EchoArgs) -> anyhow::Result<Report> {
    let (n, window) = (args.connections as usize, args.window as usize);
    let chunk = args.chunk.min(args.window) as usize;
    let sessions = args.sessions;
    let mut report = Report::new("echo", ctx);
    report.put("duration_s", ctx.duration.as_secs_f64());
    report.put("connections", n);
    report.put("window_bytes", window);
    report.put("chunk_bytes", chunk);
    report.put("sessions", sessions);
    let pattern = pattern(chunk.max(ECHO_READ_BUF));
    let length = ctx.duration / sessions;
    let mut all = EchoSession::default();
    let mut rates = Vec::new();
    for _ in 0..sessions {
        let session = echo_session(ctx.addr, n, window, chunk, &pattern, length).await?;
        rates.push(mb_per_sec(session.verified, session.elapsed));
        all.verified += session.verified;
        all.total_verified += session.total_verified;
        all.elapsed += session.elapsed;
        all.mismatches += session.mismatches;
        all.short += session.short;
        all.io_errors += session.io_errors;
        if session.mismatches > 0 || session.io_errors > 0 {
            break;
        }
    }
    report.put("elapsed_s", all.elapsed.as_secs_f64());
    report.put("verified_bytes", all.verified);
    report.put("total_verified_bytes", all.total_verified);
    report.put("mb_per_sec", mb_per_sec(all.verified, all.elapsed));
    report.put(
        "session_mb_per_sec_min",
        rates.iter().copied().reduce(f64::min),
    );
    report.put(
        "session_mb_per_sec_max",
        rates.iter().copied().reduce(f64::max),
    );
    report.put("mismatches", all.mismatches);
    report.put("short_connections", all.short);
    report.put("io_errors", all.io_errors);
    if all.mismatches > 0 {
        report.fail(format!(
            "{} connection(s) received wrong bytes",
            all.mismatches
        ));
    }
    if all.short > 0 || all.io_errors > 0 {
        report.fail(format!(
            "{} connection(s) got back fewer bytes than sent; {} I/O error(s)",
            all.short, all.io_errors
        ));
    }
    if all.verified == 0 {
        report.fail("no byte was echoed");
    }
    Ok(report)
}

/// One echo session: opens `n` connections, streams through them for
/// `length`, then half-closes and verifies the rest until EOF.
async fn echo_session(
    addr: SocketAddr,
    n: usize,
    window: usize,
    chunk: usize,
    pattern: &Arc<[u8]>,
    length: Duration,
) -> anyhow::Result<EchoSession> {
    let streams = open_all(addr, n).await?;
    let counters = Arc::new(EchoCounters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection: a writer that runs at most `window` bytes ahead of its
    // reader, and a reader that checks every byte against the pattern.
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for (k, stream) in streams.into_iter().enumerate() {
        let (mut rd, mut wr) = stream.into_split();
        let in_flight = Arc::new(Semaphore::new(window));
        let first = (k * 7919) % PATTERN_PERIOD;
        let (pattern_w, in_flight_w, counters_w) =
            (pattern.clone(), in_flight.clone(), counters.clone());
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let (mut offset, mut written) = (first, 0u64);
            loop {
                let permit = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => break,
                    permit = in_flight_w.acquire_many(chunk as u32) => permit,
                };
                let Ok(permit) = permit else { break };
                permit.forget();
                let write = timeout(IO_TIMEOUT, wr.write_all(&pattern_w[offset..offset + chunk]));
                if !matches!(write.await, Ok(Ok(()))) {
                    counters_w.io_errors.fetch_add(1, Relaxed);
                    return (k, true, written);
                }
                written += chunk as u64;
                offset = (offset + chunk) % PATTERN_PERIOD;
            }
            let _ = timeout(IO_TIMEOUT, wr.shutdown()).await;
            (k, true, written)
        });
        let (pattern, counters) = (pattern.clone(), counters.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; ECHO_READ_BUF];
            let (mut offset, mut received) = (first, 0u64);
            loop {
                let n = match timeout(IO_TIMEOUT, rd.read(&mut buf)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => n,
                    _ => {
                        counters.io_errors.fetch_add(1, Relaxed);
                        break;
                    }
                };
                let expected = &pattern[offset..offset + n];
                if buf[..n] != *expected {
                    let at = buf
                        .iter()
                        .zip(expected)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    let at = received + at as u64;
                    eprintln!("loadgen: echo: connection {k}: wrong byte at stream offset {at}");
                    counters.mismatches.fetch_add(1, Relaxed);
                    break;
                }
                received += n as u64;
                offset = (offset + n) % PATTERN_PERIOD;
                counters.verified.fetch_add(n as u64, Relaxed);
                in_flight.add_permits(n);
            }
            (k, false, received)
        });
    }
    sleep(length).await;
    let verified = counters.verified.load(Relaxed);
    let elapsed = start.elapsed();
    // Writers stop and half-close; readers verify the rest until EOF.
    let _ = stop_tx.send(true);
    let (mut sent, mut got, mut lost) = (vec![0u64; n], vec![0u64; n], 0u64);
    let drain_by = Instant::now() + IO_TIMEOUT * 2;
    loop {
        match timeout_at(drain_by, tasks.join_next()).await {
            Ok(Some(Ok((k, true, bytes)))) => sent[k] = bytes,
            Ok(Some(Ok((k, false, bytes)))) => got[k] = bytes,
            Ok(Some(Err(_))) => lost += 1,
            Ok(None) => break,
            Err(_) => {
                lost += tasks.len() as u64;
                tasks.abort_all();
                break;
            }
        }
    }
    Ok(EchoSession {
        verified,
        total_verified: counters.verified.load(Relaxed),
        elapsed,
        mismatches: counters.mismatches.load(Relaxed),
        short: sent.iter().zip(&got).filter(|(s, g)| s != g).count(),
        io_errors: counters.io_errors.load(Relaxed) + lost,
    })
}

/// Latencies and errors of the workers of a timed request/reply loop.
#[derive(Debug, Default)]
struct Samples {
    done: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    cap: usize,
}

impl Samples {
    fn new(cap: usize) -> Self {
        Samples {
            cap,
            ..Samples::default()
        }
    }

    /// Counts an exchange begun at `began` that ended now: only those that
    /// complete before `end` are measured.
    fn record(
        &mut self,
        began: Instant,
        end: Instant,
        result: Result<anyhow::Result<()>, tokio::time::error::Elapsed>,
    ) -> bool {
        let (now, ok) = (Instant::now(), matches!(result, Ok(Ok(()))));
        match result {
            Ok(Ok(())) if now <= end => {
                self.done += 1;
                if self.latencies.len() < self.cap {
                    self.latencies.push(now - began);
                }
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.error(format!("{e:#}")),
            Err(_) => self.error("no reply within the timeout".into()),
        }
        ok
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    async fn join(
        mut set: JoinSet<Samples>,
        report: &mut Report,
        rate_key: &'static str,
        duration: Duration,
    ) {
        let mut all = Samples::default();
        while let Some(joined) = set.join_next().await {
            let s = joined.unwrap_or_else(|e| Samples {
                errors: 1,
                first_error: Some(e.to_string()),
                ..Samples::default()
            });
            all.done += s.done;
            all.errors += s.errors;
            all.first_error = all.first_error.or(s.first_error);
            all.latencies.extend(s.latencies);
        }
        all.latencies.sort_unstable();
        let percentile = |q: f64| {
            let rank = (q * all.latencies.len() as f64).ceil() as usize;
            all.latencies
                .get(rank.max(1) - 1)
                .map(|d| d.as_micros() as u64)
        };
        report.put("completed", all.done);
        report.put(rate_key, all.done as f64 / duration.as_secs_f64().max(1e-9));
        report.put("p50_us", percentile(0.50));
        report.put("p99_us", percentile(0.99));
        report.put("max_us", all.latencies.last().map(|d| d.as_micros() as u64));
        report.put("errors", all.errors);
        if let Some(e) = &all.first_error {
            eprintln!(
                "loadgen: {}: {} error(s), the first: {e}",
                report.mode, all.errors
            );
        }
        if all.done == 0 {
            report.fail(format!("nothing completed ({} errors)", all.errors));
        }
    }
}

/// Connect, write the message, read the reply (to the first newline, or as
/// many bytes as the message has when it has no newline), close.
async fn connect_once(
    addr: SocketAddr,
    message: &[u8],
    proxy_v2: bool,
    buf: &mut [u8],
) -> anyhow::Result<()> {
    let mut stream = open(addr).await?;
    if proxy_v2 {
        let mut first = switchboard::proxy_protocol::v2_header(stream.local_addr()?, addr);
        first.extend_from_slice(message);
        stream.write_all(&first).await?;
    } else {
        stream.write_all(message).await?;
    }
    if !message.contains(&b'\n') {
        stream.read_exact(&mut buf[..message.len()]).await?;
        return Ok(());
    }
    let mut total = 0;
    loop {
        ensure!(
            total < buf.len(),
            "reply longer than {} bytes without a newline",
            buf.len()
        );
        let n = stream.read(&mut buf[total..]).await?;
        ensure!(n > 0, "closed before a newline");
        if buf[total..total + n].contains(&b'\n') {
            return Ok(());
        }
        total += n;
    }
}

/// One connection the server must close without a byte.
async fn refused_once(addr: SocketAddr, buf: &mut [u8]) -> anyhow::Result<()> {
    let mut stream = open(addr).await?;
    match stream.read(buf).await {
        Ok(0) => Ok(()),
        // A close with data still unread on the server's side is a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => anyhow::bail!("a refused connection got {n} bytes"),
        Err(e) => Err(e.into()),
    }
}

async fn connect(ctx: &Ctx, args: &ConnectArgs) -> anyhow::Result<Report> {
    let message = unescape(&args.message);
    let mut report = Report::new("connect", ctx);
    report.put("duration_s", ctx.duration.as_secs_f64());
    report.put("workers", args.workers);
    report.put("message", message.as_str());
    ensure!(
        !message.is_empty() && message.len() <= MAX_REPLY,
        "--message must be 1 byte to 1 MiB"
    );
    let message: Arc<[u8]> = message.as_bytes().into();
    report.put("refused", if args.refused { "yes" } else { "no" });
    report.put("proxy_v2", if args.proxy_v2 { "yes" } else { "no" });
    let (refused, proxy_v2) = (args.refused, args.proxy_v2);
    let (addr, end) = (ctx.addr, Instant::now() + ctx.duration);
    let mut set = JoinSet::new();
    for _ in 0..args.workers {
        let message = message.clone();
        let mut s = Samples::new(LATENCY_CAP / args.workers as usize);
        set.spawn(async move {
            let mut buf = vec![0u8; message.len().max(64 * 1024)];
            while Instant::now() < end {
                let began = Instant::now();
                let result = if refused {
                    timeout(IO_TIMEOUT, refused_once(addr, &mut buf)).await
                } else {
                    timeout(IO_TIMEOUT, connect_once(addr, &message, proxy_v2, &mut buf)).await
                };
                if !s.record(began, end, result) {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            s
        });
    }
    Samples::join(set, &mut report, "conns_per_sec", ctx.duration).await;
    Ok(report)
}

/// The connection kept from the last exchange, or a new one (a failure to
/// connect is counted, and followed by a short pause).
async fn kept_or_new(
    kept: Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    s: &mut Samples,
) -> Option<BufReader<TcpStream>> {
    if kept.is_some() {
        return kept;
    }
    match open(addr).await {
        Ok(stream) => Some(BufReader::new(stream)),
        Err(e) => {
            s.error(format!("reconnect: {e:#}"));
            sleep(Duration::from_millis(10)).await;
            None
        }
    }
}

async fn lines(ctx: &Ctx, args: &LinesArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("lines", ctx);
    report.put("duration_s", ctx.duration.as_secs_f64());
    report.put("connections", args.connections);
    report.put("message", args.message.as_str());
    ensure!(
        !args.message.contains(['\n', '\r']),
        "--message must be one line"
    );
    let line: Arc<[u8]> = format!("{}\n", args.message).into_bytes().into();
    let streams = open_all(ctx.addr, args.connections as usize).await?;
    let (addr, end) = (ctx.addr, Instant::now() + ctx.duration);
    let mut set = JoinSet::new();
    for stream in streams {
        let line = line.clone();
        let mut s = Samples::new(LATENCY_CAP / args.connections as usize);
        set.spawn(async move {
            let (mut conn, mut reply) = (Some(BufReader::new(stream)), Vec::new());
            while Instant::now() < end {
                // A connection that failed is replaced (a bot may close it).
                let Some(mut stream) = kept_or_new(conn.take(), addr, &mut s).await else {
                    continue;
                };
                let began = Instant::now();
                let exchange = async {
                    stream.write_all(&line).await?;
                    reply.clear();
                    (&mut stream)
                        .take(MAX_REPLY as u64)
                        .read_until(b'\n', &mut reply)
                        .await?;
                    ensure!(
                        reply.last() == Some(&b'\n'),
                        "connection closed before a full reply"
                    );
                    Ok(())
                };
                let result = timeout(IO_TIMEOUT, exchange).await;
                if s.record(began, end, result) {
                    conn = Some(stream);
                }
            }
            s
        });
    }
    Samples::join(set, &mut report, "msgs_per_sec", ctx.duration).await;
    Ok(report)
}

/// How long a datagram's reply may take before it counts as lost.
const DATAGRAM_LOSS: Duration = Duration::from_millis(100);

async fn datagrams(ctx: &Ctx, args: &DatagramsArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("datagrams", ctx);
    report.put("duration_s", ctx.duration.as_secs_f64());
    report.put("clients", args.clients);
    report.put("size", args.size);
    let size = args.size as usize;
    let mut sockets = Vec::with_capacity(args.clients as usize);
    for _ in 0..args.clients {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(ctx.addr).await?;
        sockets.push(socket);
    }
    let end = Instant::now() + ctx.duration;
    let lost = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for socket in sockets {
        let lost = lost.clone();
        let mut s = Samples::new(LATENCY_CAP / args.clients as usize);
        set.spawn(async move {
            // A sequence number leads each datagram, so that a late reply
            // to a datagram counted as lost is not taken for the next one's.
            let mut datagram: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let mut reply = vec![0u8; size + 1];
            let mut seq = 0u64;
            while Instant::now() < end {
                seq += 1;
                datagram[..8].copy_from_slice(&seq.to_be_bytes());
                let began = Instant::now();
                let exchange = async {
                    socket.send(&datagram).await?;
                    loop {
                        let n = socket.recv(&mut reply).await?;
                        if n >= 8 && reply[..8] < datagram[..8] {
                            continue; // late: a reply already counted lost
                        }
                        ensure!(
                            reply[..n] == datagram[..],
                            "a reply of {n} bytes that is not the datagram sent"
                        );
                        return Ok(());
                    }
                };
                match timeout(DATAGRAM_LOSS, exchange).await {
                    Err(_) => {
                        lost.fetch_add(1, Relaxed);
                    }
                    result => {
                        s.record(began, end, result);
                    }
                }
            }
            s
        });
    }
    Samples::join(set, &mut report, "datagrams_per_sec", ctx.duration).await;
    report.put("lost", lost.load(Relaxed));
    Ok(report)
}

/// One HTTP/1.1 response read off `stream`: a 200 head, then exactly its
/// `Content-Length` of body, which must be `expect` bytes. True when the
/// connection stays open (no `Connection: close`).
async fn http_response<R: tokio::io::AsyncBufRead + Unpin>(
    stream: &mut R,
    expect: u64,
) -> anyhow::Result<bool> {
    let mut line = Vec::new();
    let mut length = None;
    let mut first = true;
    let mut keep = true;
    loop {
        line.clear();
        (&mut *stream)
            .take(8192)
            .read_until(b'\n', &mut line)
            .await?;
        ensure!(
            line.ends_with(b"\n"),
            "connection closed inside a response head"
        );
        if first {
            ensure!(
                line.starts_with(b"HTTP/1.1 200 "),
                "status: {}",
                String::from_utf8_lossy(&line).trim()
            );
            first = false;
            continue;
        }
        if line == b"\r\n" {
            break;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(value) = text.strip_prefix("content-length:") {
            length = value.trim().parse::<u64>().ok();
        } else if let Some(value) = text.strip_prefix("connection:") {
            keep &= !value.trim().eq_ignore_ascii_case("close");
        }
    }
    let length = length.context("no Content-Length")?;
    ensure!(
        length == expect,
        "a body of {length} bytes, expected {expect}"
    );
    let copied = tokio::io::copy(&mut (&mut *stream).take(length), &mut tokio::io::sink()).await?;
    ensure!(copied == length, "connection closed inside a body");
    Ok(keep)
}

async fn requests(ctx: &Ctx, args: &RequestsArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("requests", ctx);
    report.put("duration_s", ctx.duration.as_secs_f64());
    report.put("connections", args.connections);
    report.put("path", args.path.as_str());
    ensure!(
        args.path.starts_with('/') && !args.path.contains(['\r', '\n', ' ']),
        "--path must be an absolute path without spaces"
    );
    let request: Arc<[u8]> = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", args.path)
        .into_bytes()
        .into();
    let streams = open_all(ctx.addr, args.connections as usize).await?;
    let (addr, end, expect) = (ctx.addr, Instant::now() + ctx.duration, args.expect_size);
    let mut set = JoinSet::new();
    for stream in streams {
        let request = request.clone();
        let mut s = Samples::new(LATENCY_CAP / args.connections as usize);
        set.spawn(async move {
            let mut conn = Some(BufReader::new(stream));
            while Instant::now() < end {
                // A connection the server closed (its request bound) is replaced.
                let Some(mut stream) = kept_or_new(conn.take(), addr, &mut s).await else {
                    continue;
                };
                let began = Instant::now();
                let exchange = async {
                    stream.write_all(&request).await?;
                    http_response(&mut stream, expect).await
                };
                let mut keep = false;
                let result = timeout(IO_TIMEOUT, exchange).await.map(|r| {
                    r.map(|open| {
                        keep = open;
                    })
                });
                if s.record(began, end, result) && keep {
                    conn = Some(stream);
                }
            }
            s
        });
    }
    Samples::join(set, &mut report, "reqs_per_sec", ctx.duration).await;
    Ok(report)
}

async fn hold(
    ctx: &Ctx,
    args: &HoldArgs,
    rss: &ServerSampler,
    nofile: Option<u64>,
) -> anyhow::Result<Report> {
    let n = args.connections as usize;
    let hold = Duration::from_secs_f64(args.hold);
    let mut report = Report::new("hold", ctx);
    report.put("connections", n);
    report.put("hold_s", args.hold);
    report.put("client_nofile_limit", nofile);
    let start = Instant::now();
    // Opening stops in time to leave the hold and the pings before the deadline.
    let open_by = ctx
        .deadline
        .checked_sub(hold + IO_TIMEOUT * 3)
        .unwrap_or(start);
    let (streams, failed, first) = open_many(ctx.addr, n, open_by.max(start + IO_TIMEOUT)).await;
    let open_time = start.elapsed();
    let opened = streams.len() as u64;
    if failed > 0 {
        eprintln!("loadgen: hold: {failed} connect(s) failed: {first}");
    }
    let request: Option<Arc<[u8]>> = match &args.path {
        Some(path) => {
            ensure!(
                path.starts_with('/') && !path.contains(['\r', '\n', ' ']),
                "--path must be an absolute path without spaces"
            );
            Some(
                format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")
                    .into_bytes()
                    .into(),
            )
        }
        None => None,
    };
    let expect = args.expect_size.unwrap_or(0);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    // One exchange on every connection: a GET (HTTP) or a ping (echo);
    // returns the connections with how many answered.
    let exchange_all = |streams: Vec<BufReader<TcpStream>>| {
        let (gate, request) = (gate.clone(), request.clone());
        async move {
            let mut set = JoinSet::new();
            for mut stream in streams {
                let permit = gate.clone().acquire_owned().await?;
                let request = request.clone();
                set.spawn(async move {
                    let exchange = async {
                        if let Some(request) = &request {
                            stream.write_all(request).await?;
                            return http_response(&mut stream, expect).await;
                        }
                        stream.write_all(b"ping\n").await?;
                        let mut back = [0u8; 5];
                        stream.read_exact(&mut back).await?;
                        anyhow::Ok(&back == b"ping\n")
                    };
                    let answered = matches!(timeout(IO_TIMEOUT, exchange).await, Ok(Ok(true)));
                    drop(permit);
                    (answered, stream)
                });
            }
            let (mut answered, mut kept) = (0u64, Vec::with_capacity(set.len()));
            while let Some(joined) = set.join_next().await {
                if let Ok((ok, stream)) = joined {
                    answered += u64::from(ok);
                    kept.push(stream);
                }
            }
            anyhow::Ok((answered, kept))
        }
    };
    let mut streams: Vec<_> = streams
        .into_iter()
        .map(|s| BufReader::with_capacity(HOLD_READ_BUFFER, s))
        .collect();
    if request.is_some() {
        // The request before the hold: the server then holds a keep-alive
        // connection that has served one, as after a browser's first page.
        let (served, kept) = exchange_all(streams).await?;
        report.put("served_before_hold", served);
        if served < opened {
            report.fail(format!(
                "only {served} of {opened} connections answered the first GET"
            ));
        }
        streams = kept;
    }
    sleep(hold).await;
    let rss_idle = rss.now();
    // Every connection must still answer.
    let (answered, keep) = exchange_all(streams).await?;
    drop(keep);
    report.put("connections_opened", opened);
    report.put("connect_errors", failed);
    report.put("open_s", open_time.as_secs_f64());
    report.put(
        "opens_per_sec",
        opened as f64 / open_time.as_secs_f64().max(1e-9),
    );
    report.put("answered", answered);
    report.put("rss_idle_bytes", rss_idle);
    let per_connection = match (rss.before, rss_idle) {
        (Some(before), Some(idle)) if opened > 0 => {
            Some((idle as f64 - before as f64) / opened as f64)
        }
        _ => None,
    };
    report.put("bytes_per_connection", per_connection);
    if opened == 0 {
        report.fail("no connection opened");
    } else if answered < opened {
        report.fail(format!(
            "only {answered} of {opened} connections answered after the hold"
        ));
    }
    Ok(report)
}

/// What one fetch got: its length, SHA-256 (hex, when hashed) and first bytes.
struct Fetched {
    len: u64,
    sha256: Option<String>,
    head: Vec<u8>,
}

/// Fetches `request` once, hashing what arrives if `hash`; with `http`, the
/// response head (which must say 200) is read off first and not counted.
async fn fetch(
    addr: SocketAddr,
    request: &[u8],
    buf: &mut [u8],
    hash: bool,
    http: bool,
) -> anyhow::Result<Fetched> {
    let mut stream = open(addr).await?;
    timeout(IO_TIMEOUT, stream.write_all(request))
        .await
        .context("request timed out")??;
    let (mut hasher, mut len, mut head) = (Sha256::new(), 0u64, Vec::new());
    let mut response_head: Option<Vec<u8>> = http.then(Vec::new);
    loop {
        let n = timeout(IO_TIMEOUT, stream.read(buf))
            .await
            .context("read timed out")??;
        if n == 0 {
            break;
        }
        let mut body = &buf[..n];
        let leftover;
        if let Some(so_far) = response_head.as_mut() {
            so_far.extend_from_slice(body);
            let Some(end) = so_far.windows(4).position(|w| w == b"\r\n\r\n") else {
                ensure!(
                    so_far.len() <= 16 * 1024,
                    "an HTTP response head over 16 KiB"
                );
                continue;
            };
            ensure!(
                so_far.starts_with(b"HTTP/1.1 200 "),
                "HTTP status: {}",
                String::from_utf8_lossy(so_far.split(|b| *b == b'\r').next().unwrap_or(&[]))
            );
            leftover = so_far.split_off(end + 4);
            response_head = None;
            body = &leftover;
        }
        if hash {
            hasher.update(body);
        }
        len += body.len() as u64;
        head.extend_from_slice(&body[..body.len().min(256 - head.len())]);
    }
    ensure!(
        response_head.is_none(),
        "the connection ended inside the HTTP response head"
    );
    let sha256 = hash.then(|| {
        hasher.finalize().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    });
    Ok(Fetched { len, sha256, head })
}

/// Checks a fetch against the expectations and against the first fetch.
fn check(
    got: Fetched,
    expect: &(Option<u64>, Option<String>),
    first: &OnceLock<(u64, String)>,
) -> anyhow::Result<u64> {
    let Fetched { len, sha256, head } = got;
    if let Some(size) = expect.0 {
        ensure!(len == size, "got {len} bytes, expected {size}");
    }
    if let (Some(want), Some(sha256)) = (&expect.1, &sha256) {
        ensure!(sha256 == want, "got SHA-256 {sha256}, expected {want}");
    }
    // Without expectations, a lone "ERR <reason>" line is a refusal, not the file.
    let refused = head.len() as u64 == len && head.starts_with(b"ERR ") && head.ends_with(b"\n");
    ensure!(
        expect.0.is_some() || !refused,
        "refused: {}",
        String::from_utf8_lossy(&head).trim()
    );
    let Some(sha256) = sha256 else {
        // Not hashed: the length must still match.
        if let Some((len0, _)) = first.get() {
            ensure!(len == *len0, "got {len} bytes; another fetch got {len0}");
        }
        return Ok(len);
    };
    let (len0, sha0) = first.get_or_init(|| (len, sha256.clone()));
    ensure!(
        (len, &sha256) == (*len0, sha0),
        "got {len} bytes, SHA-256 {sha256}; another fetch got {len0}, {sha0}"
    );
    Ok(len)
}

async fn download(ctx: &Ctx, args: &DownloadArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("download", ctx);
    report.put("file", args.file.as_str());
    report.put("clients", args.clients);
    report.put("repeat", args.repeat);
    report.put("expect_size", args.expect_size);
    report.put("expect_sha256", args.expect_sha256.as_deref());
    ensure!(
        !args.file.contains(['\n', '\r']),
        "--file must not contain a line break"
    );
    let request: Arc<[u8]> = if args.http {
        format!(
            "GET /{} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
            args.file
        )
    } else {
        format!("{}\n", args.file)
    }
    .into_bytes()
    .into();
    report.put("protocol", if args.http { "http" } else { "raw" });
    // Each fetch must match the expectations given, and every other fetch.
    let reference: Arc<OnceLock<(u64, String)>> = Arc::new(OnceLock::new());
    let expect: Arc<(Option<u64>, Option<String>)> =
        Arc::new((args.expect_size, args.expect_sha256.clone()));
    let bytes = Arc::new(AtomicU64::new(0));
    let (addr, repeat, hash_all, http) = (ctx.addr, args.repeat, args.hash_all, args.http);
    report.put(
        "hash_all",
        if hash_all {
            "all"
        } else {
            "first fetch of each client"
        },
    );
    // No fetch starts too close to the hard deadline.
    let last_start = ctx
        .deadline
        .checked_sub(IO_TIMEOUT * 2)
        .unwrap_or(ctx.deadline);
    let mut set = JoinSet::new();
    let start = Instant::now();
    for _ in 0..args.clients {
        let (request, reference, expect, bytes) = (
            request.clone(),
            reference.clone(),
            expect.clone(),
            bytes.clone(),
        );
        set.spawn(async move {
            let mut buf = vec![0u8; DOWNLOAD_READ_BUF];
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            for round in 0..repeat {
                let checked = if Instant::now() >= last_start {
                    Err(anyhow::anyhow!("not started: the hard deadline is near"))
                } else {
                    fetch(addr, &request, &mut buf, hash_all || round == 0, http)
                        .await
                        .and_then(|got| check(got, &expect, &reference))
                };
                match checked {
                    Ok(len) => {
                        ok += 1;
                        bytes.fetch_add(len, Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (ok, errors, first_error)
        });
    }
    let (mut fetches, mut errors, mut first_error) = (0u64, 0u64, None);
    while let Some(joined) = set.join_next().await {
        let (ok, failed, first) =
            joined.unwrap_or_else(|e| (0, repeat.into(), Some(e.to_string())));
        (fetches, errors) = (fetches + ok, errors + failed);
        first_error = first_error.or(first);
    }
    let elapsed = start.elapsed();
    let total = bytes.load(Relaxed);
    report.put("file_bytes", reference.get().map(|(len, _)| *len));
    report.put("fetches", fetches);
    report.put("errors", errors);
    report.put("bytes", total);
    report.put("elapsed_s", elapsed.as_secs_f64());
    report.put("mb_per_sec", mb_per_sec(total, elapsed));
    if let Some(first) = first_error {
        report.fail(format!("{errors} fetch(es) failed, the first: {first}"));
    }
    if fetches == 0 {
        report.fail("no fetch completed");
    }
    Ok(report)
}

/// The TLS client of the `tls-handshake` and `tls-hold` modes: TLS 1.3, X25519,
/// no resumption, and no verification (see the module's documentation).
mod tls_client {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

    /// Accepts any certificate and any handshake signature, unchecked.
    #[derive(Debug)]
    struct Unverified(Arc<CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The client configuration: ring (as the server's, which says why
    /// it is kept though deprecated), TLS 1.3 only, X25519 only.
    #[allow(deprecated)]
    pub(super) fn config() -> anyhow::Result<Arc<ClientConfig>> {
        let provider = Arc::new(CryptoProvider {
            kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
            ..rustls::crypto::ring::default_provider()
        });
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr`, handshake complete, bounded by [`IO_TIMEOUT`].
async fn open_tls(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &rustls::pki_types::ServerName<'static>,
) -> anyhow::Result<TlsStream> {
    let stream = open(addr).await?;
    let tls = timeout(IO_TIMEOUT, connector.connect(name.clone(), stream))
        .await
        .context("handshake timed out")?
        .context("handshake")?;
    Ok(tls)
}

/// The process's own CPU time so far, in seconds.
fn own_cpu_seconds() -> Option<f64> {
    read_cpu_seconds(std::process::id())
}

/// Puts what was negotiated on `tls` into the report; fails the run
/// unless it is TLS 1.3 with X25519.
fn put_negotiated(report: &mut Report, tls: &TlsStream) {
    let conn = tls.get_ref().1;
    let version = conn.protocol_version().map(|v| format!("{v:?}"));
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    let ok = version.as_deref() == Some("TLSv1_3") && group.as_deref() == Some("X25519");
    report.put("tls_version", version.as_deref().unwrap_or("?"));
    report.put("cipher", suite.as_deref().unwrap_or("?"));
    report.put("kx_group", group.as_deref().unwrap_or("?"));
    if !ok {
        report.fail(format!(
            "negotiated {version:?} with {group:?}, expected TLS 1.3 with X25519"
        ));
    }
}

fn server_name(name: &str) -> anyhow::Result<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(name.to_owned())
        .with_context(|| format!("--server-name {name}: not a DNS name or IP"))
}

/// One full handshake: connect, handshake, close_notify, then read until
/// the server closes (what it says, and a reset, count as its close).
async fn handshake_once(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &rustls::pki_types::ServerName<'static>,
) -> anyhow::Result<()> {
    let mut tls = open_tls(connector, addr, name).await?;
    tls.shutdown().await?;
    let mut buf = [0u8; 512];
    let mut total = 0usize;
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                total += n;
                ensure!(
                    total <= MAX_REPLY,
                    "the server kept sending after the handshake"
                );
            }
        }
    }
}

async fn handshake(ctx: &Ctx, args: &HandshakeArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("tls-handshake", ctx);
    report.put("duration_s", ctx.duration.as_secs_f64());
    report.put("workers", args.workers);
    let connector = tokio_rustls::TlsConnector::from(tls_client::config()?);
    let name = server_name(&args.server_name)?;
    // One handshake first, for what the server negotiates.
    let first = open_tls(&connector, ctx.addr, &name).await?;
    put_negotiated(&mut report, &first);
    drop(first);
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let (addr, end) = (ctx.addr, Instant::now() + ctx.duration);
    let mut set = JoinSet::new();
    for _ in 0..args.workers {
        let (connector, name) = (connector.clone(), name.clone());
        let mut s = Samples::new(LATENCY_CAP / args.workers as usize);
        set.spawn(async move {
            while Instant::now() < end {
                let began = Instant::now();
                let result = timeout(IO_TIMEOUT, handshake_once(&connector, addr, &name)).await;
                if !s.record(began, end, result) {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            s
        });
    }
    Samples::join(set, &mut report, "handshakes_per_sec", ctx.duration).await;
    let cpu = match (own_cpu_seconds(), cpu_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    report.put("client_cpu_s", cpu);
    report.put(
        "client_busy",
        cpu.map(|cpu| cpu / started.elapsed().as_secs_f64()),
    );
    Ok(report)
}

async fn tls_hold(ctx: &Ctx, args: &TlsHoldArgs, rss: &ServerSampler) -> anyhow::Result<Report> {
    let n = args.connections as usize;
    let hold = Duration::from_secs_f64(args.hold);
    let mut report = Report::new("tls-hold", ctx);
    report.put("connections", n);
    report.put("hold_s", args.hold);
    ensure!(
        args.path.starts_with('/') && !args.path.contains(['\r', '\n', ' ']),
        "--path must be an absolute path without spaces"
    );
    let request: Arc<[u8]> = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", args.path)
        .into_bytes()
        .into();
    let connector = tokio_rustls::TlsConnector::from(tls_client::config()?);
    let name = server_name(&args.server_name)?;
    let start = Instant::now();
    let open_by = ctx
        .deadline
        .checked_sub(hold + IO_TIMEOUT * 3)
        .unwrap_or(start)
        .max(start + IO_TIMEOUT);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        if Instant::now() >= open_by {
            break;
        }
        let (connector, name, addr) = (connector.clone(), name.clone(), ctx.addr);
        set.spawn(async move {
            let tls = open_tls(&connector, addr, &name).await;
            drop(permit);
            tls
        });
    }
    let (mut streams, mut failed, mut first) = (Vec::with_capacity(n), 0u64, None);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(tls)) => streams.push(tls),
            Ok(Err(e)) => {
                failed += 1;
                first.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let open_time = start.elapsed();
    let opened = streams.len() as u64;
    if let Some(first) = &first {
        eprintln!("loadgen: tls-hold: {failed} connection(s) failed, the first: {first}");
    }
    if let Some(tls) = streams.first() {
        put_negotiated(&mut report, tls);
    }
    sleep(hold).await;
    let rss_idle = rss.now();
    // Every connection must still answer a GET.
    let mut set = JoinSet::new();
    for stream in streams {
        let permit = gate.clone().acquire_owned().await?;
        let (request, expect) = (request.clone(), args.expect_size);
        set.spawn(async move {
            let mut stream = BufReader::new(stream);
            let get = async {
                stream.write_all(&request).await?;
                http_response(&mut stream, expect).await
            };
            let answered = matches!(timeout(IO_TIMEOUT, get).await, Ok(Ok(_)));
            drop(permit);
            (answered, stream)
        });
    }
    let (mut answered, mut keep) = (0u64, Vec::with_capacity(n));
    while let Some(joined) = set.join_next().await {
        if let Ok((ok, stream)) = joined {
            answered += u64::from(ok);
            keep.push(stream);
        }
    }
    drop(keep);
    report.put("connections_opened", opened);
    report.put("connect_errors", failed);
    report.put("open_s", open_time.as_secs_f64());
    report.put("answered", answered);
    report.put("rss_idle_bytes", rss_idle);
    let per_connection = match (rss.before, rss_idle) {
        (Some(before), Some(idle)) if opened > 0 => {
            Some((idle as f64 - before as f64) / opened as f64)
        }
        _ => None,
    };
    report.put("bytes_per_connection", per_connection);
    if opened == 0 {
        report.fail("no connection opened");
    } else if answered < opened {
        report.fail(format!(
            "only {answered} of {opened} connections answered a GET"
        ));
    }
    Ok(report)
}
