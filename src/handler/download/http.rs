//! HTTP/1.1 on the download port, beside the raw protocol: a first line of
//! the form `METHOD SP target SP HTTP/1.x` switches the connection to HTTP
//! (so curl, wget, browsers and Kubernetes `httpGet` probes get sizes,
//! resume and conditional requests); anything else stays the raw protocol.
//!
//! GET and HEAD of files (`Content-Length`, `Last-Modified`, a strong
//! `ETag`, `Accept-Ranges`, one `Range` as 206 or 416, `If-Range`,
//! `If-None-Match` and `If-Modified-Since` as 304) and of directories (the
//! raw listing as `text/plain`, or a small HTML page when `Accept` prefers
//! it). The path is percent-decoded and then confined by the same resolver
//! as a raw name, so every raw refusal applies. The request head is parsed
//! by `httparse`, bounded in bytes, fields and time; bodies are sent by the
//! same path as raw downloads (sendfile, or a small body that the page
//! cache holds in one write with the head). Keep-alive, at most
//! [`MAX_REQUESTS_PER_CONNECTION`] requests a connection.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};
use tracing::info;

use super::paths::{MISSING, Target};
use super::{BUSY, Download};
use crate::conn::text::{QUOTE_MAX_BYTES, percent_encode_path, quote};
use crate::conn::{ConnError, Connection, Incoming, Io};
use crate::handler::{Ended, HandlerError};

/// Longest request head: the request line and the header fields.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields in one request.
pub(crate) const MAX_HEADERS: usize = 64;
/// Longest request target.
pub(crate) const MAX_TARGET_BYTES: usize = 4096;
/// Requests served on one connection; the last response says `Connection: close`.
pub(crate) const MAX_REQUESTS_PER_CONNECTION: u32 = 1000;
/// The read per wait for more of a request head.
const READ_CHUNK: usize = 4096;

/// True when `line` (without its line ending) is an HTTP/1.x request line:
/// an upper-case method, one space, a target without spaces, one space,
/// `HTTP/1.0` or `HTTP/1.1`.
pub(crate) fn is_request_line(line: &[u8]) -> bool {
    let Some(rest) = line
        .strip_suffix(b" HTTP/1.1")
        .or_else(|| line.strip_suffix(b" HTTP/1.0"))
    else {
        return false;
    };
    let Some(space) = rest.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (method, target) = (&rest[..space], &rest[space + 1..]);
    (1..=16).contains(&method.len())
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && target.iter().all(|&b| b.is_ascii_graphic() || b >= 0x80)
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
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub accept: Option<String>,
}

/// A response status and its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status(pub u16, pub &'static str);

pub(crate) const OK: Status = Status(200, "OK");
pub(crate) const PARTIAL: Status = Status(206, "Partial Content");
pub(crate) const NOT_MODIFIED: Status = Status(304, "Not Modified");
pub(crate) const BAD_REQUEST: Status = Status(400, "Bad Request");
pub(crate) const FORBIDDEN: Status = Status(403, "Forbidden");
pub(crate) const NOT_FOUND: Status = Status(404, "Not Found");
pub(crate) const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
pub(crate) const REQUEST_TIMEOUT: Status = Status(408, "Request Timeout");
pub(crate) const URI_TOO_LONG: Status = Status(414, "URI Too Long");
pub(crate) const RANGE_NOT_SATISFIABLE: Status = Status(416, "Range Not Satisfiable");
pub(crate) const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
pub(crate) const UNAVAILABLE: Status = Status(503, "Service Unavailable");

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
        Err(httparse::Error::TooManyHeaders) => return Err(BAD_REQUEST),
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
        if_none_match: None,
        if_modified_since: None,
        accept: None,
    };
    for field in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(field.value) else {
            continue;
        };
        let value = value.trim();
        let name = field.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    request.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    request.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            request.has_body |= value != "0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            request.has_body = true;
        } else if name.eq_ignore_ascii_case("range") {
            request.range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("if-range") {
            request.if_range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("if-none-match") {
            request.if_none_match = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            request.if_modified_since = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("accept") {
            request.accept = Some(value.to_owned());
        }
    }
    Ok(Some((request, head_len)))
}

/// The resolver's name for a request target: the path of an origin-form
/// (`/a/b?q`) or absolute-form (`http://host/a/b`) target, percent-decoded
/// (as UTF-8), without its leading `/`.
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
    percent_decode(path).ok_or(BAD_REQUEST)
}

/// Decodes `%XX` escapes; `None` for a bad escape, a NUL or bytes that are
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// A `Range` header's one byte range against a file of `size` bytes:
/// `None` when the header is to be ignored (not bytes, several ranges, or
/// malformed: the whole file is sent); `Some(Err(()))` when it cannot be
/// satisfied (416); else the first byte and the length.
pub(crate) fn byte_range(header: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || size == 0 {
            return Some(Err(()));
        }
        let len = suffix.min(size);
        return Some(Ok((size - len, len)));
    }
    let first = number(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(number(last)?)
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    if first >= size {
        return Some(Err(()));
    }
    let last = last.map_or(size - 1, |last| last.min(size - 1));
    Some(Ok((first, last - first + 1)))
}

/// What identifies a version of a file: a strong `ETag` from its device,
/// inode, size and modification time, and that time.
struct Version {
    etag: String,
    modified: SystemTime,
}

impl Version {
    fn of(meta: &fs::Metadata) -> Version {
        let mtime_ns = (meta.mtime() as i128) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        Version {
            etag: format!(
                "\"{:x}-{:x}-{:x}-{:x}\"",
                meta.dev(),
                meta.ino(),
                meta.size(),
                mtime_ns
            ),
            modified: UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or(0)),
        }
    }

    fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }

    /// `If-None-Match`: any of the listed tags, compared weakly, or `*`.
    fn matches_any(&self, list: &str) -> bool {
        let ours = self.etag.trim_start_matches("W/");
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
    }

    /// `If-Modified-Since`: not modified since the date.
    fn unchanged_since(&self, date: &str) -> bool {
        httpdate::parse_http_date(date).is_ok_and(|since| self.modified <= since)
    }

    /// `If-Range`: the strong tag itself, or exactly the modification date.
    fn is(&self, validator: &str) -> bool {
        if validator.starts_with('"') {
            return validator == self.etag;
        }
        httpdate::parse_http_date(validator).is_ok_and(|date| date == self.modified)
    }
}

/// The `Content-Type` of a file, by extension.
fn content_type(path: &Path) -> &'static str {
    let mut ext = [0u8; 8];
    let ext = match path.extension().map(|e| e.as_encoded_bytes()) {
        Some(e) if e.len() <= ext.len() => {
            let ext = &mut ext[..e.len()];
            ext.copy_from_slice(e);
            ext.make_ascii_lowercase();
            std::str::from_utf8(ext).ok()
        }
        _ => None,
    };
    match ext {
        Some("txt" | "text" | "log" | "md" | "csv" | "toml" | "ini" | "conf") => {
            "text/plain; charset=utf-8"
        }
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js" | "mjs") => "text/javascript",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("mp3") => "audio/mpeg",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("zip") => "application/zip",
        Some("gz" | "tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// True when `Accept` ranks `text/html` above `text/plain`.
fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut html, mut plain) = (0.0f32, 0.0f32);
    let (mut html_exact, mut plain_exact) = (false, false);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" => (html, html_exact) = (q, true),
            "text/plain" => (plain, plain_exact) = (q, true),
            "text/*" | "*/*" => {
                if !html_exact {
                    html = html.max(q);
                }
                if !plain_exact {
                    plain = plain.max(q);
                }
            }
            _ => {}
        }
    }
    html > plain
}

/// Escapes text for HTML.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML page of a listing of `dir` (the request's path).
fn listing_page(dir: &str, listing: &str) -> String {
    let base = if dir.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/", dir.trim_end_matches('/'))
    };
    let title = html_escape(&base);
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if base != "/" {
        page.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for name in listing.lines().filter(|l| !l.is_empty()) {
        let _ = writeln!(
            page,
            "<li><a href=\"{}\">{}</a></li>",
            html_escape(&percent_encode_path(&format!("{base}{name}"))),
            html_escape(name)
        );
    }
    page.push_str("</ul>\n</body></html>\n");
    page
}

/// A response: status, headers, and what follows them.
struct Response {
    status: Status,
    headers: Vec<(&'static str, Cow<'static, str>)>,
    body: Body,
}

enum Body {
    /// A text body (errors, listings).
    Bytes(Vec<u8>),
    /// `len` bytes of a file from `start`, holding one of the listener's
    /// `max_downloads` slots.
    File {
        file: fs::File,
        start: u64,
        len: u64,
        slot: OwnedSemaphorePermit,
    },
    /// No body, but a `Content-Length` (HEAD, 304).
    Length(u64),
}

impl Response {
    /// A one-line text body saying what went wrong.
    fn error(status: Status) -> Response {
        let body = format!("{} {}\n", status.0, status.1.to_ascii_lowercase()).into_bytes();
        Response {
            status,
            headers: vec![("Content-Type", Cow::Borrowed("text/plain; charset=utf-8"))],
            body: Body::Bytes(body),
        }
    }

    fn content_length(&self) -> u64 {
        match &self.body {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File { len, .. } => *len,
            Body::Length(len) => *len,
        }
    }

    /// The status line and the headers, with the blank line.
    fn head(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = String::with_capacity(HEAD_CAPACITY);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nDate: ",
            self.status.0, self.status.1
        );
        push_date_now(&mut head);
        let _ = write!(
            head,
            "\r\nServer: switchboard\r\nConnection: {}\r\n",
            if keep_alive { "keep-alive" } else { "close" }
        );
        if self.status != NOT_MODIFIED {
            let _ = write!(head, "Content-Length: {}\r\n", self.content_length());
        }
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// Room for a typical response head (a file's is about 280 bytes), so that
/// it is built without growing.
const HEAD_CAPACITY: usize = 384;

/// Appends the `Date` header's value for now. It changes once a second, so
/// each worker thread formats it once a second, not once a response.
fn push_date_now(out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *cached_second = second;
        }
        out.push_str(text);
    });
}

/// What the access log says of a request.
struct Served {
    status: Status,
    bytes: u64,
    range: Option<(u64, u64)>,
}

/// Serves HTTP on `conn`, whose first line was `first_line` (a request
/// line), until the client closes, asks to, or the request bound is met.
pub(super) async fn serve<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    first_line: BytesMut,
) -> Result<Ended, HandlerError> {
    let mut buf = BytesMut::with_capacity(first_line.len() + 2 + READ_CHUNK);
    buf.extend_from_slice(&first_line);
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(&conn.take_buffered());
    let mut served = 0u32;
    loop {
        let request = match read_head(conn, &mut buf).await? {
            HeadRead::Request(request) => request,
            HeadRead::Closed => return Ok(Ended::ClientClosed),
            HeadRead::Shutdown => return Ok(Ended::Shutdown),
            HeadRead::Refused(status) => {
                let response = Response::error(status);
                let mut reply = response.head(false);
                if let Body::Bytes(body) = &response.body {
                    reply.extend_from_slice(body);
                }
                conn.send(&reply).await?;
                info!(status = status.0, "http request refused");
                return Ok(Ended::Completed);
            }
        };
        served += 1;
        let keep_alive =
            request.keep_alive && !request.has_body && served < MAX_REQUESTS_PER_CONNECTION;
        let outcome = respond(download, conn, &request, keep_alive).await;
        let logged = |status: Status, bytes: u64, range: Option<(u64, u64)>| {
            info!(
                method = %quote(&request.method_name, 16),
                path = %quote(&request.target, QUOTE_MAX_BYTES),
                status = status.0,
                bytes,
                range = ?range.map(|(start, len)| format!("{start}-{}", start + len - 1)),
                "http request"
            );
        };
        match outcome {
            Ok(done) => logged(done.status, done.bytes, done.range),
            Err(e) => {
                logged(Status(0, "failed"), 0, None);
                return Err(e);
            }
        }
        if !keep_alive {
            return Ok(Ended::Completed);
        }
    }
}

enum HeadRead {
    Request(Request),
    Closed,
    Shutdown,
    Refused(Status),
}

/// Reads until `buf` starts with a whole request head (or the head is
/// refused); consumes the head from `buf`. Between requests only the idle
/// timeout applies; once a head has begun, it must be complete within the
/// listener's `message_timeout`.
async fn read_head<S: Io>(
    conn: &mut Connection<S>,
    buf: &mut BytesMut,
) -> Result<HeadRead, HandlerError> {
    let limit = conn.settings().message_timeout;
    let mut deadline = (!buf.is_empty()).then(|| Instant::now() + limit);
    loop {
        // A reload replaced the listener's settings: they apply to new
        // connections, so this one takes no further request. Idle, it
        // closes (the client retries on a new connection); a request
        // already (partly) read is answered 503 before the close.
        if conn.route_retired() {
            return Ok(if buf.is_empty() {
                HeadRead::Shutdown
            } else {
                HeadRead::Refused(UNAVAILABLE)
            });
        }
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((request, len))) => {
                    let _ = buf.split_to(len);
                    return Ok(HeadRead::Request(request));
                }
                Ok(None) => {}
                Err(status) => return Ok(HeadRead::Refused(status)),
            }
        }
        buf.reserve(
            READ_CHUNK
                .min(MAX_HEAD_BYTES + 1 - buf.len().min(MAX_HEAD_BYTES))
                .max(1),
        );
        let read = match deadline {
            Some(deadline) => match timeout_at(deadline, conn.read_chunk(buf)).await {
                Ok(read) => read,
                Err(_) => return Ok(HeadRead::Refused(REQUEST_TIMEOUT)),
            },
            None => match conn.read_chunk_until_retired(buf).await {
                Some(read) => read,
                None => continue,
            },
        };
        match read {
            Ok(Incoming::Data(_)) => {
                deadline.get_or_insert_with(|| Instant::now() + limit);
            }
            Ok(Incoming::Closed) if buf.is_empty() => return Ok(HeadRead::Closed),
            Ok(Incoming::Closed) => return Ok(HeadRead::Refused(BAD_REQUEST)),
            Ok(Incoming::Shutdown) => return Ok(HeadRead::Shutdown),
            Err(ConnError::Idle(_)) if buf.is_empty() => return Ok(HeadRead::Closed),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Answers one request.
async fn respond<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    request: &Request,
    keep_alive: bool,
) -> Result<Served, HandlerError> {
    let response = match build(download, request, conn.settings().encoding).await {
        Ok(response) => response,
        Err(status) => {
            let mut response = Response::error(status);
            if status == METHOD_NOT_ALLOWED {
                response.headers.push(("Allow", Cow::Borrowed("GET, HEAD")));
            }
            if status == UNAVAILABLE {
                response.headers.push(("Retry-After", Cow::Borrowed("1")));
            }
            response
        }
    };
    let status = response.status;
    let range = match &response.body {
        Body::File { start, len, .. } if status == PARTIAL => Some((*start, *len)),
        _ => None,
    };
    let mut head = response.head(keep_alive);
    let head_only = request.method == Method::Head;
    // The head and its body in one write where the body is at hand.
    let bytes = match response.body {
        Body::Bytes(body) if !head_only => {
            head.extend_from_slice(&body);
            conn.send(&head).await?;
            body.len() as u64
        }
        Body::File {
            file,
            start,
            len,
            slot,
        } if !head_only => {
            let sent = download.send_range(conn, &head, file, start, len).await;
            drop(slot);
            sent?;
            len
        }
        _ => {
            conn.send(&head).await?;
            0
        }
    };
    Ok(Served {
        status,
        bytes,
        range,
    })
}

/// The response to a request, or the error status.
async fn build(
    download: &Download,
    request: &Request,
    encoding: crate::conn::text::TextEncoding,
) -> Result<Response, Status> {
    if request.method == Method::Other {
        return Err(METHOD_NOT_ALLOWED);
    }
    let path = request.path.as_ref().map_err(|status| *status)?;
    let target = download.resolve_target(path).await.map_err(|e| match e {
        HandlerError::Refused(reason) if reason != MISSING => FORBIDDEN,
        _ => NOT_FOUND,
    })?;
    match target {
        Target::Directory { handle, .. } => {
            let text = download
                .listing(handle, encoding)
                .await
                .map_err(|e| match e {
                    HandlerError::Refused(BUSY) => UNAVAILABLE,
                    _ => FORBIDDEN,
                })?;
            let (body, content_type) = if prefers_html(request.accept.as_deref()) {
                (
                    listing_page(path, &text).into_bytes(),
                    Cow::Borrowed("text/html; charset=utf-8"),
                )
            } else {
                (
                    encoding.encode(&text).into_owned(),
                    Cow::Owned(format!("text/plain; charset={}", encoding.name())),
                )
            };
            Ok(Response {
                status: OK,
                headers: vec![("Content-Type", content_type)],
                body: Body::Bytes(body),
            })
        }
        Target::File { file, path, meta } => {
            let len = meta.len();
            let version = Version::of(&meta);
            let mut headers = Vec::with_capacity(6);
            headers.extend([
                ("ETag", Cow::Owned(version.etag.clone())),
                ("Last-Modified", Cow::Owned(version.last_modified())),
                ("Accept-Ranges", Cow::Borrowed("bytes")),
            ]);
            let not_modified = match (&request.if_none_match, &request.if_modified_since) {
                (Some(tags), _) => version.matches_any(tags),
                (None, Some(date)) => version.unchanged_since(date),
                (None, None) => false,
            };
            if not_modified {
                return Ok(Response {
                    status: NOT_MODIFIED,
                    headers,
                    body: Body::Length(0),
                });
            }
            headers.push(("Content-Type", Cow::Borrowed(content_type(&path))));
            let range = match (&request.range, request.method) {
                (Some(range), Method::Get)
                    if request.if_range.as_deref().is_none_or(|v| version.is(v)) =>
                {
                    byte_range(range, len)
                }
                _ => None,
            };
            let (status, start, part) = match range {
                None => (OK, 0, len),
                Some(Ok((start, part))) => {
                    headers.push((
                        "Content-Range",
                        Cow::Owned(format!("bytes {start}-{}/{len}", start + part - 1)),
                    ));
                    (PARTIAL, start, part)
                }
                Some(Err(())) => {
                    let mut response = Response::error(RANGE_NOT_SATISFIABLE);
                    response
                        .headers
                        .push(("Content-Range", Cow::Owned(format!("bytes */{len}"))));
                    return Ok(response);
                }
            };
            if request.method == Method::Head {
                return Ok(Response {
                    status,
                    headers,
                    body: Body::Length(part),
                });
            }
            let Ok(slot) = download.sending.clone().try_acquire_owned() else {
                return Err(UNAVAILABLE);
            };
            Ok(Response {
                status,
                headers,
                body: Body::File {
                    file,
                    start,
                    len: part,
                    slot,
                },
            })
        }
    }
}
