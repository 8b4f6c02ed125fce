//! attack4: a hostile server's tar stream against `get -r`, beyond the
//! cases of `get_archive`: an archive that never ends but creates nothing
//! new (the same directory, a symlink, a global pax header, over and
//! over) must stop at the cap on members, not hold the run until its
//! deadline.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::common::LIMIT;

/// A `ustar` header block for `name`, type `flag`, `size`; checksum set.
fn header(name: &[u8], flag: u8, size: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"14000000000\0");
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// A server answering `GET /top.tar` as a folder archive: the folder
/// `top/`, then `repeated` forever (chunked, so no length ever ends it),
/// until the client goes.
async fn endless_server(listener: TcpListener, repeated: Vec<u8>) {
    while let Ok((stream, _)) = listener.accept().await {
        let repeated = repeated.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let stream = stream.get_mut();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n\
                        ETag: \"tar-00ff00ff\"\r\nTransfer-Encoding: chunked\r\n\
                        Connection: close\r\n\r\n";
            let top = header(b"top/", b'5', 0);
            let mut first = head.as_bytes().to_vec();
            first.extend_from_slice(format!("{:x}\r\n", top.len()).as_bytes());
            first.extend_from_slice(&top);
            first.extend_from_slice(b"\r\n");
            if stream.write_all(&first).await.is_err() {
                return;
            }
            let mut chunk = format!("{:x}\r\n", repeated.len()).into_bytes();
            chunk.extend_from_slice(&repeated);
            chunk.extend_from_slice(b"\r\n");
            while stream.write_all(&chunk).await.is_ok() {}
        });
    }
}

async fn run_get(addr: &str, out_dir: &str) -> Output {
    let args: Vec<String> = ["get", addr, "top/", "-r", "-q", "-o", out_dir]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let child = crate::cli::switchboard()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        crate::cli::wait_output(child, LIMIT)
    })
    .await
    .expect("client thread")
}

#[tokio::test]
async fn an_endless_archive_of_members_that_create_nothing_stops_at_the_member_cap() {
    // 256 members a chunk: the same directory, a symlink, a global pax
    // header (with its body): none creates a file or a new directory.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("the same directory", header(b"top/d/", b'5', 0).repeat(256)),
        ("a symlink", header(b"top/s", b'2', 0).repeat(256)),
        ("a global pax header", {
            let mut g = header(b"g", b'g', 9);
            g.extend_from_slice(b"9 a=bbbb\n");
            g.resize(1024, 0);
            g.repeat(128)
        }),
    ];
    for (what, repeated) in cases {
        let base = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(endless_server(listener, repeated));
        let out_dir = base.path().join("out");
        let started = Instant::now();
        let out = run_get(&addr, out_dir.to_str().unwrap()).await;
        let took = started.elapsed();
        server.abort();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("members in the archive"),
            "{what}: {stderr}"
        );
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}");
    }
}
