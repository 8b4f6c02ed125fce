//! One HTTP exchange of `get`: the request (with `Range` and `If-Range`
//! to resume), its response head (interim 1xx heads skipped, the head
//! bounded in size and time), and how the body after it ends. A first
//! answer that is not HTTP is told apart ([`NotHttp::Raw`]) so the caller
//! can choose the raw protocol; a close without a byte is an error, never
//! a sign of another protocol.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use super::{GetError, Run, connect_by};
use crate::http::percent;
use crate::http::response::{ChunkedDecoder, ResponseHead, parse_head};

/// Longest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Most interim (1xx) response heads skipped before the real one.
const MAX_INTERIM: usize = 8;

/// Reads until the server closes, at most `max` bytes; a reset is an error.
pub(super) async fn read_to_end_bounded(
    stream: &mut TcpStream,
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
) -> Result<(TcpStream, ResponseHead, Vec<u8>), GetError> {
    match try_request(run, name, resume).await {
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
) -> Result<(TcpStream, ResponseHead, Vec<u8>), NotHttp> {
    let options = run.options;
    let until = run.wait_until();
    let mut stream = connect_by(run, until).await?;
    let mut request = format!(
        "GET /{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchboard/{}\r\n\
         Accept: text/plain, */*;q=0.9\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n",
        percent::encode_path(name),
        options.addr,
        env!("CARGO_PKG_VERSION")
    );
    if let Some((from, validator)) = resume {
        request.push_str(&format!(
            "Range: bytes={from}-\r\nIf-Range: {validator}\r\n"
        ));
    }
    request.push_str("\r\n");
    let late = || {
        NotHttp::Error(GetError::Failed(format!(
            "no response head in time ({})",
            run.why_late()
        )))
    };
    match timeout_at(until, stream.write_all(request.as_bytes())).await {
        Ok(written) => written.map_err(|e| NotHttp::Error(e.into()))?,
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
            return Err(NotHttp::Raw);
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
                return Err(
                    GetError::Failed(format!("a response head over {MAX_HEAD} bytes")).into(),
                );
            }
            Ok(None) => {}
            Err(e) => {
                return Err(GetError::Failed(format!("{name}: refused the response: {e}")).into());
            }
        }
        let n = match timeout_at(until, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(NotHttp::Error(e.into())),
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
