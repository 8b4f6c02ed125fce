//! The response statuses the HTTP speakers here (the download port, the
//! metrics handler) answer with.

/// A response status and its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status(pub u16, pub &'static str);

pub(crate) const OK: Status = Status(200, "OK");
pub(crate) const PARTIAL: Status = Status(206, "Partial Content");
pub(crate) const MOVED_PERMANENTLY: Status = Status(301, "Moved Permanently");
pub(crate) const NOT_MODIFIED: Status = Status(304, "Not Modified");
pub(crate) const BAD_REQUEST: Status = Status(400, "Bad Request");
pub(crate) const FORBIDDEN: Status = Status(403, "Forbidden");
pub(crate) const NOT_FOUND: Status = Status(404, "Not Found");
pub(crate) const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
pub(crate) const REQUEST_TIMEOUT: Status = Status(408, "Request Timeout");
pub(crate) const PRECONDITION_FAILED: Status = Status(412, "Precondition Failed");
pub(crate) const URI_TOO_LONG: Status = Status(414, "URI Too Long");
pub(crate) const RANGE_NOT_SATISFIABLE: Status = Status(416, "Range Not Satisfiable");
pub(crate) const TOO_MANY_REQUESTS: Status = Status(429, "Too Many Requests");
pub(crate) const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
pub(crate) const UNAVAILABLE: Status = Status(503, "Service Unavailable");

impl std::fmt::Display for Status {
    /// The status line's code and reason: `404 Not Found`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

impl Status {
    /// The one-line text body of an error response: `404 not found`.
    pub(crate) fn error_body(self) -> Vec<u8> {
        format!("{} {}\n", self.0, self.1.to_ascii_lowercase()).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_one_lower_case_line() {
        let cases = [
            (NOT_FOUND, "404 not found\n"),
            (PRECONDITION_FAILED, "412 precondition failed\n"),
            (UNAVAILABLE, "503 service unavailable\n"),
        ];
        for (status, body) in cases {
            assert_eq!(status.error_body(), body.as_bytes());
        }
    }
}
