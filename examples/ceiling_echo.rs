//! The benchmark's echo ceiling: the leanest echo server, to compare
//! switchboard against in the same run (`bench/run.sh`). Not part of the
//! daemon.
//!
//! One thread, one edge-triggered mio poll (epoll). Per connection one 64 KiB
//! buffer: read into it, write it back; bytes the peer does not take yet stay
//! pending, and reading stops until they are written (resumed by the writable
//! edge). A connection is served at most [`BUDGET`] reads at a time, then the
//! others get their turn. Accepted sockets get TCP_NODELAY; the listener has
//! SO_REUSEADDR (mio sets it on Unix).
//!
//! ```text
//! cargo run --release --example ceiling_echo -- --addr 127.0.0.1:0
//! listening on 127.0.0.1:40123
//! ```
//!
//! Runs until killed.
#![forbid(unsafe_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const BUFFER: usize = 64 * 1024;
/// Buffers read per turn of one connection. Edge-triggered readiness lets a
/// connection whose client keeps sending be served for ever; a small budget
/// takes the connections in turn (8 connections with 1 MiB in flight: about
/// 1.4x the throughput of draining each one).
const BUDGET: usize = 4;

struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Pending bytes are `buf[start..end]`: read but not yet written back.
    start: usize,
    end: usize,
    /// In the list of connections to drive again.
    queued: bool,
}

enum Status {
    /// Everything available is handled; wait for the next edge.
    Open,
    /// The budget ran out with more to do: run it again after the others.
    Yielded,
    /// The peer closed, or the socket failed: drop it.
    Closed,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            queued: false,
        }
    }

    /// Edge-triggered: loop until the socket says WouldBlock on the side we
    /// are waiting on (write while bytes are pending, read otherwise), or
    /// until the budget of reads runs out, so that one busy connection does
    /// not starve the others (the caller runs it again after them).
    fn drive(&mut self) -> Status {
        for _ in 0..BUDGET {
            while self.start < self.end {
                match self.stream.write(&self.buf[self.start..self.end]) {
                    Ok(0) => return Status::Closed,
                    Ok(n) => self.start += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Status::Open,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Status::Closed,
                }
            }
            self.start = 0;
            self.end = 0;
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Status::Closed,
                Ok(n) => self.end = n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Status::Open,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Status::Closed,
            }
        }
        Status::Yielded
    }
}

/// Connections by token; freed slots are reused so tokens stay small.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(conn);
                i
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(i)?.take();
        if conn.is_some() {
            self.free.push(i);
        }
        conn
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--addr" => args.next().ok_or("--addr needs a value")?,
            a if a.starts_with("--addr=") => a["--addr=".len()..].to_owned(),
            "-h" | "--help" => {
                println!("usage: ceiling_echo --addr IP:PORT");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument `{other}`")),
        };
        addr = Some(
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("--addr `{value}`: {e}"))?,
        );
    }
    addr.ok_or_else(|| "--addr IP:PORT is required".to_owned())
}

fn run(addr: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let mut conns = Slab::default();
    let mut events = Events::with_capacity(1024);
    // Connections whose budget ran out: driven again after the new events.
    let mut again: Vec<usize> = Vec::new();
    let mut turn: Vec<usize> = Vec::new();
    loop {
        let wait = if again.is_empty() {
            None
        } else {
            Some(Duration::ZERO)
        };
        if let Err(e) = poll.poll(&mut events, wait) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns);
            } else {
                drive(event.token().0, false, &poll, &mut conns, &mut again);
            }
        }
        std::mem::swap(&mut again, &mut turn);
        for i in turn.drain(..) {
            drive(i, true, &poll, &mut conns, &mut again);
        }
    }
}

/// Drives connection `i` (`queued`: taken from the list of connections to
/// drive again): queues it in `again` when its budget ran out (once), drops
/// it when it closed.
fn drive(i: usize, queued: bool, poll: &Poll, conns: &mut Slab, again: &mut Vec<usize>) {
    let Some(Some(conn)) = conns.slots.get_mut(i) else {
        return;
    };
    if queued {
        conn.queued = false;
    }
    match conn.drive() {
        Status::Open => {}
        Status::Yielded => {
            if !conn.queued {
                conn.queued = true;
                again.push(i);
            }
        }
        Status::Closed => {
            if let Some(mut conn) = conns.remove(i) {
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Accepts until WouldBlock (edge-triggered). A failed accept other than
/// WouldBlock (such as EMFILE) ends this round; the next connection's edge
/// retries.
fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let i = conns.insert(Conn::new(stream));
                let Some(Some(conn)) = conns.slots.get_mut(i) else {
                    unreachable!("just inserted");
                };
                let registered = poll.registry().register(
                    &mut conn.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
                if registered.is_err() {
                    conns.remove(i);
                    continue;
                }
                // Bytes may have arrived before registration; the first edge
                // reports them, so nothing to do here.
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("ceiling_echo: accept: {e}");
                return;
            }
        }
    }
}

fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("ceiling_echo: {e}");
            return ExitCode::from(2);
        }
    };
    match run(addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
