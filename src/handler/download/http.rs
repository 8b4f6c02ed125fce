//! HTTP/1.1 on the download port, beside the raw protocol: a first line of
//! the form `METHOD SP target SP HTTP/1.x` switches the connection to HTTP
//! (so curl, wget, browsers and Kubernetes `httpGet` probes get sizes,
//! resume and conditional requests); anything else stays the raw protocol.
//!
//! This file is the I/O: reading request heads off the connection, asking
//! the resolver and the listing cache, and sending the response; what the
//! answer is follows from the pure functions of `crate::http` (the head
//! and its field checks, ranges, validators, preconditions, dates). GET
//! and HEAD of files (`Content-Length`, `Last-Modified`, a strong `ETag`,
//! `Accept-Ranges`, one `Range` as 206 or 416, `If-Match`,
//! `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since` and
//! `If-Range`) and of directories (an HTML page with sizes and dates, or
//! the raw listing as `text/plain` when `Accept` ranks it above HTML, both
//! from the listing cache; without validators, so only `If-Match: *` and
//! `If-None-Match: *` hold; a directory named without its trailing slash
//! gets a 301 to the name with it, so that the page's relative `../`
//! leads to its parent). Every response has one access log line: its
//! status, the body's bytes that went out, its range (`-` for none), and
//! whether it went out whole. Bodies
//! hold one of the listener's `max_downloads` slots and go out under its
//! send buffer and minimum rate; on a keep-alive connection a body's slot
//! is then its unread tail's until the client has read it (`tail`), and a
//! pipelined request is answered once the last answer is taken. Keep-alive,
//! at most
//! [`MAX_REQUESTS_PER_CONNECTION`] requests a connection.

use std::borrow::Cow;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, timeout_at};
use tracing::info;

use super::Download;
use super::archive::{Archive, archived_folder};
use super::listing::Format;
use super::paths::Target;
use super::slots::Slot;
use super::tail::{Looked, Tail};
use crate::conn::access::{self, Outcome, ResponseRecord};
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, quote};
use crate::conn::{ConnError, Connection, Incoming, Io, NextRequest, SentTaken};
use crate::handler::{Ended, HandlerError, Refusal};
use crate::http::conditional::{self, Decision};
use crate::http::etag::Validators;
use crate::http::request::{MAX_HEAD_BYTES, Method, Request, parse_head};
use crate::http::status::{
    BAD_REQUEST, FORBIDDEN, METHOD_NOT_ALLOWED, MOVED_PERMANENTLY, NOT_FOUND, NOT_MODIFIED, OK,
    PARTIAL, PRECONDITION_FAILED, RANGE_NOT_SATISFIABLE, REQUEST_TIMEOUT, Status,
    TOO_MANY_REQUESTS, UNAVAILABLE,
};
use crate::http::{accept, content_type, head, html, percent, range};

pub(crate) use crate::http::request::is_request_line;

/// Requests served on one connection; the last response says `Connection: close`.
pub(crate) const MAX_REQUESTS_PER_CONNECTION: u32 = 1000;
/// The read per wait for more of a request head.
const READ_CHUNK: usize = 4096;

/// A response: status, headers, and what follows them.
struct Response {
    status: Status,
    /// The time its `Date` says: the one its validators were taken at, so
    /// that `Last-Modified` is never later than `Date`.
    at: SystemTime,
    headers: Headers,
    body: Body,
}

enum Body {
    /// A short text body (errors).
    Bytes(Vec<u8>),
    /// A listing from the cache, shared with the other connections that
    /// send it, holding one of the listener's `max_downloads` slots.
    Shared { bytes: Bytes, slot: Slot },
    /// `len` bytes of a file from `start`, holding one of the listener's
    /// `max_downloads` slots.
    File {
        file: fs::File,
        start: u64,
        len: u64,
        slot: Slot,
    },
    /// `len` bytes from `start` of a folder's tar stream, holding one of
    /// the listener's `max_downloads` slots.
    Archive {
        archive: Archive,
        start: u64,
        len: u64,
        slot: Slot,
    },
    /// No body, but a `Content-Length` (HEAD, 304).
    Length(u64),
}

/// A request answered with an error status; for a name the download's
/// rules refuse, also why: counted as the raw protocol's `ERR` line is,
/// and said in the body of a `403` (as that line says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused {
    status: Status,
    reason: Option<Refusal>,
}

impl From<Status> for Refused {
    fn from(status: Status) -> Refused {
        Refused {
            status,
            reason: None,
        }
    }
}

impl Refused {
    /// The answer to a name refused with `e`: not found, busy, or
    /// forbidden with its reason.
    fn of(e: &HandlerError) -> Refused {
        let HandlerError::Refused(reason) = e else {
            return NOT_FOUND.into();
        };
        let status = match reason {
            Refusal::NotFound => NOT_FOUND,
            Refusal::Busy | Refusal::ShuttingDown => UNAVAILABLE,
            Refusal::TooManyFromSource => TOO_MANY_REQUESTS,
            _ => FORBIDDEN,
        };
        Refused {
            status,
            reason: Some(*reason),
        }
    }

    /// The one-line text body: `403 forbidden: hidden files are not
    /// served`.
    fn body(self) -> Vec<u8> {
        match self.reason.filter(|_| self.status == FORBIDDEN) {
            Some(reason) => format!(
                "{} {}: {reason}\n",
                self.status.0,
                self.status.1.to_ascii_lowercase()
            )
            .into_bytes(),
            None => self.status.error_body(),
        }
    }
}

impl Response {
    /// A one-line text body saying what went wrong.
    fn error(refused: Refused) -> Response {
        let status = refused.status;
        let mut headers = vec![("Content-Type", Cow::Borrowed("text/plain; charset=utf-8"))];
        if status == METHOD_NOT_ALLOWED {
            headers.push(("Allow", Cow::Borrowed("GET, HEAD")));
        }
        if status == UNAVAILABLE || status == TOO_MANY_REQUESTS {
            headers.push(("Retry-After", Cow::Borrowed("1")));
        }
        Response {
            status,
            at: SystemTime::now(),
            headers,
            body: Body::Bytes(refused.body()),
        }
    }

    fn content_length(&self) -> u64 {
        match &self.body {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::Shared { bytes, .. } => bytes.len() as u64,
            Body::File { len, .. } | Body::Archive { len, .. } => *len,
            Body::Length(len) => *len,
        }
    }

    /// The status line and the headers, with the blank line.
    fn head(&self, keep_alive: bool) -> Vec<u8> {
        head::write(
            self.status,
            self.at,
            keep_alive,
            self.content_length(),
            self.headers
                .iter()
                .map(|(name, value)| (*name, value.as_ref())),
        )
    }
}

/// A listing is HTML or text as `Accept` asks: a cache must key it by
/// `Accept` too (RFC 9110 §12.5.5), or a browser's page reaches curl.
const VARY_ACCEPT: (&str, Cow<'static, str>) = ("Vary", Cow::Borrowed("Accept"));

/// Serves HTTP on `conn`, whose first line was `first_line` (a request
/// line), until the client closes, asks to, or the request bound is met.
///
/// Not `async` itself: the first request's bytes are gathered before the
/// keep-alive loop's future is made, so that the first line is not room
/// in it (an argument of an `async fn` is stored twice, for its whole
/// life), and an idle keep-alive connection's task is that much smaller.
pub(super) fn serve<'a, S: Io>(
    download: &'a Download,
    conn: &'a mut Connection<S>,
    first_line: BytesMut,
) -> impl Future<Output = Result<Ended, HandlerError>> + Send + 'a {
    let mut buf = BytesMut::with_capacity(first_line.len() + 2 + READ_CHUNK);
    buf.extend_from_slice(&first_line);
    // It holds the reader's buffer (it was split from it): not kept while
    // the connection lives.
    drop(first_line);
    // A request line that a pause ended (the quiet gap of the raw protocol)
    // is not over: its line ending, and the header fields, are still to
    // come, and must be read as part of this request, whatever the timing.
    if conn.last_message_ended_at_newline() {
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(&conn.take_buffered());
    keep_alive(download, conn, buf)
}

/// Serves the requests of `conn`, the first of which has begun in `buf`.
async fn keep_alive<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    mut buf: BytesMut,
) -> Result<Ended, HandlerError> {
    let mut served = 0u32;
    // The last body's, while its client may not have read it; boxed, as
    // the waits that look at it are: an idle connection that has none
    // keeps its future small.
    let mut tail: Option<Box<Tail>> = None;
    loop {
        if served > 0 && buf.is_empty() {
            // Between requests: an idle keep-alive connection holds no
            // buffer and none of a request's state (below, boxed), and a
            // reload still reaches it.
            buf = BytesMut::new();
            let came = loop {
                match conn.next_request(tail.as_ref().map(|t| t.look_at())).await {
                    NextRequest::Came(came) => break came,
                    // Retired by a reload: its new rules are for new connections.
                    NextRequest::Retired => return Ok(Ended::Shutdown),
                    NextRequest::Woken => look(download, conn, &mut tail)?,
                }
            };
            match came {
                Ok(Incoming::Data(())) => {}
                Ok(Incoming::Closed) | Err(ConnError::Idle(_)) => return Ok(Ended::ClientClosed),
                Ok(Incoming::Shutdown) => return Ok(Ended::Shutdown),
                Err(e) => return Err(e.into()),
            }
        }
        // Boxed for the request's life: the head's read and the response
        // are most of this connection's state, and only while it has a
        // request under way.
        let one = serve_one(download, conn, &mut buf, &mut served, &mut tail);
        if let Some(ended) = Box::pin(one).await? {
            return Ok(ended);
        }
    }
}

/// Looks at the last body's `tail`: gives its slot back if the client has
/// taken it; an error that ends the connection if it is overdue.
fn look<S: Io>(
    download: &Download,
    conn: &Connection<S>,
    tail: &mut Option<Box<Tail>>,
) -> Result<(), HandlerError> {
    let Some(held) = tail.take() else {
        return Ok(());
    };
    match held.looked(conn.sent_is_taken(), Instant::now()) {
        Looked::Taken => Ok(()),
        Looked::Held(held) => {
            *tail = Some(held);
            Ok(())
        }
        Looked::Overdue => Err(overdue(download, conn)),
    }
}

/// Why a connection whose client left a body's tail unread past its
/// deadline ends: under a minimum rate, the rate (a reset, as a send that
/// slow is); without one, the idle timeout (a close: what is queued goes
/// out to a client that reads on, and the kernel resets one that does not
/// within a second).
fn overdue<S: Io>(download: &Download, conn: &Connection<S>) -> HandlerError {
    match download.pace {
        Some(pace) => ConnError::ReaderTooSlow(pace.bytes_per_second),
        None => ConnError::ResponseUnread(conn.settings().idle_timeout),
    }
    .into()
}

/// Waits until the client has taken all that was sent (nothing unsent in
/// the socket), before a pipelined request (read before the last answer
/// went out) is answered: a client that sends requests and reads none of
/// the answers must not queue them in the kernel one after another, each
/// without a slot (a thousand HEADs, or 16 KiB bodies). The last body's
/// tail, if any, is given back once it is taken, and bounds the wait by its
/// deadline; without one, the idle timeout does (a write that waits for a
/// client that stopped reading). A client that reads pipelines on, for a
/// few system calls a request. `Some`: the connection ends.
async fn until_taken<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    tail: &mut Option<Box<Tail>>,
) -> Result<Option<Ended>, HandlerError> {
    let idle = conn.settings().idle_timeout;
    let deadline = match tail {
        Some(held) => held.deadline(),
        None => Instant::now() + idle,
    };
    match conn.sent_taken_by(deadline).await {
        SentTaken::Taken => {
            *tail = None;
            Ok(None)
        }
        SentTaken::NotBy => Err(match tail {
            Some(_) => overdue(download, conn),
            None => ConnError::WriteStalled(idle).into(),
        }),
        SentTaken::Ended => Ok(Some(Ended::Shutdown)),
    }
}

/// Reads and answers one request of `conn` (its head may have begun in
/// `buf`); `served` counts it; `tail` is the last body's, while its client
/// may not have read it. `Some`: the connection ends; `None`: it is kept
/// alive for the next request.
async fn serve_one<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    buf: &mut BytesMut,
    served: &mut u32,
    tail: &mut Option<Box<Tail>>,
) -> Result<Option<Ended>, HandlerError> {
    if *served > 0
        && !buf.is_empty()
        && let Some(ended) = until_taken(download, conn, tail).await?
    {
        return Ok(Some(ended));
    }
    let request = match read_head(download, conn, buf, *served == 0, tail).await? {
        HeadRead::Request(request) => request,
        HeadRead::Closed => return Ok(Some(Ended::ClientClosed)),
        HeadRead::Shutdown => return Ok(Some(Ended::Shutdown)),
        HeadRead::Refused(status) => {
            let response = Response::error(status.into());
            let mut reply = response.head(false);
            if let Body::Bytes(body) = &response.body {
                reply.extend_from_slice(body);
            }
            conn.send(&reply).await?;
            info!(
                status = status.0,
                bytes = response.content_length(),
                range = %"-",
                "http request refused"
            );
            return Ok(Some(Ended::Completed));
        }
    };
    *served += 1;
    let keep_alive = request.keep_alive
        && !request.has_body
        && *served < MAX_REQUESTS_PER_CONNECTION
        && !conn.route_retired();
    respond(download, conn, &request, keep_alive, tail).await?;
    Ok((!keep_alive).then_some(Ended::Completed))
}

// Made once a request and moved once: boxing the request would cost an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Request(Request),
    Closed,
    Shutdown,
    Refused(Status),
}

/// Reads until `buf` starts with a whole request head (or the head is
/// refused); consumes the head from `buf`. Between requests (the caller
/// has waited for the first byte, holding no buffer) only the idle timeout
/// applies; once a head has begun, it must be complete within the
/// listener's `message_timeout`. While the connection waits for a head,
/// the last body's `tail` is looked at.
async fn read_head<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    buf: &mut BytesMut,
    first: bool,
    tail: &mut Option<Box<Tail>>,
) -> Result<HeadRead, HandlerError> {
    let limit = conn.settings().message_timeout;
    // The empty lines some clients send after a request (RFC 9112 §2.2)
    // begin no head: the connection is idle, and holds no buffer. Only
    // here: empty lines that come later do begin one, so a client that
    // streams them is bounded by the head's limits.
    if buf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        buf.clear();
    }
    // The first head began with its request line, read by the raw
    // protocol's reader: its limit runs from that line's first byte.
    let began = first.then(|| conn.last_message_started()).flatten();
    let mut deadline = (!buf.is_empty()).then(|| began.unwrap_or_else(Instant::now) + limit);
    loop {
        // A reload replaced the listener's settings: they apply to new
        // connections, so this one takes no further request and closes
        // without an answer, idle or with a request (partly) read. A
        // client retries an idempotent request that got no answer on a
        // fresh connection (RFC 9112 §9.3.1), which the new rules serve.
        // The connection's first request is answered (with
        // `Connection: close`), under the rules of its accept, like a
        // request in flight at the reload.
        if !first && conn.route_retired() {
            return Ok(HeadRead::Shutdown);
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
            Some(deadline) if first => match timeout_at(deadline, conn.read_chunk(buf)).await {
                Ok(read) => read,
                Err(_) => return Ok(HeadRead::Refused(REQUEST_TIMEOUT)),
            },
            deadline => {
                // The last body's tail is looked at while a head is awaited;
                // one under way does not keep it past the head's deadline.
                let look_at = tail
                    .as_ref()
                    .map(|t| t.look_at())
                    .filter(|at| deadline.is_none_or(|deadline| *at < deadline));
                let read = conn.read_chunk_until_retired(buf);
                let waited = match look_at.or(deadline) {
                    Some(until) => timeout_at(until, read).await,
                    None => Ok(read.await),
                };
                match waited {
                    Ok(Some(read)) => read,
                    Ok(None) => continue,
                    Err(_) if look_at.is_some() => {
                        look(download, conn, tail)?;
                        continue;
                    }
                    Err(_) => return Ok(HeadRead::Refused(REQUEST_TIMEOUT)),
                }
            }
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

/// Answers one request, and logs it (the connection logs it instead if it
/// is dropped mid-response). A body sent whole leaves its slot to its
/// `tail` (the earlier one's, if any, is then covered by it).
async fn respond<S: Io>(
    download: &Download,
    conn: &mut Connection<S>,
    request: &Request,
    keep_alive: bool,
    tail: &mut Option<Box<Tail>>,
) -> Result<(), HandlerError> {
    let built = build(
        download,
        request,
        conn.settings().encoding,
        super::source(conn),
        tail.is_some(),
    )
    .await;
    let response = match built {
        Ok(response) => response,
        Err(refused) => {
            // Counted as the raw protocol counts its `ERR` line.
            if let Some(reason) = refused.reason {
                conn.count_error_reply(reason.as_str());
            }
            Response::error(refused)
        }
    };
    let status = response.status;
    let range = match &response.body {
        Body::File { start, len, .. } | Body::Archive { start, len, .. } if status == PARTIAL => {
            Some((*start, *len))
        }
        _ => None,
    };
    let head = response.head(keep_alive);
    let head_only = request.method == Method::Head;
    if access::wanted() {
        conn.begin_response(ResponseRecord {
            method: quote(&request.method_name, 16),
            path: quote(&request.target, QUOTE_MAX_BYTES),
            status: status.0,
            range,
            head_bytes: head.len() as u64,
            sent_before: conn.bytes().1,
        });
    }
    let started = Instant::now();
    let (sent, slotted) = match response.body {
        Body::Bytes(body) if !head_only => {
            let mut reply = head.clone();
            reply.extend_from_slice(&body);
            (conn.send(&reply).await.map_err(HandlerError::from), None)
        }
        Body::Shared { bytes, slot } if !head_only => {
            let sent = download.send_bytes(conn, &head, &bytes).await;
            (sent, Some((slot, bytes.len() as u64)))
        }
        Body::File {
            file,
            start,
            len,
            slot,
        } if !head_only => {
            let sent = download.send_range(conn, &head, file, start, len).await;
            (sent, Some((slot, len)))
        }
        Body::Archive {
            archive,
            start,
            len,
            slot,
        } if !head_only => {
            let sent = download
                .send_archive(conn, &head, &archive, start, len)
                .await;
            (sent, Some((slot, len)))
        }
        _ => (conn.send(&head).await.map_err(HandlerError::from), None),
    };
    if let (Ok(()), Some((slot, len))) = (&sent, slotted) {
        let now = Instant::now();
        let deadline = match download.pace {
            Some(pace) => super::pace_deadline(pace, started, len),
            None => now + conn.settings().idle_timeout,
        };
        match tail {
            // The unread tail's slot covered this body: it is now the tail
            // of both.
            Some(held) if slot.is_covered() => held.renew(len, deadline, now),
            _ => *tail = Tail::of(len, slot, deadline, now),
        }
    }
    conn.end_response(if sent.is_ok() {
        Outcome::Complete
    } else {
        Outcome::Aborted
    });
    sent
}

/// The response to a request, or the error status. A body's slot is
/// `covered` by the connection's unread tail if it has one.
async fn build(
    download: &Download,
    request: &Request,
    encoding: TextEncoding,
    source: IpAddr,
    covered: bool,
) -> Result<Response, Refused> {
    if request.method == Method::Other {
        return Err(METHOD_NOT_ALLOWED.into());
    }
    let name = request.path.as_ref().map_err(|status| *status)?;
    let target = match download.resolve_target(name).await {
        Ok(target) => target,
        Err(HandlerError::Refused(Refusal::NotFound | Refusal::Hidden))
            if let Some(folder) = archived_folder(name) =>
        {
            return archive(download, request, folder, source, covered).await;
        }
        Err(e) => return Err(Refused::of(&e)),
    };
    // A file's validators and its `Date` are of one instant, taken after
    // the resolve (which may wait), so `Last-Modified` is never later.
    let now = SystemTime::now();
    match target {
        Target::Directory { .. } if !name.is_empty() && !name.ends_with('/') => {
            // `/docs/nested` is `/docs/nested/`: a relative link on its
            // page (`../`) must resolve against the slashed name.
            let location = percent::directory_location(name);
            let body = html::moved_page(&location).into_bytes();
            Ok(Response {
                status: MOVED_PERMANENTLY,
                at: now,
                headers: vec![
                    ("Location", Cow::Owned(location)),
                    ("Content-Type", Cow::Borrowed("text/html; charset=utf-8")),
                ],
                body: Body::Bytes(body),
            })
        }
        Target::Directory { handle, path } => {
            // A listing has no validators: `If-None-Match: *` (it exists)
            // is a 304, `If-Match` with a tag a 412; dates are ignored.
            match conditional::evaluate(&request.preconditions(), None, now) {
                Decision::Failed => return Err(PRECONDITION_FAILED.into()),
                Decision::NotModified => {
                    return Ok(Response {
                        status: NOT_MODIFIED,
                        at: now,
                        headers: vec![VARY_ACCEPT],
                        body: Body::Length(0),
                    });
                }
                Decision::Proceed { .. } => {}
            }
            let (format, content_type) = if accept::prefers_plain(request.accept.as_deref()) {
                (
                    Format::Text,
                    Cow::Owned(format!("text/plain; charset={}", encoding.name())),
                )
            } else {
                (Format::Html, Cow::Borrowed("text/html; charset=utf-8"))
            };
            // A body holds a slot while it is sent; a HEAD takes the length
            // of the same cached rendering, and sends nothing.
            let slot = match request.method {
                Method::Get => Some(body_slot(download, source, covered)?),
                _ => None,
            };
            let bytes = download
                .listing(handle, &path, encoding, format)
                .await
                .map_err(|e| match e {
                    HandlerError::Refused(_) => Refused::of(&e),
                    _ => Refused::from(FORBIDDEN),
                })?;
            let body = match slot {
                Some(slot) => Body::Shared { bytes, slot },
                None => Body::Length(bytes.len() as u64),
            };
            Ok(Response {
                status: OK,
                // After the rendering, which may take a while; a listing
                // has no `Last-Modified` to keep below it.
                at: SystemTime::now(),
                headers: vec![("Content-Type", content_type), VARY_ACCEPT],
                body,
            })
        }
        Target::File { file, path, meta } => {
            let version = Validators::of(
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                now,
            );
            let content_type = Cow::Borrowed(content_type::of_path(&path));
            let (status, start, part, headers) =
                match select(request, &version, meta.len(), content_type, now)? {
                    Selected::Answered(response) => return Ok(response),
                    Selected::Part(part) => part,
                };
            if request.method == Method::Head {
                return Ok(Response {
                    status,
                    at: now,
                    headers,
                    body: Body::Length(part),
                });
            }
            let slot = body_slot(download, source, covered)?;
            Ok(Response {
                status,
                at: now,
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

/// The slot of a body for `source`: one of the listener's, or a covered one
/// when the connection's unread tail holds one already (`covered`), which
/// then holds it for this body and for this body's tail: one connection
/// sends one body at a time, and takes one slot for all of them.
fn body_slot(download: &Download, source: IpAddr, covered: bool) -> Result<Slot, Refused> {
    if covered {
        return Ok(Slot::covered(source));
    }
    download.slot(source).map_err(|e| Refused::of(&e))
}

/// The response to a GET or HEAD of `folder`'s tar stream (`NAME.tar` with
/// no such file): validated, ranged and resumed as a file is, from the
/// archive's layout (its length and entity tag are known before a byte
/// is sent); a HEAD walks the folder too.
async fn archive(
    download: &Download,
    request: &Request,
    folder: &str,
    source: IpAddr,
    covered: bool,
) -> Result<Response, Refused> {
    // A body holds a slot from before the walk: a flood of GETs does not
    // walk more folders than it could send.
    let slot = match request.method {
        Method::Get => Some(body_slot(download, source, covered)?),
        _ => None,
    };
    let archive = match download.open_archive(folder, source).await {
        Ok(archive) => archive,
        Err(e) => {
            // A folder that is not there is the access log's 404; a
            // refusal says why here.
            if !matches!(e, HandlerError::Refused(Refusal::NotFound)) {
                info!(folder = quote(folder, QUOTE_MAX_BYTES).as_str(), reason = %e, "archive refused");
            }
            return Err(Refused::of(&e));
        }
    };
    let now = SystemTime::now();
    let layout = archive.layout();
    let version = Validators::tagged(layout.etag(), layout.newest_mtime(), now);
    let content_type = Cow::Borrowed("application/x-tar");
    let (status, start, part, mut headers) =
        match select(request, &version, layout.len(), content_type, now)? {
            Selected::Answered(response) => return Ok(response),
            Selected::Part(part) => part,
        };
    if let Some(top) = layout.entries().next() {
        headers.push((
            "Content-Disposition",
            Cow::Owned(content_disposition(&top.name)),
        ));
    }
    let body = match slot {
        Some(slot) => Body::Archive {
            archive,
            start,
            len: part,
            slot,
        },
        None => Body::Length(part),
    };
    Ok(Response {
        status,
        at: now,
        headers,
        body,
    })
}

/// `attachment`, named `TOP.tar`: as a quoted ASCII name (what curl's
/// `-J` and wget's `--content-disposition` read; other bytes become `_`)
/// and in UTF-8 (RFC 6266 §4.3, for browsers). The name is a directory's,
/// so it has no `/`.
fn content_disposition(top: &str) -> String {
    let ascii: String = top
        .chars()
        .map(|c| match c {
            ' ' | '-' | '.' | '_' | '(' | ')' | '+' | ',' => c,
            c if c.is_ascii_alphanumeric() => c,
            _ => '_',
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}.tar\"; filename*=UTF-8''{}.tar",
        percent::encode_path(top)
    )
}

/// What a GET or HEAD of a representation (`len` bytes, with `version`'s
/// validators) is answered with.
enum Selected {
    /// The answer, without the representation (304, 416).
    Answered(Response),
    /// The status (200, 206), the part's first byte and length, and the
    /// headers so far.
    Part((Status, u64, u64, Headers)),
}

type Headers = Vec<(&'static str, Cow<'static, str>)>;

/// The preconditions, then the range, of `request` against a
/// representation of `len` bytes: 412 as the error.
fn select(
    request: &Request,
    version: &Validators,
    len: u64,
    content_type: Cow<'static, str>,
    now: SystemTime,
) -> Result<Selected, Status> {
    let mut headers = Vec::with_capacity(7);
    headers.push(("ETag", Cow::Owned(version.etag.clone())));
    if let Some(date) = version.last_modified() {
        headers.push(("Last-Modified", Cow::Owned(date)));
    }
    headers.push(("Accept-Ranges", Cow::Borrowed("bytes")));
    let use_range = match conditional::evaluate(&request.preconditions(), Some(version), now) {
        Decision::Failed => return Err(PRECONDITION_FAILED),
        Decision::NotModified => {
            return Ok(Selected::Answered(Response {
                status: NOT_MODIFIED,
                at: now,
                headers,
                body: Body::Length(0),
            }));
        }
        Decision::Proceed { use_range } => use_range,
    };
    headers.push(("Content-Type", content_type));
    let range = match (&request.range, request.method) {
        (Some(header), Method::Get) if use_range => range::byte_range(header, len),
        _ => None,
    };
    Ok(Selected::Part(match range {
        None => (OK, 0, len, headers),
        Some(Ok((start, part))) => {
            headers.push((
                "Content-Range",
                Cow::Owned(range::content_range(start, part, len)),
            ));
            (PARTIAL, start, part, headers)
        }
        Some(Err(())) => {
            let mut response = Response::error(RANGE_NOT_SATISFIABLE.into());
            response
                .headers
                .push(("Content-Range", Cow::Owned(range::unsatisfied_range(len))));
            return Ok(Selected::Answered(response));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_s_body_says_why_in_the_raw_protocol_s_words() {
        let cases = [
            (
                Refused::of(&HandlerError::Refused(Refusal::Hidden)),
                FORBIDDEN,
                "403 forbidden: hidden files are not served\n",
            ),
            (
                Refused::of(&HandlerError::Refused(Refusal::ArchiveTooDeep)),
                FORBIDDEN,
                "403 forbidden: folder too deep to archive\n",
            ),
            // Not found and busy say no more than their status.
            (
                Refused::of(&HandlerError::Refused(Refusal::NotFound)),
                NOT_FOUND,
                "404 not found\n",
            ),
            (
                Refused::of(&HandlerError::Refused(Refusal::Busy)),
                UNAVAILABLE,
                "503 service unavailable\n",
            ),
            (Refused::from(BAD_REQUEST), BAD_REQUEST, "400 bad request\n"),
        ];
        for (refused, status, body) in cases {
            assert_eq!(refused.status, status);
            assert_eq!(String::from_utf8(refused.body()).unwrap(), body);
        }
    }
}
