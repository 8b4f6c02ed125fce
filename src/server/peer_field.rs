//! The `peer` (and `via`) field of a connection's span, formatted without
//! `core::fmt`'s per-argument machinery.
//!
//! Every connection's span formats its fields once, when it is made, even
//! when the log budget then drops each of its lines; std's `SocketAddr`
//! formats an IPv4 address and port as six formatting arguments, most of
//! the span's cost (bench/ANALYSIS.md, "connect"). IPv4 is written here
//! digit by digit into a stack buffer, with std's exact output; IPv6 keeps
//! std's formatting (its zero compression is not worth copying).

use std::fmt;
use std::net::SocketAddr;

/// Displays a socket address exactly as `SocketAddr`'s `Display` does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerField(pub(crate) SocketAddr);

/// "255.255.255.255:65535".
const LONGEST_V4: usize = 21;

impl fmt::Display for PeerField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketAddr::V4(v4) = self.0 else {
            return fmt::Display::fmt(&self.0, f);
        };
        let mut buf = [0u8; LONGEST_V4];
        let mut len = 0;
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            len += put_decimal(&mut buf[len..], u16::from(octet));
        }
        buf[len] = b':';
        len += 1;
        len += put_decimal(&mut buf[len..], v4.port());
        // Only ASCII digits, dots and a colon were written.
        let text = std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?;
        f.pad(text)
    }
}

/// Writes `n` in decimal at the start of `out` (room for 5 digits is
/// enough for any u16); returns the digits written.
fn put_decimal(out: &mut [u8], n: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let written = digits.len() - at;
    out[..written].copy_from_slice(&digits[at..]);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_std_does() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:10010",
            "127.0.0.91:33787",
            "10.0.0.9:9",
            "255.255.255.255:65535",
            "1.22.133.4:100",
            "[::1]:1111",
            "[2001:db8::1]:443",
            "[fe80::1%3]:80",
            "[::ffff:1.2.3.4]:8080",
        ] {
            let addr: SocketAddr = addr.parse().expect("a test address");
            assert_eq!(PeerField(addr).to_string(), addr.to_string(), "{addr}");
            assert_eq!(
                format!("{:>24}", PeerField(addr)),
                format!("{addr:>24}"),
                "{addr} padded"
            );
        }
    }
}
