//! Writing a response head: the status line, `Date`, `Server`,
//! `Connection`, `Content-Length` and the response's own fields, for every
//! HTTP speaker here (the download port, the metrics handler).

use std::fmt::Write as _;
use std::time::SystemTime;

use super::date;
use super::status::{NOT_MODIFIED, Status};

/// Room for a typical response head (a file's is about 280 bytes), so that
/// it is built without growing.
const HEAD_CAPACITY: usize = 384;

/// The head of a response with `status` at `now`: `Connection:
/// keep-alive` or `close`, `Content-Length: content_length` (none for a
/// 304, whose length is the representation's, RFC 9110 §8.6), then
/// `fields` in order, then the blank line.
pub(crate) fn write<'a>(
    status: Status,
    now: SystemTime,
    keep_alive: bool,
    content_length: u64,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<u8> {
    let mut head = String::with_capacity(HEAD_CAPACITY);
    let _ = write!(head, "HTTP/1.1 {status}\r\n");
    push_date(&mut head, now);
    let _ = write!(
        head,
        "Server: switchboard\r\nConnection: {}\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    );
    if status != NOT_MODIFIED {
        let _ = write!(head, "Content-Length: {content_length}\r\n");
    }
    for (name, value) in fields {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Appends the `Date` field for `now` (none if it is outside HTTP-date's
/// range). It changes once a second, so each worker thread formats it
/// once a second, not once a response.
fn push_date(out: &mut String, now: SystemTime) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, Option<String>)> = const { RefCell::new((u64::MAX, None)) };
    }
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second {
            *text = date::format(now);
            *cached_second = second;
        }
        if let Some(text) = text {
            out.push_str("Date: ");
            out.push_str(text);
            out.push_str("\r\n");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::status::{NOT_FOUND, OK};
    use std::time::Duration;

    fn text(head: Vec<u8>) -> String {
        String::from_utf8(head).expect("ASCII")
    }

    #[test]
    fn heads_have_their_status_date_framing_and_fields_in_order() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let cases = [
            (
                OK,
                true,
                12,
                vec![("Content-Type", "text/plain")],
                "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: switchboard\r\n\
                 Connection: keep-alive\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n",
            ),
            (
                NOT_FOUND,
                false,
                0,
                vec![],
                "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: switchboard\r\n\
                 Connection: close\r\nContent-Length: 0\r\n\r\n",
            ),
            (
                NOT_MODIFIED,
                true,
                500,
                vec![("ETag", "\"x\""), ("Vary", "Accept")],
                "HTTP/1.1 304 Not Modified\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: switchboard\r\n\
                 Connection: keep-alive\r\nETag: \"x\"\r\nVary: Accept\r\n\r\n",
            ),
        ];
        for (status, keep_alive, length, fields, want) in cases {
            assert_eq!(text(write(status, at, keep_alive, length, fields)), want);
        }
    }

    #[test]
    fn a_time_outside_http_dates_gets_no_date_and_the_cache_follows_the_second() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert!(!text(write(OK, far, false, 0, [])).contains("Date:"));
        let a = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let b = a + Duration::from_secs(1);
        assert!(text(write(OK, a, false, 0, [])).contains("08:49:37 GMT"));
        assert!(text(write(OK, b, false, 0, [])).contains("08:49:38 GMT"));
    }
}
