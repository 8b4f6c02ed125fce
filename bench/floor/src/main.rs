//! The benchmark's runtime floor: the plainest echo server tokio can run,
//! to tell in the same run what a unit of work costs on tokio itself from
//! what switchboard adds to it (`bench/run.sh`, the server `tokio-floor`).
//! Not part of the daemon.
//!
//! It does what every tokio server does and nothing more: tokio's
//! multi-threaded runtime (one worker a CPU the process may run on), one task
//! a connection, a 64 KiB buffer a connection (as the ceiling's, but not
//! zeroed: tokio's `read_buf` reads into its spare capacity, as switchboard
//! does), read and write the bytes back until the client closes. No limits, timeouts,
//! logging or metrics: it is not fit to face a network, which is the point.
//! Accepted sockets get TCP_NODELAY, as the ceiling's and switchboard's do.
//!
//! The ceiling (`ceiling_echo`) is one thread over one epoll set; so the
//! floor's cost over the ceiling's is the runtime's (tasks, wake-ups, the
//! I/O driver), and switchboard's over the floor's is switchboard's own.
//!
//! Its own package (bench/floor), so that it is built with the tokio
//! features it names and nothing else: as an example of switchboard's
//! package it would get the dev-dependencies' features too (tokio's
//! `test-util`, whose clock takes a lock at every reading).
//!
//! ```text
//! cargo run --release --manifest-path bench/floor/Cargo.toml -- --addr 127.0.0.1:0
//! listening on 127.0.0.1:40123
//! ```
//!
//! Runs until killed.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes read at most at a time (the ceiling's buffer).
const BUFFER: usize = 64 * 1024;

/// Chunks echoed before the task lets the others run: the ceiling's and
/// switchboard's turn.
const CHUNKS_PER_TURN: u32 = 4;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr: Option<SocketAddr> = match (args.next().as_deref(), args.next()) {
        (Some("--addr"), Some(addr)) => addr.parse().ok(),
        _ => None,
    };
    let Some(addr) = addr else {
        eprintln!("usage: tokio-floor --addr IP:PORT");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio-floor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("tokio-floor: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(bound) => println!("listening on {bound}"),
            Err(e) => eprintln!("tokio-floor: {e}"),
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(echo(stream));
                }
                // Out of descriptors, or the like: the next may work, after
                // a pause (not a spin; blocking the worker is fine here).
                Err(e) => {
                    eprintln!("tokio-floor: accept: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    })
}

/// Echoes what `stream` sends until it closes or fails.
async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = BytesMut::with_capacity(BUFFER);
    let mut chunks_in_turn = 0;
    loop {
        buffer.clear();
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if stream.write_all(&buffer).await.is_err() {
            return;
        }
        chunks_in_turn += 1;
        if chunks_in_turn == CHUNKS_PER_TURN {
            chunks_in_turn = 0;
            tokio::task::yield_now().await;
        }
    }
}
