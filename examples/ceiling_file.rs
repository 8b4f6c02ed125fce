//! The benchmark's download ceiling: the leanest file server, to compare
//! switchboard's `download` handler against in the same run
//! (`bench/run.sh`). Not part of the daemon.
//!
//! Blocking std, one thread per connection: read the file name line (up to
//! `\n`, at most 4 KiB; a name ended by the client's half-close counts too),
//! open `ROOT/NAME` (names with `/` or `..` are refused), send the whole file
//! with sendfile(2) through the safe `rustix::fs::sendfile`, close. The
//! listener has SO_REUSEADDR; accepted sockets get TCP_NODELAY, as
//! switchboard's do.
//!
//! ```text
//! cargo run --release --example ceiling_file -- --addr 127.0.0.1:0 --root /some/dir
//! listening on 127.0.0.1:40124
//! ```
//!
//! Runs until killed.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

const MAX_NAME: usize = 4096;
/// Bounds every read and every send, so a client that stops reading cannot
/// hold a thread for ever.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// What one sendfile(2) call is asked for (Linux sends at most 0x7ffff000).
const SEND_STEP: u64 = 1 << 30;

struct Args {
    addr: SocketAddr,
    root: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut root) = (None, None);
    while let Some(arg) = args.next() {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_owned(), v.to_owned()),
            _ => {
                if arg == "-h" || arg == "--help" {
                    println!("usage: ceiling_file --addr IP:PORT --root DIR");
                    std::process::exit(0);
                }
                let value = args.next().ok_or(format!("{arg} needs a value"))?;
                (arg, value)
            }
        };
        match key.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--addr `{value}`: {e}"))?,
                );
            }
            "--root" => root = Some(PathBuf::from(value)),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let addr = addr.ok_or("--addr IP:PORT is required")?;
    let root = root.ok_or("--root DIR is required")?;
    if !root.is_dir() {
        return Err(format!("--root {}: not a directory", root.display()));
    }
    Ok(Args { addr, root })
}

/// socket, SO_REUSEADDR, bind, listen(128) (switchboard's default backlog).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 128)?;
    Ok(TcpListener::from(fd))
}

/// Reads the name: bytes up to the first `\n` (a trailing `\r` dropped), or
/// everything until the client half-closes. `Ok(None)`: too long.
fn read_name(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; MAX_NAME + 1];
    let mut len = 0;
    loop {
        if let Some(nl) = buf[..len].iter().position(|&b| b == b'\n') {
            len = nl;
            break;
        }
        if len > MAX_NAME {
            return Ok(None);
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > MAX_NAME {
        return Ok(None);
    }
    Ok(Some(buf))
}

fn refuse(stream: &mut TcpStream, reason: &str) -> io::Result<()> {
    stream.write_all(format!("ERR {reason}\n").as_bytes())
}

fn serve(mut stream: TcpStream, root: &Path) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let Some(name) = read_name(&mut stream)? else {
        return refuse(&mut stream, "name too long");
    };
    if name.is_empty() {
        return refuse(&mut stream, "empty name");
    }
    if name.contains(&b'/') || name.windows(2).any(|w| w == b"..") || name.contains(&0) {
        return refuse(&mut stream, "name not allowed");
    }
    let path = root.join(std::ffi::OsStr::from_bytes(&name));
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => return refuse(&mut stream, &format!("cannot open: {e}")),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return refuse(&mut stream, "not a regular file");
    }
    let size = meta.len();
    let mut offset = 0u64;
    while offset < size {
        let step = (size - offset).min(SEND_STEP) as usize;
        match rustix::fs::sendfile(&stream, &file, Some(&mut offset), step) {
            Ok(0) => break, // the file shrank
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    stream.shutdown(Shutdown::Write)
}

fn run(args: Args) -> io::Result<()> {
    let listener = bind(args.addr)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let root = Arc::new(args.root);
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                eprintln!("ceiling_file: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let root = Arc::clone(&root);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                let _ = serve(stream, &root);
            });
        if let Err(e) = spawned {
            eprintln!("ceiling_file: cannot start a thread: {e}");
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ceiling_file: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling_file: {e}");
            ExitCode::FAILURE
        }
    }
}
