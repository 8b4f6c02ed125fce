//! The request head (RFC 9112 §2-§3): the request line, and the header
//! fields a response depends on. Parsed by `httparse`, bounded in bytes
//! and fields. The fields that frame the message or the connection
//! (`Content-Length`, `Transfer-Encoding`, `Connection`) must be valid, or
//! the request is refused with 400 and the connection closed: a server
//! that skipped a framing field it could not read would answer a body as
//! the next request. A field sent several times is one value joined by
//! commas (RFC 9110 §5.3), for the fields that are no lists too (`Range`,
//! `If-Range`, the dates): their joined value is not valid, so they are
//! ignored or do not match, rather than one of the values being picked.

use super::percent;
use super::status::{BAD_REQUEST, HEADERS_TOO_LARGE, Status, URI_TOO_LONG};

/// Longest request head: the request line and the header fields.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields in one request.
pub(crate) const MAX_HEADERS: usize = 64;
/// Longest request target.
pub(crate) const MAX_TARGET_BYTES: usize = 4096;

/// True when `line` (without its line ending) is an HTTP/1.x request line:
/// an upper-case method, one space, a target without spaces, one space,
/// `HTTP/1.0` or `HTTP/1.1`.
pub(crate) fn is_request_line(line: &[u8]) -> bool {
    request_line(line).is_some()
}

/// `METHOD SP target SP HTTP/1.x`, as (method, target): a method of 1 to
/// 16 capitals, a target of visible ASCII or bytes over 0x7f (spaces and
/// control bytes are not a target). What every HTTP speaker here (the
/// download port, the metrics handler) takes for a request line.
pub(crate) fn request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = line
        .strip_suffix(b" HTTP/1.1")
        .or_else(|| line.strip_suffix(b" HTTP/1.0"))?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let (method, target) = rest.split_at(space);
    let target = target.get(1..).unwrap_or_default();
    ((1..=16).contains(&method.len())
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && target.iter().all(|&b| b.is_ascii_graphic() || b >= 0x80))
    .then_some((method, target))
}

/// The methods served; the others get 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Other,
}

/// A parsed request head: what the response depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: Method,
    /// The method as sent (for the log).
    pub method_name: String,
    /// The target as sent (for the log).
    pub target: String,
    /// The percent-decoded path, without the leading `/` (the resolver's name).
    pub path: Result<String, Status>,
    /// `HTTP/1.x`'s x.
    pub minor_version: u8,
    /// The client wants the connection kept (the version's default, or `Connection:`).
    pub keep_alive: bool,
    /// The request has a body (`Content-Length` other than 0, or
    /// `Transfer-Encoding`): it is answered, and the connection closed.
    pub has_body: bool,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_match: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub accept: Option<String>,
}

impl Request {
    /// The request's conditional fields.
    pub(crate) fn preconditions(&self) -> super::conditional::Preconditions<'_> {
        super::conditional::Preconditions {
            if_match: self.if_match.as_deref(),
            if_unmodified_since: self.if_unmodified_since.as_deref(),
            if_none_match: self.if_none_match.as_deref(),
            if_modified_since: self.if_modified_since.as_deref(),
            if_range: self.if_range.as_deref(),
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` when more
/// bytes are needed, else the request and the head's length. Errors are
/// the status to answer with (and close).
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, Status> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HEADERS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BAD_REQUEST),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(HEADERS_TOO_LARGE);
    }
    let (Some(method_name), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(BAD_REQUEST);
    };
    if target.len() > MAX_TARGET_BYTES {
        return Err(URI_TOO_LONG);
    }
    let method = match method_name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let mut request = Request {
        method,
        method_name: method_name.to_owned(),
        target: target.to_owned(),
        path: path_of(target),
        minor_version,
        keep_alive: minor_version >= 1,
        has_body: false,
        range: None,
        if_range: None,
        if_match: None,
        if_unmodified_since: None,
        if_none_match: None,
        if_modified_since: None,
        accept: None,
    };
    let mut content_length: Option<u64> = None;
    let mut chunked_or_other = false;
    for field in parsed.headers.iter() {
        let name = field.name;
        let raw = trim_ows(field.value);
        if name.eq_ignore_ascii_case("connection") {
            for token in list_of_tokens(raw)? {
                if token.eq_ignore_ascii_case("close") {
                    request.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    request.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = content_length_of(raw)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(BAD_REQUEST);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            list_of_tokens(raw)?;
            chunked_or_other = true;
        } else {
            // Other fields are only read; bytes that are not UTF-8
            // (obs-text) become U+FFFD, which no validator or date holds.
            let slot = match name.to_ascii_lowercase().as_str() {
                "range" => &mut request.range,
                "if-range" => &mut request.if_range,
                "if-modified-since" => &mut request.if_modified_since,
                "if-unmodified-since" => &mut request.if_unmodified_since,
                "accept" => &mut request.accept,
                "if-match" => &mut request.if_match,
                "if-none-match" => &mut request.if_none_match,
                _ => continue,
            };
            // Several fields of a name are one value joined by commas
            // (RFC 9110 §5.3): a list for the lists (`Accept`, `If-Match`,
            // `If-None-Match`); for the others, which are no lists, a
            // value that is not valid (two `Range` fields are no range
            // and are ignored, two dates are no date, two `If-Range`
            // validators match nothing), never the first or the last.
            append_list(slot, &String::from_utf8_lossy(raw));
        }
    }
    // Both framings at once is how requests are smuggled (RFC 9112 §6.1).
    if chunked_or_other && content_length.is_some() {
        return Err(BAD_REQUEST);
    }
    request.has_body = chunked_or_other || content_length.is_some_and(|len| len > 0);
    Ok(Some((request, head_len)))
}

/// `value` without the optional white space around it.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |at| at + 1);
    value.get(start..end).unwrap_or_default()
}

/// A `token` character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `#token` list (empty elements allowed, RFC 9110 §5.6.1); anything
/// else (obs-text, separators, parameters) is a 400.
fn list_of_tokens(value: &[u8]) -> Result<Vec<&str>, Status> {
    let text = std::str::from_utf8(value).map_err(|_| BAD_REQUEST)?;
    let mut tokens = Vec::new();
    for element in text.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        if !element.bytes().all(is_tchar) {
            return Err(BAD_REQUEST);
        }
        tokens.push(element);
    }
    Ok(tokens)
}

/// `Content-Length`: `1*DIGIT`, or a list of the same such value (RFC 9110
/// §8.6); anything else is a 400.
fn content_length_of(value: &[u8]) -> Result<u64, Status> {
    let mut length = None;
    for element in value.split(|&b| b == b',') {
        let digits = trim_ows(element);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(BAD_REQUEST);
        }
        let parsed = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or(BAD_REQUEST)?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err(BAD_REQUEST);
        }
        length = Some(parsed);
    }
    length.ok_or(BAD_REQUEST)
}

fn append_list(list: &mut Option<String>, more: &str) {
    match list {
        Some(list) => {
            list.push_str(", ");
            list.push_str(more);
        }
        None => *list = Some(more.to_owned()),
    }
}

/// The resolver's name for a request target: the path of an origin-form
/// (`/a/b?q`) or absolute-form (`http://host/a/b`) target, percent-decoded
/// strictly (as UTF-8), without its leading `/`s: `//a` and `/%2Fa` are
/// `a`, as nginx merges slashes, and no name sent on (a redirect's
/// `Location`) can begin with `//`, which would name another host.
fn path_of(target: &str) -> Result<String, Status> {
    let path = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |at| &rest[at..])
    } else {
        target
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let Some(path) = path.strip_prefix('/') else {
        return Err(BAD_REQUEST);
    };
    let decoded = percent::decode(path).map_err(|_| BAD_REQUEST)?;
    Ok(match decoded.strip_prefix('/') {
        Some(rest) => rest.trim_start_matches('/').to_owned(),
        None => decoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[u8]) -> Result<Request, Status> {
        let mut bytes = b"GET /a HTTP/1.1\r\nHost: x\r\n".to_vec();
        bytes.extend_from_slice(fields);
        bytes.extend_from_slice(b"\r\n");
        match parse_head(&bytes) {
            Ok(Some((request, len))) => {
                assert_eq!(len, bytes.len());
                Ok(request)
            }
            Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(&bytes)),
            Err(status) => Err(status),
        }
    }

    /// (has_body, keep_alive), or the refusal.
    type Framing = Result<(bool, bool), Status>;

    #[test]
    fn framing_and_connection_fields_must_be_valid() {
        let cases: &[(&[u8], Framing)] = &[
            (b"", Ok((false, true))),
            (b"Content-Length: 0\r\n", Ok((false, true))),
            (b"Content-Length: 28\r\n", Ok((true, true))),
            (b"Content-Length: 28, 28\r\n", Ok((true, true))),
            (
                b"Content-Length: 28\r\nContent-Length: 28\r\n",
                Ok((true, true)),
            ),
            (b"Content-Length:  7 \r\n", Ok((true, true))),
            (b"Content-Length: 28\xa0\r\n", Err(BAD_REQUEST)),
            (b"Content-Length: \xa028\r\n", Err(BAD_REQUEST)),
            (b"Content-Length: +28\r\n", Err(BAD_REQUEST)),
            (b"Content-Length: 0x1c\r\n", Err(BAD_REQUEST)),
            (b"Content-Length: \r\n", Err(BAD_REQUEST)),
            (b"Content-Length: 28, 29\r\n", Err(BAD_REQUEST)),
            (
                b"Content-Length: 28\r\nContent-Length: 29\r\n",
                Err(BAD_REQUEST),
            ),
            (
                b"Content-Length: 99999999999999999999999\r\n",
                Err(BAD_REQUEST),
            ),
            (b"Transfer-Encoding: chunked\r\n", Ok((true, true))),
            (b"Transfer-Encoding: gzip, chunked\r\n", Ok((true, true))),
            (b"Transfer-Encoding: chunked\xa0\r\n", Err(BAD_REQUEST)),
            (
                b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Err(BAD_REQUEST),
            ),
            (
                b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                Err(BAD_REQUEST),
            ),
            (b"Connection: close\r\n", Ok((false, false))),
            (b"Connection: keep-alive, Upgrade\r\n", Ok((false, true))),
            (b"Connection: , close,\r\n", Ok((false, false))),
            (b"Connection: close\xa0\r\n", Err(BAD_REQUEST)),
            (b"Connection: clo se\r\n", Err(BAD_REQUEST)),
            (b"Connection: close;x=1\r\n", Err(BAD_REQUEST)),
            (b"Connection: \"close\"\r\n", Err(BAD_REQUEST)),
        ];
        for (fields, expected) in cases {
            let got = head(fields).map(|r| (r.has_body, r.keep_alive));
            assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(fields));
        }
    }

    #[test]
    fn other_fields_are_read_leniently_and_lists_join() {
        let r = head(
            b"If-Match: \"a\"\r\nIf-Match: \"b\"\r\nIf-None-Match: \"c\"\r\n\
              If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\nRange: bytes=1-\xa0\r\n\
              Accept: text/html\r\nX-Other: \xff\r\n",
        )
        .expect("parses");
        assert_eq!(r.if_match.as_deref(), Some("\"a\", \"b\""));
        assert_eq!(r.if_none_match.as_deref(), Some("\"c\""));
        assert_eq!(
            r.if_unmodified_since.as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert_eq!(r.range.as_deref(), Some("bytes=1-\u{fffd}"));
        assert_eq!(r.accept.as_deref(), Some("text/html"));
    }

    #[test]
    fn a_field_sent_twice_is_one_joined_value() {
        // (fields, the Range, the If-Range, the If-Modified-Since, the Accept)
        type Joined = (
            &'static [u8],
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[Joined] = &[
            (b"Range: bytes=5-\r\n", Some("bytes=5-"), None, None, None),
            (
                b"Range: bytes=5-\r\nRange: bytes=0-1\r\n",
                Some("bytes=5-, bytes=0-1"),
                None,
                None,
                None,
            ),
            (
                b"Range: bytes=5-\r\nRange: bytes=5-\r\n",
                Some("bytes=5-, bytes=5-"),
                None,
                None,
                None,
            ),
            (
                b"Range:\r\nRange: bytes=5-\r\n",
                Some(", bytes=5-"),
                None,
                None,
                None,
            ),
            (
                b"If-Range: \"a\"\r\nIf-Range: \"b\"\r\n",
                None,
                Some("\"a\", \"b\""),
                None,
                None,
            ),
            (
                b"If-Modified-Since: x\r\nIf-Modified-Since: y\r\n",
                None,
                None,
                Some("x, y"),
                None,
            ),
            (
                b"Accept: text/plain\r\nAccept: text/html\r\n",
                None,
                None,
                None,
                Some("text/plain, text/html"),
            ),
        ];
        for (fields, range, if_range, ims, accept) in cases {
            let r = head(fields).expect("parses");
            let got = (
                r.range.as_deref(),
                r.if_range.as_deref(),
                r.if_modified_since.as_deref(),
                r.accept.as_deref(),
            );
            assert_eq!(
                got,
                (*range, *if_range, *ims, *accept),
                "{:?}",
                String::from_utf8_lossy(fields)
            );
        }
    }

    #[test]
    fn targets_decode_strictly() {
        let cases: &[(&str, Result<&str, Status>)] = &[
            ("/", Ok("")),
            ("/a%20b?q=%zz", Ok("a b")),
            ("http://host/x/y", Ok("x/y")),
            ("http://host", Ok("")),
            ("//evil.example", Ok("evil.example")),
            ("///a//b/", Ok("a//b/")),
            ("/%2F%2Fevil.example/", Ok("evil.example/")),
            ("http://host//evil.example", Ok("evil.example")),
            ("/%+a", Err(BAD_REQUEST)),
            ("/%-1", Err(BAD_REQUEST)),
            ("/%1", Err(BAD_REQUEST)),
            ("/a%00", Err(BAD_REQUEST)),
            ("*", Err(BAD_REQUEST)),
        ];
        for (target, expected) in cases {
            let line = format!("GET {target} HTTP/1.1\r\n\r\n");
            let (request, _) = parse_head(line.as_bytes()).unwrap().unwrap();
            assert_eq!(
                request.path.as_deref().map_err(|s| *s),
                *expected,
                "{target}"
            );
        }
    }

    #[test]
    fn heads_are_bounded() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), Ok(None));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(parse_head(long.as_bytes()), Err(URI_TOO_LONG));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse_head(big.as_bytes()), Err(HEADERS_TOO_LARGE));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(many.as_bytes()), Err(BAD_REQUEST));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\n\r\n").map(|r| r.is_some()),
            Ok(true)
        );
    }

    #[test]
    fn request_lines() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1", true),
            (b"HEAD /x?y HTTP/1.0", true),
            (b"get / HTTP/1.1", false),
            (b"GET  HTTP/1.1", false),
            (b"GET / HTTP/2.0", false),
            (b"GET /a b HTTP/1.1", false),
            (b"file.txt", false),
            (b" HTTP/1.1", false),
        ];
        for (line, expected) in cases {
            assert_eq!(
                is_request_line(line),
                *expected,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // The parts, and more lines that are not requests.
        type Parts<'a> = Option<(&'a [u8], &'a [u8])>;
        let parts: &[(&[u8], Parts)] = &[
            (b"GET /metrics HTTP/1.1", Some((b"GET", b"/metrics"))),
            (b"HEAD /x?y HTTP/1.0", Some((b"HEAD", b"/x?y"))),
            (b"", None),
            (b"GET /metrics", None),
            (b"GET /metrics HTTP/1.1 extra", None),
            (b"GET  /metrics HTTP/1.1", None),
            (b"\xff /metrics HTTP/1.1", None),
            (b"GETTINGTOOLONGMETHOD / HTTP/1.1", None),
        ];
        for (line, expected) in parts {
            assert_eq!(
                request_line(line),
                *expected,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
