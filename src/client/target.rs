//! What `get` is pointed at: `HOST:PORT NAME` as before, or a URL,
//! `http://HOST[:PORT]/PATH` or `https://HOST[:PORT]/PATH` (the port
//! defaults to 80 or 443; the path, percent-decoded, is the name). Only
//! `https://` speaks TLS.

use crate::http::percent;

/// Where `get` connects, what it asks for, and whether over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTarget {
    /// `host:port`.
    pub addr: String,
    /// The name on the server.
    pub name: String,
    /// True for an `https://` URL.
    pub https: bool,
}

/// Reads `get`'s ADDR (or URL) and NAME; an error says what to write.
pub fn get_target(addr: &str, name: Option<&str>) -> Result<GetTarget, String> {
    let Some((scheme, rest)) = addr.split_once("://") else {
        let Some(name) = name else {
            return Err(format!(
                "the file's NAME is missing: write get {addr} NAME, or get \
                 http://{addr}/NAME (https:// for TLS)"
            ));
        };
        return Ok(GetTarget {
            addr: addr.to_owned(),
            name: name.to_owned(),
            https: false,
        });
    };
    let (https, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (false, 80),
        "https" => (true, 443),
        _ => {
            return Err(format!(
                "{addr}: get speaks http:// and https:// (or HOST:PORT NAME), not {scheme}://"
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let path = path.split('#').next().unwrap_or_default();
    if path.contains('?') {
        return Err(format!(
            "{addr}: a query (?...) names no file; write %3F for a ? in a name"
        ));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "{addr}: the URL needs a host (and no user:password@), as in \
             https://127.0.0.1:1111/hello.txt"
        ));
    }
    let has_port = match authority.rsplit_once(':') {
        // `[::1]:443` has one; `[::1]` does not.
        Some((host, port)) if !port.contains(']') => {
            if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{addr}: the port is not a number ({authority} should be HOST:PORT)"
                ));
            }
            true
        }
        _ => false,
    };
    let addr_only = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    let decoded = percent::decode(path.trim_start_matches('/'))
        .map_err(|e| format!("{addr}: the path is not valid percent-encoded UTF-8 ({e})"))?;
    let name = match (decoded.is_empty(), name) {
        (false, Some(_)) => {
            return Err(format!(
                "{addr} names the file already: give the name in the URL or as NAME, not both"
            ));
        }
        (false, None) => decoded,
        // `http://host:port` and NAME: the NAME.
        (true, Some(name)) => name.to_owned(),
        // The top directory (for -r).
        (true, None) => path.to_owned(),
    };
    Ok(GetTarget {
        addr: addr_only,
        name,
        https,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: &str, name: &str, https: bool) -> GetTarget {
        GetTarget {
            addr: addr.into(),
            name: name.into(),
            https,
        }
    }

    #[test]
    fn urls_and_addresses_give_the_server_the_name_and_the_protocol() {
        let cases = [
            (
                ("127.0.0.1:1111", Some("a.txt")),
                target("127.0.0.1:1111", "a.txt", false),
            ),
            (
                ("https://127.0.0.1:1111/a.txt", None),
                target("127.0.0.1:1111", "a.txt", true),
            ),
            (
                ("HTTPS://localhost/docs/", None),
                target("localhost:443", "docs/", true),
            ),
            (
                ("http://[::1]/a%20b.txt", None),
                target("[::1]:80", "a b.txt", false),
            ),
            (
                ("https://[::1]:8443/x#frag", None),
                target("[::1]:8443", "x", true),
            ),
            (
                ("http://127.0.0.1:8080", Some("hello.txt")),
                target("127.0.0.1:8080", "hello.txt", false),
            ),
            (
                ("https://127.0.0.1:8080/", None),
                target("127.0.0.1:8080", "/", true),
            ),
            (
                ("https://127.0.0.1:8080", None),
                target("127.0.0.1:8080", "", true),
            ),
            (
                ("https://h:1/%E5%90%8D.txt", None),
                target("h:1", "名.txt", true),
            ),
        ];
        for ((addr, name), want) in cases {
            assert_eq!(get_target(addr, name), Ok(want), "{addr} {name:?}");
        }
    }

    #[test]
    fn what_is_not_a_target_says_what_to_write() {
        let cases = [
            (("127.0.0.1:1111", None), "NAME is missing"),
            (("ftp://h:1/a", None), "not ftp://"),
            (("https://h:1/a?b=1", None), "a query"),
            (("https:///a", None), "needs a host"),
            (("https://u:p@h:1/a", None), "needs a host"),
            (("https://h:x/a", None), "not a number"),
            (("https://h:1/a", Some("b")), "not both"),
            (("https://h:1/%zz", None), "percent-encoded"),
        ];
        for ((addr, name), says) in cases {
            let e = get_target(addr, name).unwrap_err();
            assert!(e.contains(says), "{addr}: {e}");
        }
    }
}
