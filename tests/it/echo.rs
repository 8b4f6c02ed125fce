//! The echo handler over real TCP: exact bytes, half-close, many clients at
//! once, and backpressure against a client that never reads.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::common::{LIMIT, TestServer, connect, listener, read_to_end};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn echoes_every_byte_then_closes_on_half_close() {
    let server = TestServer::start(&listener("echo", "echo", ""));
    let mut stream = connect(server.addr("echo")).await;
    // Every byte value, no newline anywhere in particular: echo does no framing.
    let data = pattern(300_000, 7);
    let (mut rd, mut wr) = stream.split();
    let send = async {
        wr.write_all(&data).await.unwrap();
        // What `nc -N` does at end of input.
        wr.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = rd.read_to_end(&mut got);
    let (_, read) = timeout(LIMIT, async { tokio::join!(send, recv) })
        .await
        .expect("echo timed out");
    read.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
    drop(stream);
    assert_eq!(server.shutdown().await.abandoned, 0);
}

/// `printf ... | nc -N`: all of it sent and half-closed before a byte is
/// read. The server reads the client's end after its last echo and closes
/// without a shutdown or a drain of its own (nothing can follow a FIN); what
/// it queued must still arrive whole, ended by FIN, not a reset.
#[tokio::test]
async fn a_client_that_half_closes_before_reading_gets_every_byte_then_fin() {
    let server = TestServer::start(&listener("echo", "echo", ""));
    let mut stream = connect(server.addr("echo")).await;
    // Small enough to sit in the loopback buffers unread.
    let data = pattern(48 * 1024, 3);
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    let got = read_to_end(&mut stream).await;
    assert!(got == data, "{} bytes echoed of {}", got.len(), data.len());
    drop(stream);
    assert_eq!(server.shutdown().await.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_at_once() {
    let server = TestServer::start(&listener("echo", "echo", ""));
    let addr = server.addr("echo");
    let mut clients = Vec::new();
    for i in 0..200u8 {
        clients.push(tokio::spawn(async move {
            let mut stream = connect(addr).await;
            let data = pattern(20_000, i);
            stream.write_all(&data).await.unwrap();
            let mut got = vec![0; data.len()];
            timeout(LIMIT, stream.read_exact(&mut got))
                .await
                .expect("echo timed out")
                .unwrap();
            assert!(got == data, "client {i} got other bytes back");
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_held_back_and_others_are_served() {
    let server = TestServer::start(&listener("echo", "echo", ""));
    let addr = server.addr("echo");
    let mut hog = connect(addr).await;
    // 64 MiB is far more than the socket buffers of both sides: the write can
    // only finish if the server buffers the echo itself, which it must not.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'h'; 1 << 20];
        for _ in 0..64 {
            if hog.write_all(&chunk).await.is_err() {
                break;
            }
        }
        hog
    });
    let mut other = connect(addr).await;
    other.write_all(b"still served\n").await.unwrap();
    let mut got = [0u8; 13];
    timeout(LIMIT, other.read_exact(&mut got))
        .await
        .expect("second client starved")
        .unwrap();
    assert_eq!(&got, b"still served\n");
    assert!(
        !writer.is_finished(),
        "64 MiB were accepted without being read back: no backpressure"
    );
    writer.abort();
    drop(other);
    server.shutdown().await;
}

#[tokio::test]
async fn closes_at_shutdown() {
    let server = TestServer::start(&listener("echo", "echo", ""));
    let mut stream = connect(server.addr("echo")).await;
    stream.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    timeout(LIMIT, stream.read_exact(&mut one))
        .await
        .unwrap()
        .unwrap();
    let report = server.shutdown().await;
    assert_eq!(report.abandoned, 0);
    assert!(read_to_end(&mut stream).await.is_empty());
}

/// The server's resident memory (`VmRSS`), in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// Opens `n` connections to `addr`, each echoing `message` once, and keeps
/// them open.
fn quiet_after_one_echo(
    addr: std::net::SocketAddr,
    n: usize,
    message: &[u8],
) -> Vec<std::net::TcpStream> {
    use std::io::{Read, Write};
    (0..n)
        .map(|_| {
            let mut conn = std::net::TcpStream::connect(addr).expect("connect");
            conn.set_read_timeout(Some(LIMIT)).expect("read timeout");
            conn.write_all(message).expect("send");
            let mut back = vec![0; message.len()];
            conn.read_exact(&mut back).expect("the echo");
            assert!(back == message, "echoed bytes differ");
            conn
        })
        .collect()
}

/// A connection that paused after echoing (a read shorter than the 64 KiB
/// buffer) waits for its client's next bytes without the buffer: 400 quiet
/// connections, each after a 48 KiB echo, grow the server by far less than
/// the 19 MB their buffers would keep (measured: about 1 MB, the tasks).
#[test]
fn connections_quiet_after_an_echo_keep_no_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, listener("echo", "echo", "")).expect("config");
    let mut daemon = crate::cli::Daemon::start(&config);
    let addr = daemon.addr("echo");
    let pid = daemon.child.id();
    let message = pattern(48 * 1024, 5);
    // Not warmed with 400 others first: buffers they freed would stay
    // resident and hide the ones held now. One connection starts the
    // runtime's and the allocator's structures.
    drop(quiet_after_one_echo(addr, 1, &message));
    let before = resident_bytes(pid);
    let held = quiet_after_one_echo(addr, 400, &message);
    let grown = resident_bytes(pid).saturating_sub(before);
    if grown > 400 * 16 * 1024 {
        daemon.fail(&format!(
            "400 quiet connections grew the server by {grown} B (from {before} B)"
        ));
    }
    // Each still answers.
    for mut conn in held {
        use std::io::{Read, Write};
        conn.write_all(b"again").expect("send");
        let mut back = [0; 5];
        conn.read_exact(&mut back).expect("the echo");
        assert_eq!(&back, b"again");
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}
