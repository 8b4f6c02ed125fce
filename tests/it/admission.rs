//! Who may connect, on loopback source addresses as distinct clients: the
//! access lists, the connections one source may hold, and the rate at
//! which it may open them. Refusals come before any handler work: a
//! denied client is closed without a byte, one over a limit gets one line.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{LIMIT, TestServer, connect_from, listener, read_to_end};

const TOO_MANY: &[u8] = b"ERR too many connections from your address\n";
const TOO_FAST: &[u8] = b"ERR too many connections from your address, too fast\n";

/// True when the connection echoes a byte (it was admitted).
async fn echoes(conn: &mut TcpStream) -> bool {
    if conn.write_all(b"x").await.is_err() {
        return false;
    }
    let mut back = [0u8; 1];
    matches!(timeout(LIMIT, conn.read(&mut back)).await, Ok(Ok(1)) if back == *b"x")
}

#[tokio::test]
async fn the_connection_over_the_per_source_limit_gets_the_err_line_while_another_source_is_served()
{
    let server = TestServer::start(&listener("echo", "echo", "max_connections_per_source = 2"));
    let addr = server.addr("echo");
    let mut first = connect_from(2, addr).await;
    let mut second = connect_from(2, addr).await;
    assert!(echoes(&mut first).await && echoes(&mut second).await);
    let mut third = connect_from(2, addr).await;
    assert_eq!(read_to_end(&mut third).await, TOO_MANY);
    let mut other = connect_from(3, addr).await;
    assert!(echoes(&mut other).await, "another source is served");
    // A slot freed is a slot again: the close is counted once the server
    // has seen it, so the retry is bounded, not timed.
    drop(first);
    let mut admitted = false;
    for _ in 0..200 {
        let mut again = connect_from(2, addr).await;
        if echoes(&mut again).await {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(admitted, "the source never got its slot back");
    drop((second, other));
    server.shutdown().await;
}

#[tokio::test]
async fn deny_closes_without_a_byte_and_allow_admits_only_what_it_lists() {
    let server = TestServer::start(
        &[
            listener("denying", "echo", "deny = [\"127.0.0.4\"]"),
            listener("allowing", "echo", "allow = [\"127.0.0.6/32\"]"),
            listener(
                "both",
                "echo",
                "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.9\"]",
            ),
        ]
        .concat(),
    );
    let mut denied = connect_from(4, server.addr("denying")).await;
    assert!(read_to_end(&mut denied).await.is_empty());
    assert!(echoes(&mut connect_from(5, server.addr("denying")).await).await);

    assert!(echoes(&mut connect_from(6, server.addr("allowing")).await).await);
    let mut unlisted = connect_from(7, server.addr("allowing")).await;
    assert!(read_to_end(&mut unlisted).await.is_empty());

    // Listed in both: deny wins.
    let mut both = connect_from(9, server.addr("both")).await;
    assert!(read_to_end(&mut both).await.is_empty());
    assert!(echoes(&mut connect_from(8, server.addr("both")).await).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_source_opening_connections_too_fast_is_told_so_and_counted() {
    let server = TestServer::start(
        &[
            listener(
                "echo",
                "echo",
                "connection_rate_per_source = \"1/m burst 2\"",
            ),
            listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let addr = server.addr("echo");
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut conn = connect_from(10, addr).await;
        assert!(echoes(&mut conn).await);
        kept.push(conn);
    }
    let mut third = connect_from(10, addr).await;
    assert_eq!(read_to_end(&mut third).await, TOO_FAST);
    assert!(echoes(&mut connect_from(11, addr).await).await);

    let mut scrape = crate::common::connect(server.addr("metrics")).await;
    scrape.write_all(b"\n").await.expect("send");
    let text = String::from_utf8(read_to_end(&mut scrape).await).expect("UTF-8");
    assert!(
        text.contains(
            "switchboard_connections_refused_total{handler=\"echo\",listener=\"echo\",reason=\"too_fast\"} 1\n"
        ),
        "{text}"
    );
    drop(kept);
    server.shutdown().await;
}
