//! The benchmark's UDP echo ceiling: the leanest UDP echo, to compare
//! switchboard's UDP echo against in the same run (`bench/run.sh`). Not
//! part of the daemon. One thread, blocking: receive a datagram, send it
//! back to its sender.
//!
//! ```text
//! cargo run --release --example ceiling_udp_echo -- 127.0.0.1:0
//! listening on 127.0.0.1:40123/udp
//! ```
//!
//! Runs until killed.
#![forbid(unsafe_code)]

use std::net::UdpSocket;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let socket = UdpSocket::bind(addr)?;
    println!("listening on {}/udp", socket.local_addr()?);
    let mut buf = [0u8; 65_536];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        // A reply that cannot be sent is dropped, as switchboard drops it.
        let _ = socket.send_to(&buf[..n], peer);
    }
}
