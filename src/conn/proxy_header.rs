//! The PROXY protocol header (v1 text, v2 binary) that a load balancer
//! (HAProxy, nginx `stream`, AWS NLB) sends first on each connection it
//! forwards, carrying the client's address.
//!
//! It is read with a deadline and a size bound, and exactly its own bytes
//! are taken from the socket: what is available is peeked, the header's end
//! is found in it (the v2 length field, or the v1 line's CRLF), and only
//! that much is read, so the client's first message, even when it came in
//! the same segment, reaches the handler intact. The parsing itself is the
//! `ppp` crate's; this module only frames, bounds and interprets it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

/// The v2 signature: the first 12 bytes of a binary header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's fixed part: the signature, version and command, family
/// and protocol, and the 2-byte length of what follows.
const V2_FIXED: usize = 16;
/// The longest v2 header taken (the fixed part, the addresses and TLVs).
/// HAProxy's and AWS NLB's headers are far shorter (an IPv6 header with an
/// NLB endpoint TLV is under 100 bytes); the format allows 65 551.
pub const V2_MAX: usize = 2048;
/// The v1 text starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;

/// Which header versions a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Only the v1 text header (nginx `proxy_protocol on`).
    V1,
    /// Only the v2 binary header (AWS NLB).
    V2,
    /// Either one (HAProxy `send-proxy` or `send-proxy-v2`).
    Any,
}

impl Versions {
    fn takes_v1(self) -> bool {
        matches!(self, Versions::V1 | Versions::Any)
    }
    fn takes_v2(self) -> bool {
        matches!(self, Versions::V2 | Versions::Any)
    }
}

/// What a valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A forwarded client: its address (and the address it connected to).
    Client(SocketAddr),
    /// The balancer speaking for itself (v2 `LOCAL`: its health checks) or
    /// not knowing the client (v1 `UNKNOWN`, v2 unspecified or UNIX
    /// addresses): the socket's address stands.
    Local,
}

impl Proxied {
    /// A client at `ip`:`port`, an IPv4-mapped IPv6 address as the IPv4 one.
    fn client(ip: std::net::IpAddr, port: u16) -> Proxied {
        Proxied::Client(SocketAddr::new(ip.to_canonical(), port))
    }
}

/// Why a header was not taken. Each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first bytes are not a header of a version the listener takes.
    #[error("no PROXY protocol header ({0})")]
    Missing(&'static str),
    /// Longer than the bound.
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    /// Framed, but not valid.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// Not complete within the deadline.
    #[error("no complete PROXY protocol header within {}", humantime::format_duration(*.0))]
    TooSlow(Duration),
    /// The connection ended, or failed, before the header was complete.
    #[error("connection ended before the PROXY protocol header was complete")]
    Closed,
}

/// Where a header ends, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The header is the first this many bytes.
    Complete(usize),
    /// More bytes are needed to know.
    NeedMore,
}

/// Finds where the header at the start of `bytes` ends, without parsing it
/// further; refuses what cannot become a header of `versions` within the
/// bounds. Never reads past `bytes`.
pub fn extent(bytes: &[u8], versions: Versions) -> Result<Extent, HeaderError> {
    let starts = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    if versions.takes_v2() && starts(V2_SIGNATURE) {
        if bytes.len() < V2_FIXED {
            return Ok(Extent::NeedMore);
        }
        let length = V2_FIXED + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if length > V2_MAX {
            return Err(HeaderError::TooLong(V2_MAX));
        }
        return Ok(if bytes.len() >= length {
            Extent::Complete(length)
        } else {
            Extent::NeedMore
        });
    }
    if versions.takes_v1() && starts(V1_PREFIX) {
        let window = &bytes[..bytes.len().min(V1_MAX)];
        let crlf = window.windows(2).position(|w| w == b"\r\n");
        // Only printable ASCII and spaces come before the CRLF: anything
        // else (a bare LF, say) can never become a header. Checked the same
        // way whether the CRLF has arrived or not, so that a prefix and the
        // whole header get the same verdict.
        let text_end = crlf.unwrap_or(window.len() - usize::from(window.last() == Some(&b'\r')));
        if window[..text_end]
            .iter()
            .any(|&b| !(b == b' ' || b.is_ascii_graphic()))
        {
            return Err(HeaderError::Invalid("not a v1 header line".into()));
        }
        if let Some(cr) = crlf {
            return Ok(Extent::Complete(cr + 2));
        }
        if bytes.len() >= V1_MAX {
            return Err(HeaderError::TooLong(V1_MAX));
        }
        return Ok(Extent::NeedMore);
    }
    Err(HeaderError::Missing(match versions {
        Versions::V1 => "expected a v1 header, \"PROXY ...\\r\\n\"",
        Versions::V2 => "expected a v2 header",
        Versions::Any => "expected a v1 or v2 header",
    }))
}

/// Parses a whole header, exactly `bytes` (as [`extent`] framed it).
pub fn parse(bytes: &[u8]) -> Result<Proxied, HeaderError> {
    let invalid = |e: &dyn std::fmt::Display| HeaderError::Invalid(e.to_string());
    if bytes.starts_with(V2_SIGNATURE) {
        let header = ppp::v2::Header::try_from(bytes).map_err(|e| invalid(&e))?;
        if header.len() != bytes.len() {
            return Err(HeaderError::Invalid("length mismatch".into()));
        }
        // TLVs are not used, but they must be well-formed.
        if header.tlvs().any(|tlv| tlv.is_err()) {
            return Err(HeaderError::Invalid("malformed TLV".into()));
        }
        if header.command == ppp::v2::Command::Local {
            return Ok(Proxied::Local);
        }
        if header.protocol == ppp::v2::Protocol::Datagram {
            return Err(HeaderError::Invalid(
                "a UDP (DGRAM) header on a TCP connection".into(),
            ));
        }
        return Ok(match header.addresses {
            ppp::v2::Addresses::IPv4(a) => Proxied::client(a.source_address.into(), a.source_port),
            ppp::v2::Addresses::IPv6(a) => Proxied::client(a.source_address.into(), a.source_port),
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => Proxied::Local,
        });
    }
    let header = ppp::v1::Header::try_from(bytes).map_err(|e| invalid(&e))?;
    if header.header.len() != bytes.len() {
        return Err(HeaderError::Invalid("length mismatch".into()));
    }
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Proxied::client(a.source_address.into(), a.source_port),
        ppp::v1::Addresses::Tcp6(a) => Proxied::client(a.source_address.into(), a.source_port),
        ppp::v1::Addresses::Unknown => Proxied::Local,
    })
}

/// Reads the header that must start `stream`, within `limit`, taking
/// exactly its bytes off the socket.
pub async fn read(
    stream: &TcpStream,
    versions: Versions,
    limit: Duration,
) -> Result<Proxied, HeaderError> {
    timeout(limit, read_unbounded_in_time(stream, versions))
        .await
        .map_err(|_| HeaderError::TooSlow(limit))?
}

async fn read_unbounded_in_time(
    stream: &TcpStream,
    versions: Versions,
) -> Result<Proxied, HeaderError> {
    let mut header = [0u8; V2_MAX];
    let mut have = 0;
    loop {
        // Peek at what has arrived after the bytes already taken...
        let want = header.len() - have;
        let peeked = stream
            .peek(&mut header[have..have + want])
            .await
            .map_err(|_| HeaderError::Closed)?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        // ...and take the header's part of it: all of it, if the end is not
        // in sight yet (a header's bytes, so safe to take), else up to the end.
        let take = match extent(&header[..have + peeked], versions)? {
            Extent::Complete(end) => end - have,
            Extent::NeedMore => peeked,
        };
        take_exactly(stream, &mut header[have..have + take]).await?;
        have += take;
        if let Extent::Complete(end) = extent(&header[..have], versions)? {
            return parse(&header[..end]);
        }
    }
}

/// Reads exactly `buf.len()` bytes that a peek has shown are there.
async fn take_exactly(stream: &TcpStream, buf: &mut [u8]) -> Result<(), HeaderError> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.readable().await.map_err(|_| HeaderError::Closed)?;
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => return Err(HeaderError::Closed),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(HeaderError::Closed),
        }
    }
    Ok(())
}

/// A v1 header for a connection from `client` to `server` (for `probe`).
pub fn v1_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() && server.is_ipv4() {
        "TCP4"
    } else {
        "TCP6"
    };
    let ip = |a: SocketAddr| match (family, a) {
        ("TCP6", SocketAddr::V4(v4)) => v4.ip().to_ipv6_mapped().to_string(),
        (_, a) => a.ip().to_string(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        ip(client),
        ip(server),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A v2 `PROXY` header for a connection from `client` to `server`, no TLVs
/// (for `probe` and the load generator).
pub fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x21); // version 2, PROXY
    match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            header.push(0x11); // IPv4, stream
            header.extend_from_slice(&12u16.to_be_bytes());
            header.extend_from_slice(&c.ip().octets());
            header.extend_from_slice(&s.ip().octets());
        }
        (c, s) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            header.push(0x21); // IPv6, stream
            header.extend_from_slice(&36u16.to_be_bytes());
            header.extend_from_slice(&v6(c).octets());
            header.extend_from_slice(&v6(s).octets());
        }
    }
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&server.port().to_be_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn v1_and_v2_headers_give_the_client_address() {
        let client = addr("192.0.2.7:40000");
        let server = addr("10.0.0.1:10086");
        for header in [v1_header(client, server), v2_header(client, server)] {
            assert_eq!(
                extent(&header, Versions::Any),
                Ok(Extent::Complete(header.len()))
            );
            assert_eq!(parse(&header), Ok(Proxied::Client(client)));
        }
        let client6 = addr("[2001:db8::7]:40000");
        for header in [v1_header(client6, server), v2_header(client6, server)] {
            assert_eq!(parse(&header), Ok(Proxied::Client(client6)));
        }
        // An IPv4-mapped client is its IPv4 address.
        let mapped = addr("[::ffff:203.0.113.9]:4444");
        assert_eq!(
            parse(&v2_header(mapped, addr("[::1]:1"))),
            Ok(Proxied::Client(addr("203.0.113.9:4444")))
        );
    }

    #[test]
    fn local_and_unknown_keep_the_socket_address() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Proxied::Local));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Proxied::Local));
    }

    #[test]
    fn framing_refuses_other_versions_and_what_is_too_long() {
        let v2 = v2_header(addr("192.0.2.7:1"), addr("10.0.0.1:2"));
        let v1 = v1_header(addr("192.0.2.7:1"), addr("10.0.0.1:2"));
        assert!(matches!(
            extent(&v2, Versions::V1),
            Err(HeaderError::Missing(_))
        ));
        assert!(matches!(
            extent(&v1, Versions::V2),
            Err(HeaderError::Missing(_))
        ));
        assert!(matches!(
            extent(b"GET / HTTP/1.1\r\n", Versions::Any),
            Err(HeaderError::Missing(_))
        ));
        // A prefix of either is not yet a verdict.
        assert_eq!(extent(b"PRO", Versions::Any), Ok(Extent::NeedMore));
        assert_eq!(extent(&v2[..13], Versions::Any), Ok(Extent::NeedMore));
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            extent(&long, Versions::Any),
            Err(HeaderError::TooLong(V1_MAX))
        );
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(
            extent(&huge, Versions::Any),
            Err(HeaderError::TooLong(V2_MAX))
        );
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n"),
            Err(HeaderError::Invalid(_))
        ));
        // A bare LF, or a control byte, is refused at once, not at the deadline.
        assert!(matches!(
            extent(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", Versions::Any),
            Err(HeaderError::Invalid(_))
        ));
        assert_eq!(
            extent(b"PROXY TCP4 1.2.3.4\r", Versions::Any),
            Ok(Extent::NeedMore)
        );
        // Found by fuzzing: a bare LF before the CRLF is refused whether or
        // not the CRLF has arrived yet (the verdict must not change).
        assert!(matches!(
            extent(b"PROXY \n\r\n", Versions::Any),
            Err(HeaderError::Invalid(_))
        ));
        // A TLV longer than the header, and a UDP header, are refused.
        let mut tlv = V2_SIGNATURE.to_vec();
        tlv.extend_from_slice(&[
            0x21, 0x11, 0, 15, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0xea, 0xff, 0xff,
        ]);
        assert!(
            matches!(parse(&tlv), Err(HeaderError::Invalid(_))),
            "{:?}",
            parse(&tlv)
        );
        let mut udp = v2_header(addr("192.0.2.7:1"), addr("10.0.0.1:2"));
        udp[13] = 0x12;
        assert!(matches!(parse(&udp), Err(HeaderError::Invalid(_))));
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_stay_for_the_handler_even_in_one_segment() {
        for versions in [Versions::V1, Versions::V2] {
            let (mut client, mut server) = crate::conn::tcp_pair().await;
            let from = addr("198.51.100.9:5555");
            let mut first = match versions {
                Versions::V1 => v1_header(from, addr("127.0.0.1:1")),
                _ => v2_header(from, addr("127.0.0.1:1")),
            };
            first.extend_from_slice(b"hello\n");
            client.write_all(&first).await.expect("send");
            let got = read(&server, versions, Duration::from_secs(5)).await;
            assert_eq!(got, Ok(Proxied::Client(from)));
            let mut rest = [0u8; 6];
            server.read_exact(&mut rest).await.expect("rest");
            assert_eq!(&rest, b"hello\n");
        }
    }

    #[tokio::test]
    async fn a_header_dripped_byte_by_byte_is_read_whole() {
        let (mut client, server) = crate::conn::tcp_pair().await;
        let from = addr("198.51.100.9:5555");
        let header = v1_header(from, addr("127.0.0.1:1"));
        let writer = tokio::spawn(async move {
            for byte in header {
                client.write_all(&[byte]).await.expect("send");
                tokio::task::yield_now().await;
            }
            client
        });
        let got = read(&server, Versions::Any, Duration::from_secs(5)).await;
        assert_eq!(got, Ok(Proxied::Client(from)));
        drop(writer.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_or_absent_header_ends_at_the_deadline() {
        let (mut client, server) = crate::conn::tcp_pair().await;
        client.write_all(b"PROXY TCP4 ").await.expect("send");
        let got = read(&server, Versions::Any, Duration::from_secs(3)).await;
        assert_eq!(got, Err(HeaderError::TooSlow(Duration::from_secs(3))));
        drop(client);
    }
}
