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
