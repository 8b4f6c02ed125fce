//! `get`: fetches a file (or, with `-r`, a directory tree) from a download
//! listener, over HTTP into `FILE.part`, renamed to `FILE` only when it is
//! complete and its length matches; `-c` resumes a `.part` with `Range`
//! and `If-Range` (the validator is kept in `FILE.part.etag`). A server
//! that does not speak HTTP (the tutorial's own) gets the raw protocol,
//! with a warning that the size cannot be verified; `--raw` forces it.
//!
//! Names from a server's listing are refused unless they are plain
//! relative names: no `..`, no absolute path, no control bytes, no empty
//! or `.` component; nothing is ever followed through a symlink, so a
//! hostile server cannot make it write outside the output directory.

use std::fs;
use std::io::{self, IsTerminal, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::connect;
use crate::conn::text::{TextEncoding, percent_encode_path};

/// Longest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Longest listing read for `-r`.
const MAX_LISTING: usize = 16 * 1024 * 1024;
/// Deepest directory tree `-r` follows.
const MAX_DEPTH: usize = 32;
/// Most files `-r` fetches in one run.
const MAX_FILES: usize = 100_000;

/// What to fetch, and how.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// `host:port` of the download listener.
    pub addr: String,
    /// The name on the server (a file, or a directory with `recursive`).
    pub name: String,
    /// Where to write: the file, or the directory for `-r` (default: the
    /// name's last component, in the current directory).
    pub output: Option<PathBuf>,
    /// Resume a `.part` left by an earlier run.
    pub resume: bool,
    /// Fetch a directory tree through its listings.
    pub recursive: bool,
    /// Use the raw protocol (the tutorial's), without sizes or resume.
    pub raw: bool,
    /// Print nothing but errors.
    pub quiet: bool,
    /// Encoding of names in the raw protocol.
    pub encoding: TextEncoding,
    /// Bound of the connect and of every read.
    pub timeout: Duration,
}

/// Why a fetch failed; each has its exit status.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The network or the server failed (exit status 1).
    #[error("{0}")]
    Failed(String),
    /// The server does not have it or refused it (exit status 3).
    #[error("{0}")]
    NotFound(String),
    /// The transfer ended early; the `.part` is kept for `-c` (exit status 4).
    #[error("{0}")]
    Incomplete(String),
}

impl GetError {
    /// The exit status: 1, 3 or 4.
    pub fn exit_status(&self) -> u8 {
        match self {
            GetError::Failed(_) => 1,
            GetError::NotFound(_) => 3,
            GetError::Incomplete(_) => 4,
        }
    }
}

impl From<io::Error> for GetError {
    fn from(e: io::Error) -> Self {
        GetError::Failed(e.to_string())
    }
}

/// Fetches what `options` names; returns the paths written.
pub async fn get(options: &GetOptions) -> Result<Vec<PathBuf>, GetError> {
    let name = options.name.trim_start_matches('/').to_owned();
    let last = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download")
        .to_owned();
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&last));
    if options.recursive {
        let mut written = Vec::new();
        fs::create_dir_all(&output)?;
        mirror(options, &name, &output, 0, &mut written).await?;
        if !options.quiet {
            eprintln!("{} file(s) into {}", written.len(), output.display());
        }
        return Ok(written);
    }
    fetch_file(options, &name, &output).await.map(|p| vec![p])
}

/// Fetches the tree under `dir` into `into` (an existing directory).
async fn mirror(
    options: &GetOptions,
    dir: &str,
    into: &Path,
    depth: usize,
    written: &mut Vec<PathBuf>,
) -> Result<(), GetError> {
    if depth > MAX_DEPTH {
        eprintln!("warning: {dir}: deeper than {MAX_DEPTH} levels, not followed");
        return Ok(());
    }
    let base = if dir.is_empty() || dir.ends_with('/') {
        dir.to_owned()
    } else {
        format!("{dir}/")
    };
    let listing = fetch_listing(options, &base).await?;
    for entry in listing_entries(&listing) {
        let (entry_name, is_dir) = match entry {
            Ok(entry) => entry,
            Err(refused) => {
                eprintln!("warning: refused the name {refused:?} from the server's listing");
                continue;
            }
        };
        let local = into.join(entry_name);
        if is_dir {
            match fs::symlink_metadata(&local) {
                Ok(meta) if !meta.is_dir() => {
                    eprintln!(
                        "warning: {} exists and is not a directory; skipped",
                        local.display()
                    );
                    continue;
                }
                Ok(_) => {}
                Err(_) => fs::create_dir(&local)?,
            }
            Box::pin(mirror(
                options,
                &format!("{base}{entry_name}"),
                &local,
                depth + 1,
                written,
            ))
            .await?;
        } else {
            if written.len() >= MAX_FILES {
                eprintln!("warning: more than {MAX_FILES} files; stopped");
                return Ok(());
            }
            if fs::symlink_metadata(&local).is_ok_and(|m| m.file_type().is_symlink()) {
                eprintln!(
                    "warning: {} is a symlink; not written through",
                    local.display()
                );
                continue;
            }
            written.push(fetch_file(options, &format!("{base}{entry_name}"), &local).await?);
        }
    }
    Ok(())
}

/// The entries of a listing (one name a line, a directory with a trailing
/// `/`): each a plain name and whether it is a directory, or the line
/// refused as unsafe. Blank lines are skipped.
pub(crate) fn listing_entries(listing: &str) -> impl Iterator<Item = Result<(&str, bool), &str>> {
    listing.lines().filter(|line| !line.is_empty()).map(|line| {
        let (name, is_dir) = match line.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (line, false),
        };
        if safe_component(name) {
            Ok((name, is_dir))
        } else {
            Err(line)
        }
    })
}

/// True for a name that is one plain path component: not empty, `.` or
/// `..`, no `/`, `\` or control characters.
pub(crate) fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// A listing's text (one name a line, directories with a trailing `/`).
async fn fetch_listing(options: &GetOptions, dir: &str) -> Result<String, GetError> {
    if options.raw {
        let mut stream = connect(&options.addr, options.timeout).await?;
        let mut request = options.encoding.encode(dir).into_owned();
        request.push(b'\n');
        stream.write_all(&request).await?;
        let body = read_to_end_bounded(&mut stream, MAX_LISTING, options.timeout).await?;
        let text = options.encoding.decode(&body).into_owned();
        if let Some(reason) = text.strip_prefix("ERR ") {
            return Err(GetError::NotFound(format!("{dir}: {}", reason.trim_end())));
        }
        return Ok(text);
    }
    let (mut stream, head, rest) = request(options, dir, None).await?;
    match head.status {
        200 => {}
        404 | 403 => {
            return Err(GetError::NotFound(format!(
                "{dir}: {} {}",
                head.status, head.reason
            )));
        }
        other => {
            return Err(GetError::Failed(format!(
                "{dir}: HTTP {other} {}",
                head.reason
            )));
        }
    }
    let mut body = rest;
    let length = head.content_length.unwrap_or(MAX_LISTING as u64);
    if length > MAX_LISTING as u64 {
        return Err(GetError::Failed(format!(
            "{dir}: a listing over {MAX_LISTING} bytes"
        )));
    }
    while (body.len() as u64) < length {
        let mut buf = vec![0u8; 64 * 1024];
        let n = timeout(options.timeout, stream.read(&mut buf))
            .await
            .map_err(|_| GetError::Incomplete(format!("{dir}: the listing stalled")))??;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(body)
        .map_err(|_| GetError::Failed(format!("{dir}: a listing that is not UTF-8")))
}

async fn read_to_end_bounded(
    stream: &mut TcpStream,
    max: usize,
    limit: Duration,
) -> Result<Vec<u8>, GetError> {
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = timeout(limit, stream.read(&mut buf))
            .await
            .map_err(|_| GetError::Incomplete("the server stopped sending".into()))??;
        if n == 0 {
            return Ok(body);
        }
        if body.len() + n > max {
            return Err(GetError::Failed(format!("more than {max} bytes")));
        }
        body.extend_from_slice(&buf[..n]);
    }
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: u16,
    reason: String,
    content_length: Option<u64>,
    /// `Content-Range: bytes a-b/size`: a and size.
    content_range: Option<(u64, u64)>,
    etag: Option<String>,
}

/// Why a request did not get an HTTP response.
enum NotHttp {
    /// The server answered something else: it speaks the raw protocol.
    Raw,
    Error(GetError),
}

impl From<GetError> for NotHttp {
    fn from(e: GetError) -> Self {
        NotHttp::Error(e)
    }
}

impl From<io::Error> for NotHttp {
    fn from(e: io::Error) -> Self {
        NotHttp::Error(e.into())
    }
}

/// Sends `GET /name` (with a range from `resume_from` and its validator)
/// and reads the response head; returns the stream, the head and the body
/// bytes read with it.
async fn request(
    options: &GetOptions,
    name: &str,
    resume: Option<(u64, Option<&str>)>,
) -> Result<(TcpStream, Head, Vec<u8>), GetError> {
    match try_request(options, name, resume).await {
        Ok(done) => Ok(done),
        Err(NotHttp::Raw) => Err(GetError::Failed(format!(
            "{}: the server does not speak HTTP (try --raw)",
            options.addr
        ))),
        Err(NotHttp::Error(e)) => Err(e),
    }
}

async fn try_request(
    options: &GetOptions,
    name: &str,
    resume: Option<(u64, Option<&str>)>,
) -> Result<(TcpStream, Head, Vec<u8>), NotHttp> {
    let mut stream = connect(&options.addr, options.timeout).await?;
    let mut request = format!(
        "GET /{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchboard/{}\r\nAccept: */*\r\nConnection: close\r\n",
        percent_encode_path(name),
        options.addr,
        env!("CARGO_PKG_VERSION")
    );
    if let Some((from, validator)) = resume {
        request.push_str(&format!("Range: bytes={from}-\r\n"));
        if let Some(validator) = validator {
            request.push_str(&format!("If-Range: {validator}\r\n"));
        }
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = timeout(options.timeout, stream.read(&mut chunk))
            .await
            .map_err(|_| GetError::Failed("no response in time".into()))??;
        buf.extend_from_slice(&chunk[..n]);
        // An HTTP server always answers with a status line; anything else
        // (another answer, or a close without a byte) is the raw protocol.
        let could_be_http = if buf.len() >= 5 {
            buf.starts_with(b"HTTP/")
        } else {
            !buf.is_empty() && b"HTTP/".starts_with(&buf)
        };
        if !could_be_http && (n == 0 || !buf.is_empty()) {
            return Err(NotHttp::Raw);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = head_of(&response);
                let rest = buf[len..].to_vec();
                return Ok((stream, head, rest));
            }
            Ok(httparse::Status::Partial) if n == 0 => {
                return Err(GetError::Failed("the response ended inside its head".into()).into());
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(
                    GetError::Failed(format!("a response head over {MAX_HEAD} bytes")).into(),
                );
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(GetError::Failed(format!("a bad response: {e}")).into()),
        }
    }
}

fn head_of(response: &httparse::Response<'_, '_>) -> Head {
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_owned())
    };
    let content_range = field("content-range").and_then(|v| {
        let rest = v.strip_prefix("bytes ")?;
        let (range, size) = rest.split_once('/')?;
        let (first, _) = range.split_once('-')?;
        Some((first.parse().ok()?, size.parse().ok()?))
    });
    Head {
        status: response.code.unwrap_or(0),
        reason: response.reason.unwrap_or("").to_owned(),
        content_length: field("content-length").and_then(|v| v.parse().ok()),
        content_range,
        etag: field("etag"),
    }
}

/// `FILE.part` and `FILE.part.etag` beside `target`.
fn part_paths(target: &Path) -> (PathBuf, PathBuf) {
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    let mut etag = part.clone();
    etag.push(".etag");
    (PathBuf::from(part), PathBuf::from(etag))
}

/// Fetches one file into `target` (through `target.part`).
async fn fetch_file(options: &GetOptions, name: &str, target: &Path) -> Result<PathBuf, GetError> {
    if options.raw {
        return fetch_raw(options, name, target).await;
    }
    let (part, etag_path) = part_paths(target);
    let have = if options.resume {
        fs::symlink_metadata(&part)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len())
    } else {
        0
    };
    let validator = fs::read_to_string(&etag_path).ok();
    let resume = (have > 0).then_some((have, validator.as_deref()));
    let (stream, head, rest) = match try_request(options, name, resume).await {
        Ok(done) => done,
        Err(NotHttp::Raw) => {
            eprintln!(
                "warning: {} does not speak HTTP; using the raw protocol (the size cannot be verified)",
                options.addr
            );
            return fetch_raw(options, name, target).await;
        }
        Err(NotHttp::Error(e)) => return Err(e),
    };
    let (start, total) = match head.status {
        200 => {
            if have > 0 {
                eprintln!(
                    "warning: {name} changed on the server (or cannot resume); starting over"
                );
            }
            (0, head.content_length)
        }
        206 => match head.content_range {
            Some((first, size)) if first == have => (have, Some(size)),
            _ => {
                return Err(GetError::Failed(format!(
                    "{name}: a range that does not continue the .part"
                )));
            }
        },
        416 if have > 0 => {
            eprintln!(
                "warning: {name}: the .part is longer than the file on the server; starting over"
            );
            let _ = fs::remove_file(&part);
            let _ = fs::remove_file(&etag_path);
            return Box::pin(fetch_file(
                &GetOptions {
                    resume: false,
                    ..options.clone()
                },
                name,
                target,
            ))
            .await;
        }
        404 | 403 => {
            return Err(GetError::NotFound(format!(
                "{name}: {} {}",
                head.status, head.reason
            )));
        }
        other => {
            return Err(GetError::Failed(format!(
                "{name}: HTTP {other} {}",
                head.reason
            )));
        }
    };
    let Some(total) = total else {
        return Err(GetError::Failed(format!("{name}: no Content-Length")));
    };
    if let Some(etag) = &head.etag {
        fs::write(&etag_path, etag)?;
    }
    let mut file = open_part(&part, start)?;
    let received = copy_body(options, name, stream, rest, &mut file, start, total).await?;
    file.sync_all()?;
    if received != total {
        return Err(GetError::Incomplete(format!(
            "{name}: {received} of {total} bytes; the rest can be resumed with -c ({})",
            part.display()
        )));
    }
    fs::rename(&part, target)?;
    let _ = fs::remove_file(&etag_path);
    Ok(target.to_owned())
}

/// Opens the `.part` for writing at `start` (truncated there); never
/// through a symlink.
fn open_part(part: &Path, start: u64) -> io::Result<fs::File> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(start == 0)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)?;
    file.set_len(start)?;
    file.seek(io::SeekFrom::Start(start))?;
    Ok(file)
}

/// Copies the body into `file` until `total` bytes are there (or the
/// stream ends), with a progress bar on a terminal; returns the length now.
async fn copy_body(
    options: &GetOptions,
    name: &str,
    mut stream: TcpStream,
    first: Vec<u8>,
    file: &mut fs::File,
    start: u64,
    total: u64,
) -> Result<u64, GetError> {
    let started = Instant::now();
    let bar = (!options.quiet && io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(name.to_owned());
        bar.set_position(start);
        bar
    });
    let mut have = start;
    let mut pending = first;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let take =
            usize::try_from(total - have).map_or(pending.len(), |left| left.min(pending.len()));
        file.write_all(&pending[..take])?;
        have += take as u64;
        if let Some(bar) = &bar {
            bar.set_position(have);
        }
        if have >= total {
            break;
        }
        match timeout(options.timeout, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => pending = buf[..n].to_vec(),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !options.quiet && have == total {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        eprintln!(
            "{name}: {} bytes in {:.2} s ({:.1} MB/s){}",
            total,
            secs,
            (have - start) as f64 / secs / 1e6,
            if start > 0 {
                format!(", resumed at {start}")
            } else {
                String::new()
            }
        );
    }
    Ok(have)
}

/// The raw protocol: the name, a newline, and the file until the server
/// closes. The size cannot be verified; an `ERR ...` line alone is a refusal.
async fn fetch_raw(options: &GetOptions, name: &str, target: &Path) -> Result<PathBuf, GetError> {
    let (part, _) = part_paths(target);
    let mut stream = connect(&options.addr, options.timeout).await?;
    let mut request = options.encoding.encode(name).into_owned();
    request.push(b'\n');
    stream.write_all(&request).await?;
    let mut file = open_part(&part, 0)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = Vec::new();
    let mut total = 0u64;
    loop {
        let n = match timeout(options.timeout, stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: {e} after {total} bytes"
                )));
            }
            Err(_) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: stalled after {total} bytes"
                )));
            }
        };
        if n == 0 {
            break;
        }
        if first.len() < 512 {
            first.extend_from_slice(&buf[..n.min(512 - first.len())]);
        }
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    if first.starts_with(b"ERR ") && first.ends_with(b"\n") && total == first.len() as u64 {
        let _ = fs::remove_file(&part);
        let reason = options.encoding.decode(&first[4..]).trim_end().to_owned();
        return Err(GetError::NotFound(format!("{name}: {reason}")));
    }
    file.sync_all()?;
    fs::rename(&part, target)?;
    if !options.quiet {
        eprintln!("{name}: {total} bytes (raw protocol: the size could not be verified)");
    }
    Ok(target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_safe() {
        for good in ["a.txt", "名字.txt", "with space", ".hidden"] {
            assert!(safe_component(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "/etc", "a\\b", "a\nb", "\u{1b}[2J"] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }
}
