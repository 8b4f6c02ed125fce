//! `metrics`: the server's own figures (see `crate::metrics`) in the
//! Prometheus text exposition format, for Prometheus to scrape and for a
//! person with netcat to read.
//!
//! A first line `GET /metrics HTTP/1.0` (or `HTTP/1.1`) gets an HTTP/1.1
//! response with `Content-Length` and `Connection: close`: 200 with the
//! figures, 404 for another path, 405 for another method, 431 for too many
//! headers. Any other first line (netcat's empty line, or none at all
//! before the client closes its side) gets the bare text. Either way the
//! connection then closes. The request is bounded by `max_message_bytes`
//! per line, [`MAX_HEADERS`] lines and `request_timeout` in all.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use serde::Deserialize;
use tokio::time::{Instant, timeout_at};

use super::probe::{Probe, ProbeContext, Verdict, shown};
use super::{BuildContext, Ended, Handler, HandlerError, Invalid};
use crate::conn::{ConnError, Connection, Incoming, Io};
use crate::http::head;
use crate::http::request::request_line;
use crate::http::status::{
    HEADERS_TOO_LARGE, METHOD_NOT_ALLOWED, NOT_FOUND, OK, REQUEST_TIMEOUT, Status, URI_TOO_LONG,
};
use crate::metrics::{CONTENT_TYPE, CloseReason, Metrics};

/// The path the figures are served at.
const PATH: &str = "/metrics";

/// Most header lines read after the request line.
const MAX_HEADERS: usize = 100;

/// How long a client has for its whole request, by default.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `request_timeout`.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings of the metrics handler.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// How long a client has to send its request (line and headers).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

/// The metrics handler.
#[derive(Debug)]
pub(crate) struct MetricsHandler {
    metrics: Arc<Metrics>,
    request_timeout: Duration,
}

/// What the client asked for.
enum Request {
    /// The figures as bare text (not HTTP).
    Text,
    /// An HTTP request: whether to send a body, and the status to answer.
    Http { head_only: bool, status: Status },
}

/// What the metrics count a connection that got `status` as.
fn close_reason(status: Status) -> CloseReason {
    match status {
        REQUEST_TIMEOUT => CloseReason::Slow,
        URI_TOO_LONG | HEADERS_TOO_LARGE => CloseReason::Limit,
        _ => CloseReason::Completed,
    }
}

/// The status for a request that could not be read: a line over
/// `max_message_bytes` (the request line's or a header's), or a request
/// not complete in time. `None` for other errors.
fn status_for_error(err: &HandlerError, in_headers: bool) -> Option<Status> {
    match err {
        HandlerError::Conn(ConnError::MessageTooLong(_)) if in_headers => Some(HEADERS_TOO_LARGE),
        HandlerError::Conn(ConnError::MessageTooLong(_)) => Some(URI_TOO_LONG),
        HandlerError::Conn(ConnError::Idle(_) | ConnError::TooSlow(_)) => Some(REQUEST_TIMEOUT),
        _ => None,
    }
}

impl MetricsHandler {
    /// Reads the request within the deadline; `None` when the server shut
    /// down first. A request that cannot be read in full gets its HTTP
    /// status (408, 414, 431): the first line is answered as HTTP then too,
    /// since what it was meant to be cannot be told.
    async fn request<S: Io>(
        &self,
        conn: &mut Connection<S>,
    ) -> Result<Option<Request>, HandlerError> {
        let deadline = Instant::now() + self.request_timeout;
        let failed = |err: HandlerError, in_headers: bool| match status_for_error(&err, in_headers)
        {
            Some(status) => Ok(Some(Request::Http {
                head_only: false,
                status,
            })),
            None => Err(err),
        };
        let first = match next_line(conn, deadline, self.request_timeout).await {
            Ok(Incoming::Data(line)) => line,
            // Nothing asked, but the client is listening (`nc </dev/null`).
            Ok(Incoming::Closed) => return Ok(Some(Request::Text)),
            Ok(Incoming::Shutdown) => return Ok(None),
            Err(err) => return failed(err, false),
        };
        // The request line of every HTTP speaker here; a target that is
        // not UTF-8 is no path of ours.
        let Some((method, target)) = request_line(&first) else {
            return Ok(Some(Request::Text));
        };
        let head_only = method == b"HEAD";
        let path = std::str::from_utf8(target).map_or("", request_path);
        let mut status = match (method, path) {
            (b"GET" | b"HEAD", PATH) => OK,
            (b"GET" | b"HEAD", _) => NOT_FOUND,
            _ => METHOD_NOT_ALLOWED,
        };
        // The headers are read (and ignored), so that the close does not
        // cut into a request still arriving.
        let mut headers = 0;
        loop {
            match next_line(conn, deadline, self.request_timeout).await {
                Ok(Incoming::Data(line)) if line.is_empty() => break,
                Ok(Incoming::Data(_)) => {
                    headers += 1;
                    if headers > MAX_HEADERS {
                        status = HEADERS_TOO_LARGE;
                        break;
                    }
                }
                Ok(Incoming::Closed) => break,
                Ok(Incoming::Shutdown) => return Ok(None),
                Err(err) => return failed(err, true),
            }
        }
        Ok(Some(Request::Http { head_only, status }))
    }

    async fn render(&self) -> Result<Vec<u8>, HandlerError> {
        let metrics = self.metrics.clone();
        // Reading /proc/self/fd is a directory listing: off the async workers.
        Ok(tokio::task::spawn_blocking(move || metrics.render())
            .await
            .map_err(std::io::Error::other)?)
    }
}

/// Sends an HTTP/1.1 response with `status`: `body` (the figures, for 200)
/// or the status line as text; no body for HEAD.
async fn send_response<S: Io>(
    conn: &mut Connection<S>,
    status: Status,
    head_only: bool,
    body: Vec<u8>,
) -> Result<(), HandlerError> {
    let (content_type, body) = if status == OK {
        (CONTENT_TYPE, body)
    } else {
        (
            "text/plain; charset=utf-8",
            format!("{status}\n").into_bytes(),
        )
    };
    let allow = (status == METHOD_NOT_ALLOWED).then_some(("Allow", "GET, HEAD"));
    let fields = [("Content-Type", content_type)].into_iter().chain(allow);
    let mut response = head::write(status, SystemTime::now(), false, body.len() as u64, fields);
    if !head_only {
        response.extend_from_slice(&body);
    }
    conn.send(&response).await?;
    Ok(())
}

/// The next line, unless the request's deadline passes first.
async fn next_line<S: Io>(
    conn: &mut Connection<S>,
    deadline: Instant,
    limit: Duration,
) -> Result<Incoming<BytesMut>, HandlerError> {
    match timeout_at(deadline, conn.next_message()).await {
        Ok(line) => Ok(line?),
        Err(_) => Err(ConnError::Idle(limit).into()),
    }
}

/// The path of a request target, without its query: `/metrics?x` and
/// `http://host:9100/metrics` are both `/metrics`.
fn request_path(target: &str) -> &str {
    let without_query = target.split(['?', '#']).next().unwrap_or(target);
    match without_query
        .strip_prefix("http://")
        .or_else(|| without_query.strip_prefix("https://"))
    {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("/", |at| &authority_and_path[at..]),
        None => without_query,
    }
}

impl Handler for MetricsHandler {
    const NAME: &'static str = "metrics";
    type Config = MetricsConfig;

    fn validate(config: &mut MetricsConfig) -> Result<(), Invalid> {
        if config.request_timeout.is_zero() || config.request_timeout > MAX_REQUEST_TIMEOUT {
            return Err(Invalid::at(
                "request_timeout",
                format!(
                    "request_timeout must be longer than 0s and at most {}",
                    humantime::format_duration(MAX_REQUEST_TIMEOUT)
                ),
            ));
        }
        Ok(())
    }

    fn build(config: &MetricsConfig, ctx: &BuildContext<'_>, _previous: Option<&Self>) -> Self {
        MetricsHandler {
            metrics: ctx.metrics.server().clone(),
            request_timeout: config.request_timeout,
        }
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        let Some(request) = self.request(conn).await? else {
            return Ok(Ended::Shutdown);
        };
        let (head_only, status) = match request {
            Request::Text => {
                let text = self.render().await?;
                conn.send(&text).await?;
                return Ok(Ended::Completed);
            }
            Request::Http { head_only, status } => (head_only, status),
        };
        if close_reason(status) != CloseReason::Completed {
            // 408, 414, 431: said in HTTP here, so no `ERR` line after it.
            send_response(conn, status, false, Vec::new()).await?;
            return Err(HandlerError::Answered {
                status,
                reason: close_reason(status),
            });
        }
        let body = if status == OK {
            self.render().await?
        } else {
            Vec::new()
        };
        send_response(conn, status, head_only, body).await?;
        Ok(Ended::Completed)
    }

    /// A scrape must get `HTTP/1.1 200` and the build-info figure.
    fn probe(_config: &MetricsConfig, _ctx: &ProbeContext<'_>) -> Probe {
        const STATUS: &[u8] = b"HTTP/1.1 200 ";
        const FIGURE: &[u8] = b"\nswitchboard_build_info{";
        Probe {
            send: format!("GET {PATH} HTTP/1.0\r\n\r\n").into_bytes(),
            check: Box::new(|reply, closed| {
                let n = reply.len().min(STATUS.len());
                if reply[..n] != STATUS[..n] {
                    Verdict::Fail(format!("answered {} instead of a scrape", shown(reply)))
                } else if memchr::memmem::find(reply, FIGURE).is_some() {
                    Verdict::Pass("scraped")
                } else if closed {
                    Verdict::Fail("the scrape has no switchboard_build_info".to_owned())
                } else {
                    Verdict::More
                }
            }),
        }
    }

    fn summary(config: &MetricsConfig) -> String {
        format!(
            "serves {PATH} request_timeout={}",
            humantime::format_duration(config.request_timeout)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_in_any_form_has_its_path() {
        assert_eq!(request_path("/metrics"), "/metrics");
        assert_eq!(request_path("/metrics?x=1"), "/metrics");
        assert_eq!(request_path("http://host:9100/metrics"), "/metrics");
        assert_eq!(request_path("http://host"), "/");
        assert_eq!(request_path("*"), "*");
    }
}
