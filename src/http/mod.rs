//! HTTP/1.1 as the download port, the metrics handler and `switchboard get`
//! speak it, as pure functions: no sockets,
//! files or clocks are touched here (the current time is passed in). One
//! file a feature, each with its own table of tests: the request head and
//! its field checks (`request`), percent-decoding (`percent`), `Range`
//! (`range`), entity tags (`etag`), HTTP-dates (`date`), the precondition
//! order of RFC 9110 §13.2.2 (`conditional`), `Accept` (`accept`),
//! `Content-Type` by extension (`content_type`), the HTML index page
//! (`html`), the status codes (`status`) and the response head written
//! (`head`). The download handler (`handler::download::http`) and the
//! metrics handler do the I/O around them. The client's side,
//! a response head, `Content-Range` and chunked bodies (`response`), is
//! read by `switchboard get` (`client::get`).

pub(crate) mod accept;
pub(crate) mod conditional;
pub(crate) mod content_type;
pub(crate) mod date;
pub(crate) mod etag;
pub(crate) mod head;
pub(crate) mod html;
pub(crate) mod percent;
pub(crate) mod range;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod status;
