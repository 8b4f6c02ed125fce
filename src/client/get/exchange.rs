//! One HTTP exchange of `get`: the request (with `Range` and `If-Range`
//! to resume), its response head (interim 1xx heads skipped, the head
//! bounded in size and time), and how the body after it ends. A first
//! answer that is not HTTP is told apart ([`NotHttp::Raw`]) so the caller
//! can choose the raw protocol; a close without a byte is an error, never
//! a sign of another protocol, and so is a server that answers something
//! else but keeps the connection open ([`NOT_HTTP_GRACE`]): a bot, not a
//! download listener. [`names_a_directory`] tells a directory's answer
//! (a redirect to `NAME/`, or a listing) from a file's.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout_at;

use super::{GetError, Run, connect_by, net, server_words};
use crate::client::stream::Stream;
use crate::conn::text::TextEncoding;
use crate::http::percent;
use crate::http::response::{ChunkedDecoder, ResponseHead, parse_head};

/// Longest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Most interim (1xx) response heads skipped before the real one.
const MAX_INTERIM: usize = 8;
/// After a first answer that is not HTTP, how long the server has to
/// close: a server of the raw protocol takes the request line for a name,
/// answers it and closes at once; one that keeps talking or holds the
/// connection (a bot's greeting, its reply to each line) is not a download
/// listener.
pub(super) const NOT_HTTP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What `Accept` a request sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Accept {
    /// A file: whatever it is.
    Any,
    /// A listing for `-r`: the text one, a name a line (a server that
    /// would send HTML to a browser sends text for this).
    Text,
}

impl Accept {
    fn value(self) -> &'static str {
        match self {
            Accept::Any => "*/*",
            Accept::Text => "text/plain",
        }
    }
}

/// True when `head`, the answer to `GET /name`, says that `name` is a
/// directory: a redirect (3xx) to `name/`, or a listing (a 200 in
/// `text/plain` or `text/html` that varies by `Accept`: a file's body
/// never does, a listing's is text or HTML as `Accept` asks).
pub(super) fn names_a_directory(name: &str, head: &ResponseHead) -> bool {
    match head.status {
        300..=399 => head
            .location
            .as_deref()
            .is_some_and(|location| redirects_to_directory(name, location)),
        200 => {
            head.varies_by("accept")
                && matches!(
                    head.media_type().as_deref(),
                    Some("text/plain" | "text/html")
                )
        }
        _ => false,
    }
}

/// True when `location` (absolute, or a path) is the path of `name/`.
fn redirects_to_directory(name: &str, location: &str) -> bool {
    // `scheme://authority/path`, or `//authority/path`: the path.
    let after_scheme = match location.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            Some(rest)
        }
        _ => location.strip_prefix("//"),
    };
    let path = match after_scheme {
        Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => location,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let Ok(path) = percent::decode(path) else {
        return false;
    };
    let name = name.trim_matches('/');
    path.strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .is_some_and(|p| p == name)
}

/// Reads until the server closes, at most `max` bytes; a reset is an error.
pub(super) async fn read_to_end_bounded(
    stream: &mut Stream,
    max: usize,
) -> Result<Vec<u8>, GetError> {
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| GetError::Incomplete(format!("broke off: {e}")))?;
        if n == 0 {
            return Ok(body);
        }
        if body.len() + n > max {
            return Err(GetError::Failed(format!("more than {max} bytes")));
        }
        body.extend_from_slice(&buf[..n]);
    }
}

/// Longest error body read for its words.
const MAX_ERROR_BODY: usize = 512;

/// What an error answer says: the first line of its body when that is a
/// short `text/plain` with a `Content-Length` (a switchboard server's
/// `403 forbidden: hidden files are not served`), else its status and
/// reason phrase (`404 Not Found`). At most [`MAX_ERROR_BODY`] bytes are
/// read, all within one wait; bounded and escaped for a terminal.
pub(super) async fn error_words(
    run: &Run<'_>,
    stream: &mut Stream,
    head: &ResponseHead,
    rest: &[u8],
) -> String {
    let fallback = || {
        format!(
            "{} {}",
            head.status,
            server_words(head.reason.as_bytes(), TextEncoding::Utf8)
        )
    };
    let length = match head.content_length {
        Some(length) if !head.chunked && length as usize <= MAX_ERROR_BODY => length as usize,
        _ => return fallback(),
    };
    if head.media_type().as_deref() != Some("text/plain") {
        return fallback();
    }
    let mut body = rest[..rest.len().min(length)].to_vec();
    let mut buf = [0u8; MAX_ERROR_BODY];
    // One wait for the whole body: it is a message, not progress, and a
    // server dripping it must not hold the run a timeout a byte.
    let until = run.wait_until();
    while body.len() < length {
        match timeout_at(until, stream.read(&mut buf[..length - body.len()])).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&buf[..n]),
            _ => return fallback(),
        }
    }
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return fallback();
    }
    server_words(line, TextEncoding::Utf8)
}

/// How a response body ends.
pub(super) enum Framing {
    /// After `Content-Length` bytes (this many still to come).
    Length(u64),
    /// At the last chunk.
    Chunked(ChunkedDecoder),
}

impl Framing {
    /// Appends the body's bytes in `input` to `out`; true once the body is
    /// complete (bytes after its end are ignored).
    pub(super) fn take(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, GetError> {
        match self {
            Framing::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                out.extend_from_slice(&input[..take]);
                *left -= take as u64;
                Ok(*left == 0)
            }
            Framing::Chunked(decoder) => {
                decoder
                    .feed(input, out)
                    .map_err(|e| GetError::Failed(format!("a bad chunked body: {e}")))?;
                Ok(decoder.is_done())
            }
        }
    }
}

/// Why a request did not get an HTTP response.
pub(super) enum NotHttp {
    /// The server answered something else: it speaks the raw protocol.
    Raw,
    Error(GetError),
}

impl From<GetError> for NotHttp {
    fn from(e: GetError) -> Self {
        NotHttp::Error(e)
    }
}

/// Sends `GET /name` (with a range from `resume_from` and its validator)
/// and reads the response head; returns the stream, the head and the body
/// bytes read with it.
pub(super) async fn request(
    run: &Run<'_>,
    name: &str,
    resume: Option<(u64, &str)>,
    accept: Accept,
) -> Result<(Stream, ResponseHead, Vec<u8>), GetError> {
    match try_request(run, name, resume, accept).await {
        Ok(done) => Ok(done),
        Err(NotHttp::Raw) => Err(GetError::Failed(format!(
            "{}: the server does not speak HTTP (try --raw)",
            run.options.addr
        ))),
        Err(NotHttp::Error(e)) => Err(e),
    }
}

/// The request and its response head, all within the timeout.
pub(super) async fn try_request(
    run: &Run<'_>,
    name: &str,
    resume: Option<(u64, &str)>,
    accept: Accept,
) -> Result<(Stream, ResponseHead, Vec<u8>), NotHttp> {
    let options = run.options;
    let until = run.wait_until();
    let mut stream = connect_by(run, until).await?;
    let mut request = format!(
        "GET /{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchboard/{}\r\nAccept: {}\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n",
        percent::encode_path(name),
        options.addr,
        env!("CARGO_PKG_VERSION"),
        accept.value()
    );
    if let Some((from, validator)) = resume {
        request.push_str(&format!(
            "Range: bytes={from}-\r\nIf-Range: {validator}\r\n"
        ));
    }
    request.push_str("\r\n");
    let late = || {
        NotHttp::Error(GetError::Failed(format!(
            "{name}: no response head from {} in time ({})",
            options.addr,
            run.why_late()
        )))
    };
    match timeout_at(until, stream.write_all(request.as_bytes())).await {
        Ok(written) => written.map_err(|e| net(run, &format!("{name}: sending the request"), e))?,
        Err(_) => return Err(late()),
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // Bytes of interim (1xx) heads already skipped, and how many.
    let mut skipped = 0;
    let mut interim = 0;
    loop {
        // Empty lines before a status line are skipped (as `httparse`
        // does); what follows decides: a server that speaks HTTP answers
        // with `HTTP/`, in any case (a lowercase one is refused below, as
        // malformed, not taken for another protocol).
        let answer = buf.trim_ascii_start();
        let prefix = answer.len().min(5);
        if !answer[..prefix].eq_ignore_ascii_case(&b"HTTP/"[..prefix]) {
            if interim > 0 {
                return Err(GetError::Failed(format!(
                    "{name}: refused the response: not HTTP after an interim response"
                ))
                .into());
            }
            return Err(not_http(run, &mut stream, buf, until).await);
        }
        match parse_head(&buf) {
            Ok(Some((head, len))) => {
                run.spoke_http.set(true);
                if (100..200).contains(&head.status) && head.status != 101 {
                    // 100 Continue, 103 Early Hints: the response follows.
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(GetError::Failed(format!(
                            "{name}: refused the response: more than {MAX_INTERIM} interim \
                             (1xx) responses"
                        ))
                        .into());
                    }
                    skipped += len;
                    buf.drain(..len);
                    continue;
                }
                let rest = buf.get(len..).unwrap_or_default().to_vec();
                return Ok((stream, head, rest));
            }
            Ok(None) if skipped + buf.len() > MAX_HEAD => {
                return Err(GetError::Failed(format!(
                    "{name}: a response head over {MAX_HEAD} bytes"
                ))
                .into());
            }
            Ok(None) => {}
            Err(e) => {
                return Err(GetError::Failed(format!("{name}: refused the response: {e}")).into());
            }
        }
        let n = match timeout_at(until, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(NotHttp::Error(net(
                    run,
                    &format!("{name}: reading the response head"),
                    e,
                )));
            }
            Err(_) => return Err(late()),
        };
        if n == 0 {
            // A close without a word is no answer at all: not a sign of
            // another protocol (a proxy that drops the request does it).
            return Err(
                GetError::Failed(if buf.trim_ascii().is_empty() && interim == 0 {
                    format!(
                        "{name}: the server closed the connection without answering (a server of \
                     the raw protocol that answers nothing to HTTP needs --raw)"
                    )
                } else {
                    format!("{name}: the response ended inside its head")
                })
                .into(),
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Most bytes read of an answer that is not HTTP, while waiting for the
/// close of a server of the raw protocol.
const MAX_NOT_HTTP: usize = 64 * 1024;

/// What a first answer that is not HTTP (`answer`, so far) means: a server
/// of the raw protocol closes (or resets) within [`NOT_HTTP_GRACE`], and
/// gets the raw protocol; one that keeps the connection open, or talks on
/// past [`MAX_NOT_HTTP`] bytes, is not a download listener.
async fn not_http(
    run: &Run<'_>,
    stream: &mut Stream,
    mut answer: Vec<u8>,
    until: tokio::time::Instant,
) -> NotHttp {
    let by = (tokio::time::Instant::now() + NOT_HTTP_GRACE).min(until);
    let mut chunk = [0u8; 4096];
    while answer.len() <= MAX_NOT_HTTP {
        match timeout_at(by, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return NotHttp::Raw,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    NotHttp::Error(GetError::Failed(format!(
        "{} is not a download listener: it answered \"{}\" to an HTTP request and kept the \
         connection open (a download listener answers HTTP, or the raw protocol and closes); \
         check the port",
        run.options.addr,
        server_words(answer.trim_ascii(), run.options.encoding)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::parse_head;

    fn head(text: &str) -> ResponseHead {
        let text = format!("{text}\r\n\r\n");
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn a_redirect_to_the_name_and_a_slash_or_a_listing_names_a_directory() {
        let directories = [
            ("docs", "HTTP/1.1 301 Moved Permanently\r\nLocation: /docs/"),
            (
                "docs",
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: /docs/?x=1",
            ),
            ("/a b/c", "HTTP/1.1 301 Moved\r\nLocation: /a%20b/c/"),
            ("docs", "HTTP/1.1 302 Found\r\nLocation: http://h:1/docs/"),
            ("docs", "HTTP/1.1 301 Moved\r\nLocation: //h:1/docs/#top"),
            (
                "名字",
                "HTTP/1.1 301 Moved\r\nLocation: /%E5%90%8D%E5%AD%97/",
            ),
            // Today's listing of a directory asked without its slash.
            (
                "docs",
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nVary: Accept",
            ),
            // Tomorrow's, in HTML.
            (
                "docs",
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nVary: Accept-Encoding, Accept",
            ),
        ];
        for (name, text) in directories {
            assert!(names_a_directory(name, &head(text)), "{name} {text:?}");
        }
        let files = [
            ("docs", "HTTP/1.1 301 Moved\r\nLocation: /elsewhere/"),
            ("docs", "HTTP/1.1 301 Moved\r\nLocation: /docs"),
            ("docs", "HTTP/1.1 301 Moved\r\nLocation: /a/docs/"),
            ("docs", "HTTP/1.1 301 Moved"),
            ("docs", "HTTP/1.1 301 Moved\r\nLocation: /%zz/"),
            ("a.txt", "HTTP/1.1 200 OK\r\nContent-Type: text/plain"),
            (
                "a.txt",
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nVary: Accept-Encoding",
            ),
            (
                "a.png",
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nVary: Accept",
            ),
            (
                "docs",
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nVary: Accept",
            ),
        ];
        for (name, text) in files {
            assert!(!names_a_directory(name, &head(text)), "{name} {text:?}");
        }
    }
}
