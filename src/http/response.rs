//! The client's reading of an HTTP/1.1 response, pure (no I/O): the head
//! (status line and headers, through `httparse`, with the framing and
//! content headers `get` relies on checked strictly), `Content-Range`, and
//! a bounded decoder of `Transfer-Encoding: chunked` bodies. What it
//! cannot read with certainty is an error, never a guess.

/// Most header fields a response head may have.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (with its extensions) the chunked decoder reads.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Most bytes of trailer fields the chunked decoder reads after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why a response head cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x response head.
    #[error("a malformed response head ({0})")]
    Malformed(String),
    /// `Content-Length` that is not one decimal number (or several that differ).
    #[error("a bad Content-Length")]
    BadContentLength,
    /// `Content-Range` that is not `bytes FIRST-LAST/TOTAL` with FIRST <= LAST < TOTAL.
    #[error("a bad Content-Range")]
    BadContentRange,
    /// A transfer coding other than `chunked` alone.
    #[error("an unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// A content coding other than identity (gzip, br, ...): the bytes are not the file's.
    #[error("a Content-Encoding other than identity")]
    ContentEncoded,
    /// Both `Content-Length` and `Transfer-Encoding`: which one frames the
    /// body is a guess a client must not make.
    #[error("both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
}

/// `Content-Range: bytes FIRST-LAST/TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Offset of the first byte sent.
    pub first: u64,
    /// Offset of the last byte sent (inclusive).
    pub last: u64,
    /// The whole representation's length.
    pub total: u64,
}

impl ContentRange {
    /// Parses `bytes FIRST-LAST/TOTAL` strictly (digits only, FIRST <= LAST < TOTAL).
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes ")?;
        let (range, total) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let range = ContentRange {
            first: decimal(first)?,
            last: decimal(last)?,
            total: decimal(total)?,
        };
        (range.first <= range.last && range.last < range.total).then_some(range)
    }

    /// The number of bytes the range holds.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// The TOTAL of `bytes */TOTAL` (a 416's `Content-Range`), strictly.
fn unsatisfied_total(value: &str) -> Option<u64> {
    decimal(value.trim().strip_prefix("bytes */")?)
}

/// A number of only ASCII digits (no sign, no space), that fits a u64.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What `get` needs of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase, as the server wrote it (not safe for a terminal).
    pub reason: String,
    /// `Content-Length` (ignored by the body's reader when `chunked`).
    pub content_length: Option<u64>,
    /// `Content-Range` of a 206.
    pub content_range: Option<ContentRange>,
    /// The `Content-Range: bytes */TOTAL` of a 416 (the standard answer to
    /// a range that starts past the end): the representation's length.
    pub unsatisfied_total: Option<u64>,
    /// `ETag`, as written.
    pub etag: Option<String>,
    /// `Last-Modified`, as written.
    pub last_modified: Option<String>,
    /// `Date`, as written.
    pub date: Option<String>,
    /// The body is in chunked framing.
    pub chunked: bool,
    /// `Location` (of a redirect), as written.
    pub location: Option<String>,
    /// `Content-Type`, as written.
    pub content_type: Option<String>,
    /// The field names of every `Vary` field, lowercased (`*` included).
    pub vary: Vec<String>,
}

/// Most field names kept from `Vary` fields.
const MAX_VARY: usize = 16;

impl ResponseHead {
    /// True when the response varies by the request field `name` (or by
    /// everything, `Vary: *`): another request could get another body.
    pub fn varies_by(&self, name: &str) -> bool {
        self.vary
            .iter()
            .any(|v| v == "*" || v.eq_ignore_ascii_case(name))
    }

    /// The media type of `Content-Type`, lowercased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        let value = self.content_type.as_deref()?;
        let media = value.split(';').next().unwrap_or("").trim();
        (!media.is_empty()).then(|| media.to_ascii_lowercase())
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` when more bytes
/// are needed, else the head and its length in bytes. A head whose body
/// would not be the representation's plain bytes (a content coding, an
/// unknown transfer coding) or whose framing is ambiguous is an error.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let mut head = ResponseHead {
        status: response.code.unwrap_or(0),
        reason: response.reason.unwrap_or("").to_owned(),
        content_length: None,
        content_range: None,
        unsatisfied_total: None,
        etag: None,
        last_modified: None,
        date: None,
        chunked: false,
        location: None,
        content_type: None,
        vary: Vec::new(),
    };
    for header in response.headers.iter() {
        let name = header.name;
        let value = std::str::from_utf8(header.value)
            .ok()
            .map(|v| v.trim_matches([' ', '\t']));
        if name.eq_ignore_ascii_case("content-length") {
            // Several values (or several fields) must all be the same number.
            let mut length = None;
            for part in value.ok_or(HeadError::BadContentLength)?.split(',') {
                let n =
                    decimal(part.trim_matches([' ', '\t'])).ok_or(HeadError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::BadContentLength);
                }
                length = Some(n);
            }
            if head.content_length.is_some_and(|l| Some(l) != length) {
                return Err(HeadError::BadContentLength);
            }
            head.content_length = length;
        } else if name.eq_ignore_ascii_case("content-range") && head.status == 416 {
            // Only a 416 may give the length alone; a second one must agree.
            let total = value
                .and_then(unsatisfied_total)
                .ok_or(HeadError::BadContentRange)?;
            if head.unsatisfied_total.is_some_and(|t| t != total) {
                return Err(HeadError::BadContentRange);
            }
            head.unsatisfied_total = Some(total);
        } else if name.eq_ignore_ascii_case("content-range") {
            let range = value
                .and_then(ContentRange::parse)
                .ok_or(HeadError::BadContentRange)?;
            if head.content_range.is_some_and(|r| r != range) {
                return Err(HeadError::BadContentRange);
            }
            head.content_range = Some(range);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let value = value.ok_or(HeadError::UnsupportedTransferEncoding)?;
            for coding in value.split(',').map(|c| c.trim_matches([' ', '\t'])) {
                // Only `chunked`, once; `identity` was removed from HTTP/1.1.
                if !coding.eq_ignore_ascii_case("chunked") || head.chunked {
                    return Err(HeadError::UnsupportedTransferEncoding);
                }
                head.chunked = true;
            }
        } else if name.eq_ignore_ascii_case("content-encoding") {
            let value = value.ok_or(HeadError::ContentEncoded)?;
            let identity = value
                .split(',')
                .map(|c| c.trim_matches([' ', '\t']))
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"));
            if !identity {
                return Err(HeadError::ContentEncoded);
            }
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("date") {
            head.date = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("location") {
            head.location = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = value.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("vary") {
            let names = value
                .unwrap_or("")
                .split(',')
                .map(|v| v.trim_matches([' ', '\t']));
            for field in names.filter(|v| !v.is_empty()) {
                if head.vary.len() < MAX_VARY {
                    head.vary.push(field.to_ascii_lowercase());
                }
            }
        }
    }
    if head.chunked && head.content_length.is_some() {
        return Err(HeadError::AmbiguousFraming);
    }
    Ok(Some((head, len)))
}

/// Why a chunked body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk-size line that is not hex digits (with optional extensions).
    #[error("a bad chunk size line")]
    BadSize,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    #[error("a chunk size line over {MAX_CHUNK_LINE} bytes")]
    SizeLineTooLong,
    /// A chunk not followed by CRLF.
    #[error("a chunk not ended by CRLF")]
    MissingCrlf,
    /// Trailer fields over [`MAX_TRAILERS`] bytes.
    #[error("trailers over {MAX_TRAILERS} bytes")]
    TrailersTooLong,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CR.
    DataCr,
    /// After a chunk's data and CR: its LF.
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The body is complete.
    Done,
}

/// A decoder of `Transfer-Encoding: chunked`, fed the body's bytes as they
/// come, in any pieces; every line it holds is bounded.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// The current chunk-size or trailer line.
    line: Vec<u8>,
    /// Trailer bytes read so far.
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
            trailers: 0,
        }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending the data to `out`; returns how many bytes
    /// of `input` were used (all of them unless the body ended inside it).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let want = if self.state == ChunkState::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if rest[0] != want {
                        return Err(ChunkError::MissingCrlf);
                    }
                    at += 1;
                    self.state = if want == b'\r' {
                        ChunkState::DataLf
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Size | ChunkState::Trailers => {
                    let (take, complete) = match memchr::memchr(b'\n', rest) {
                        Some(end) => (end + 1, true),
                        None => (rest.len(), false),
                    };
                    let limit = if self.state == ChunkState::Size {
                        MAX_CHUNK_LINE
                    } else {
                        MAX_TRAILERS - self.trailers
                    };
                    if self.line.len() + take > limit {
                        return Err(if self.state == ChunkState::Size {
                            ChunkError::SizeLineTooLong
                        } else {
                            ChunkError::TrailersTooLong
                        });
                    }
                    self.line.extend_from_slice(&rest[..take]);
                    at += take;
                    if complete {
                        self.end_line()?;
                    }
                }
            }
        }
        Ok(at)
    }

    /// A complete line (with its LF) is in `self.line`.
    fn end_line(&mut self) -> Result<(), ChunkError> {
        let line = std::mem::take(&mut self.line);
        let text = line
            .strip_suffix(b"\n")
            .and_then(|l| l.strip_suffix(b"\r"))
            .ok_or(ChunkError::BadSize)?;
        if self.state == ChunkState::Trailers {
            self.trailers += line.len();
            if text.is_empty() {
                self.state = ChunkState::Done;
            }
            return Ok(());
        }
        // chunk-size [ BWS ; extensions ]
        let size = text.split(|&b| b == b';').next().unwrap_or_default();
        let size = size.trim_ascii_end();
        if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(ChunkError::BadSize);
        }
        let size = std::str::from_utf8(size)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(ChunkError::BadSize)?;
        self.state = if size == 0 {
            ChunkState::Trailers
        } else {
            ChunkState::Data(size)
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_plain_head_is_read_with_its_length() {
        let text = "HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nContent-Range: bytes 10-14/20\r\nETag: \"abc\"\r\nLast-Modified: Sun, 06 Dec 2026 07:00:00 GMT\r\n\r\nbody";
        let (head, len) = parse(text).unwrap().unwrap();
        assert_eq!(len, text.len() - 4);
        assert_eq!(head.status, 206);
        assert_eq!(head.reason, "Partial Content");
        assert_eq!(head.content_length, Some(5));
        assert_eq!(
            head.content_range,
            Some(ContentRange {
                first: 10,
                last: 14,
                total: 20
            })
        );
        assert_eq!(head.etag.as_deref(), Some("\"abc\""));
        assert!(head.last_modified.is_some());
        assert!(!head.chunked);
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
    }

    #[test]
    fn location_content_type_and_vary_are_kept() {
        let text = "HTTP/1.1 301 Moved Permanently\r\nLocation: /docs/\r\n\
                    Content-Type: Text/HTML; charset=utf-8\r\nVary: Accept-Encoding, accept\r\n\
                    Vary: Origin\r\n\r\n";
        let (head, _) = parse(text).unwrap().unwrap();
        assert_eq!(head.location.as_deref(), Some("/docs/"));
        assert_eq!(head.media_type().as_deref(), Some("text/html"));
        assert_eq!(head.vary, ["accept-encoding", "accept", "origin"]);
        assert!(head.varies_by("Accept"));
        assert!(!head.varies_by("Cookie"));
        let (star, _) = parse("HTTP/1.1 200 OK\r\nVary: *\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(star.varies_by("Accept"));
        let (plain, _) = parse("HTTP/1.1 200 OK\r\nContent-Type: ;x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain.media_type(), None);
        assert!(plain.vary.is_empty() && plain.location.is_none());
        // Vary is bounded.
        let many = format!("HTTP/1.1 200 OK\r\nVary: {}\r\n\r\n", "a,".repeat(100));
        let (many, _) = parse(&many).unwrap().unwrap();
        assert_eq!(many.vary.len(), MAX_VARY);
    }

    #[test]
    fn framing_and_coding_headers_are_checked_strictly() {
        let cases: &[(&str, Result<(), HeadError>)] = &[
            ("Content-Length: 10", Ok(())),
            ("Content-Length: 10, 10", Ok(())),
            ("Content-Length: 10\r\nContent-Length: 10", Ok(())),
            ("Content-Length: +10", Err(HeadError::BadContentLength)),
            ("Content-Length: 10, 11", Err(HeadError::BadContentLength)),
            (
                "Content-Length: 10\r\nContent-Length: 9",
                Err(HeadError::BadContentLength),
            ),
            (
                "Content-Length: 99999999999999999999999",
                Err(HeadError::BadContentLength),
            ),
            ("Content-Length: \u{a0}10", Err(HeadError::BadContentLength)),
            ("Transfer-Encoding: chunked", Ok(())),
            (
                "Transfer-Encoding: gzip, chunked",
                Err(HeadError::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked, chunked",
                Err(HeadError::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: identity",
                Err(HeadError::UnsupportedTransferEncoding),
            ),
            ("Content-Encoding: identity", Ok(())),
            ("Content-Encoding: gzip", Err(HeadError::ContentEncoded)),
            (
                "Content-Encoding: identity, br",
                Err(HeadError::ContentEncoded),
            ),
            ("Content-Range: bytes 0-9/10", Ok(())),
            (
                "Content-Range: bytes 5-4/10",
                Err(HeadError::BadContentRange),
            ),
            (
                "Content-Range: bytes 0-10/10",
                Err(HeadError::BadContentRange),
            ),
            (
                "Content-Range: bytes -1-9/10",
                Err(HeadError::BadContentRange),
            ),
            ("Content-Range: bytes */10", Err(HeadError::BadContentRange)),
            (
                "Content-Range: items 0-9/10",
                Err(HeadError::BadContentRange),
            ),
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                Err(HeadError::AmbiguousFraming),
            ),
        ];
        for (field, expected) in cases {
            let got = parse(&format!("HTTP/1.1 200 OK\r\n{field}\r\n\r\n")).map(|_| ());
            assert_eq!(&got, expected, "{field}");
        }
        assert!(matches!(
            parse("SSH-2.0\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn a_416_may_give_the_length_alone_and_only_a_416() {
        let head = |status: &str, field: &str| {
            parse(&format!("HTTP/1.1 {status}\r\n{field}\r\n\r\n"))
                .map(|h| h.map(|(h, _)| (h.unsatisfied_total, h.content_range)))
        };
        let unsatisfiable = "416 Range Not Satisfiable";
        assert_eq!(
            head(unsatisfiable, "Content-Range: bytes */6000"),
            Ok(Some((Some(6000), None)))
        );
        for bad in [
            "Content-Range: bytes */",
            "Content-Range: bytes */+6",
            "Content-Range: bytes */6000\r\nContent-Range: bytes */7",
            "Content-Range: bytes 0-9/10",
        ] {
            assert_eq!(
                head(unsatisfiable, bad),
                Err(HeadError::BadContentRange),
                "{bad}"
            );
        }
        assert_eq!(
            head("206 Partial Content", "Content-Range: bytes */6000"),
            Err(HeadError::BadContentRange)
        );
    }

    /// Decodes `body` fed in pieces of `step` bytes.
    fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in body.chunks(step) {
            used += decoder.feed(piece, &mut out)?;
        }
        Ok((out, decoder.is_done(), used))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_stop_at_their_end() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nafter";
        for step in [1, 2, 3, 7, 64] {
            let (out, done, used) = decode(body, step).unwrap();
            assert_eq!(out, b"hello world", "{step}");
            assert!(done);
            assert_eq!(used, body.len() - b"after".len(), "{step}");
        }
        // Cut before the last chunk: not done.
        let (out, done, _) = decode(b"5\r\nhello\r\n", 4).unwrap();
        assert_eq!(out, b"hello");
        assert!(!done);
        let (_, done, _) = decode(b"A\r\n0123456789\r\n0\r\n\r\n", 5).unwrap();
        assert!(done);
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        let long_line = format!("1{}\r\n", ";x".repeat(MAX_CHUNK_LINE));
        let long_trailers = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS));
        let cases: Vec<(&[u8], ChunkError)> = vec![
            (b"zz\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"-5\r\n", ChunkError::BadSize),
            (b"+5\r\n", ChunkError::BadSize),
            (b"5\n", ChunkError::BadSize),
            (b"11111111111111111\r\n", ChunkError::BadSize),
            (b"5\r\nhelloXX", ChunkError::MissingCrlf),
            (long_line.as_bytes(), ChunkError::SizeLineTooLong),
            (long_trailers.as_bytes(), ChunkError::TrailersTooLong),
        ];
        for (body, expected) in cases {
            for step in [1, 5, 4096] {
                assert_eq!(
                    decode(body, step).map(|_| ()),
                    Err(expected.clone()),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
