//! Fetching one file: over HTTP into `FILE.part`, renamed to `FILE` only
//! when it is complete and its length is the one announced; `-c` resumes
//! with `Range` and `If-Range` and takes a 206 only when its validator,
//! start and total are those of the `.part`. A server whose first answer
//! is not HTTP gets the raw protocol (with a warning that the size cannot
//! be verified) unless it answered HTTP earlier in the run or the `.part`
//! being resumed came over HTTP. A reset or a short body is never a
//! complete file: the `.part` stays.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout_at;

use super::exchange::{Accept, Framing, NotHttp, error_words, names_a_directory, try_request};
use super::part::{Stored, in_the_way, open_part, part_paths};
use super::{GetError, Run, at, connect_by, is_a_directory, net, progress, server_words};
use crate::client::escape_text;
use crate::client::stream::{Stream, is_truncation};
use crate::conn::text::TextEncoding;
use crate::http::response::ChunkedDecoder;

/// Fetches one file into `target` (through `target.part`).
pub(super) async fn fetch_file(
    run: &mut Run<'_>,
    name: &str,
    target: &Path,
) -> Result<PathBuf, GetError> {
    let resume = run.options.resume;
    fetch_http(run, name, target, resume).await
}

/// Fetches one file over HTTP (resuming its `.part` when `resume`), or
/// over the raw protocol when the server answers something else and
/// nothing says it speaks HTTP.
async fn fetch_http(
    run: &mut Run<'_>,
    name: &str,
    target: &Path,
    resume: bool,
) -> Result<PathBuf, GetError> {
    let options = run.options;
    if options.raw {
        return fetch_raw(run, name, target).await;
    }
    let (part, stored_path) = part_paths(target);
    if let Some(why) = in_the_way(&[&part, &stored_path]) {
        return Err(GetError::Failed(format!(
            "{name}: {why}; refused (remove it)"
        )));
    }
    let have = if resume {
        fs::symlink_metadata(&part)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len())
    } else {
        0
    };
    let stored = Stored::read(&stored_path).map_err(|e| at(&stored_path, e))?;
    let resume = match (&stored, have) {
        (_, 0) => None,
        (Some(stored), have) => Some((have, stored)),
        (None, _) => {
            run.warn(&format!(
                "{}: no validator kept for the .part; starting over",
                part.display()
            ));
            None
        }
    };
    let validator = resume.map(|(h, s)| (h, s.validator.as_str()));
    let (mut stream, head, rest) = match try_request(run, name, validator, Accept::Any).await {
        Ok(done) => done,
        Err(NotHttp::Raw) if run.spoke_http.get() => {
            return Err(GetError::Failed(format!(
                "{name}: {} answered something that is not HTTP, after answering HTTP in \
                     this run; refused",
                options.addr
            )));
        }
        Err(NotHttp::Raw) if options.resume && stored.is_some() => {
            return Err(GetError::Failed(format!(
                "{name}: {} answered something that is not HTTP, but {} came over HTTP (its \
                     validator is in {}); refused, both are kept as they were",
                options.addr,
                part.display(),
                stored_path.display()
            )));
        }
        Err(NotHttp::Raw) => {
            run.warn(&format!(
                "{} does not speak HTTP; using the raw protocol (the size cannot be verified)",
                options.addr
            ));
            // The .part about to be written is not the version a kept
            // validator names.
            let _ = fs::remove_file(&stored_path);
            return fetch_raw(run, name, target).await;
        }
        Err(NotHttp::Error(e)) => return Err(e),
    };
    if names_a_directory(name, &head) {
        drop(stream);
        return Err(if options.recursive {
            GetError::Failed(format!(
                "{name} is a directory on the server, but its listing names it as a file"
            ))
        } else {
            is_a_directory(&options.name)
        });
    }
    let refuse = |why: String| {
        GetError::Failed(format!(
            "{name}: refused the server's answer to the resume: {why}; {} is kept as it was \
             (remove it to start over)",
            part.display()
        ))
    };
    let (start, total) = match head.status {
        200 => {
            if resume.is_some() {
                run.warn(&format!(
                    "{name} changed on the server (or cannot resume); starting over"
                ));
            }
            (0, head.content_length)
        }
        206 => {
            let (Some((have, stored)), Some(range)) = (resume, head.content_range) else {
                return Err(refuse("a 206 to a request without a range".into()));
            };
            if !stored.is_version_of(&head) {
                return Err(refuse(format!(
                    "another version of the file (validator {} instead of {})",
                    server_words(
                        head.etag
                            .as_deref()
                            .or(head.last_modified.as_deref())
                            .unwrap_or("none")
                            .as_bytes(),
                        TextEncoding::Utf8
                    ),
                    stored.validator
                )));
            }
            if range.first != have {
                return Err(refuse(format!(
                    "a range from byte {} where the .part has {have}",
                    range.first
                )));
            }
            if range.total != stored.total || range.last + 1 != range.total {
                return Err(refuse(format!(
                    "a range {}-{}/{} of a file of {} bytes",
                    range.first, range.last, range.total, stored.total
                )));
            }
            if head.content_length.is_some_and(|l| l != range.len()) {
                return Err(refuse(format!(
                    "a Content-Length of {} for {} bytes of range",
                    head.content_length.unwrap_or_default(),
                    range.len()
                )));
            }
            (have, Some(range.total))
        }
        416 if let Some((have, stored)) = resume => {
            drop(stream);
            // The range starts at the end: the .part may be the whole file
            // already, if the server says it is this version, this long.
            if head.unsatisfied_total == Some(have)
                && stored.total == have
                && stored.is_version_of(&head)
            {
                fs::rename(&part, target).map_err(|e| at(&part, e))?;
                let _ = fs::remove_file(&stored_path);
                if !options.quiet {
                    eprintln!(
                        "{}: {have} bytes, the .part was already the whole file",
                        escape_text(name)
                    );
                }
                return Ok(target.to_owned());
            }
            let size = head
                .unsatisfied_total
                .map_or(String::new(), |t| format!(" (the file has {t} bytes)"));
            run.warn(&format!(
                "{name}: the server cannot resume at byte {have}{size}; starting over"
            ));
            return Box::pin(fetch_http(run, name, target, false)).await;
        }
        404 | 403 => {
            let words = error_words(run, &mut stream, &head, &rest).await;
            return Err(GetError::NotFound(format!("{name}: {words}")));
        }
        other => {
            let to = match (&head.location, other) {
                (Some(location), 300..=399) => format!(
                    " (to {}; get does not follow redirects)",
                    server_words(location.as_bytes(), TextEncoding::Utf8)
                ),
                _ => String::new(),
            };
            return Err(GetError::Failed(format!(
                "{name}: HTTP {other} {}{to}",
                server_words(head.reason.as_bytes(), TextEncoding::Utf8)
            )));
        }
    };
    if total.is_none() && !head.chunked {
        return Err(GetError::Failed(format!("{name}: no Content-Length")));
    }
    match total.and_then(|total| Stored::of(&head, total)) {
        Some(version) if start == 0 => version
            .write(&stored_path)
            .map_err(|e| at(&stored_path, e))?,
        Some(_) => {}
        None => {
            let _ = fs::remove_file(&stored_path);
        }
    }
    if start == 0 && !options.resume {
        warn_part_left(run, &part, "starting over (use -c to resume it)");
    }
    let mut file = open_part(&part, start).map_err(|e| at(&part, e))?;
    let framing = if head.chunked {
        Framing::Chunked(ChunkedDecoder::new())
    } else {
        Framing::Length(total.unwrap_or_default() - start)
    };
    let started = std::time::Instant::now();
    let got = copy_body(
        run,
        name,
        stream,
        rest,
        (&mut file, &part),
        start,
        total,
        framing,
    )
    .await;
    file.sync_all().map_err(|e| at(&part, e))?;
    let have = got.map_err(|e| {
        let kept = fs::metadata(&part).map_or(0, |m| m.len());
        let resumable = if fs::metadata(&stored_path).is_ok() {
            "the rest can be resumed with -c"
        } else {
            "no validator: -c will start over"
        };
        e.context(name).with_suffix(&format!(
            "; {kept} bytes kept in {} ({resumable})",
            part.display()
        ))
    })?;
    if let Some(total) = total
        && have != total
    {
        return Err(GetError::Incomplete(format!(
            "{name}: {have} of {total} bytes; the rest can be resumed with -c ({})",
            part.display()
        )));
    }
    fs::rename(&part, target).map_err(|e| at(&part, e))?;
    let _ = fs::remove_file(&stored_path);
    if !options.quiet {
        // Only now: a summary is said of a whole file, never before an error.
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        eprintln!(
            "{}: {} bytes in {:.2} s ({:.1} MB/s){}",
            escape_text(name),
            have,
            secs,
            (have - start) as f64 / secs / 1e6,
            if start > 0 {
                format!(", resumed at {start}")
            } else {
                String::new()
            }
        );
    }
    Ok(target.to_owned())
}

/// Warns that `part`, left by an earlier run, is about to be written
/// over, and what happens (printed even with `-q`: bytes are lost).
fn warn_part_left(run: &mut Run<'_>, part: &Path, what: &str) {
    if fs::symlink_metadata(part).is_ok_and(|m| m.is_file()) {
        run.warn(&format!(
            "{} is left from an earlier download; {what}",
            part.display()
        ));
    }
}

/// Copies the body into `file` (the `.part` at `path`) until `framing`
/// says it is complete, with a progress bar on a terminal; returns the
/// length now. A close, a reset, a stall or the deadline before the end is
/// an error, and so is a decoded body longer than `total`.
#[allow(clippy::too_many_arguments)]
async fn copy_body(
    run: &Run<'_>,
    name: &str,
    mut stream: Stream,
    first: Vec<u8>,
    (file, path): (&mut fs::File, &Path),
    start: u64,
    total: Option<u64>,
    mut framing: Framing,
) -> Result<u64, GetError> {
    let options = run.options;
    let bar = (!options.quiet && io::stderr().is_terminal()).then(|| {
        progress::bar(
            &escape_text(name),
            start,
            total,
            indicatif::ProgressDrawTarget::stderr(),
        )
    });
    let mut have = start;
    let mut pending = first;
    let mut data = Vec::with_capacity(256 * 1024);
    let mut buf = vec![0u8; 256 * 1024];
    let outcome = loop {
        data.clear();
        let done = match framing.take(&pending, &mut data) {
            Ok(done) => done,
            Err(e) => break Err(e),
        };
        have += data.len() as u64;
        if total.is_some_and(|total| have > total) {
            break Err(GetError::Failed(format!(
                "a body longer than the {} bytes announced",
                total.unwrap_or_default()
            )));
        }
        if let Err(e) = file.write_all(&data) {
            break Err(GetError::Failed(format!("writing {}: {e}", path.display())));
        }
        if let Some(bar) = &bar {
            bar.set_position(have);
        }
        if done {
            break Ok(have);
        }
        match timeout_at(run.wait_until(), stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                break Err(GetError::Incomplete(format!(
                    "the server closed the connection after {have} bytes"
                )));
            }
            Ok(Ok(n)) => pending = buf[..n].to_vec(),
            Ok(Err(e)) => {
                break Err(GetError::Incomplete(format!(
                    "the connection broke off after {have} bytes ({e})"
                )));
            }
            Err(_) => {
                break Err(GetError::Incomplete(format!(
                    "{} after {have} bytes",
                    run.why_late()
                )));
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    outcome
}

/// The raw protocol: the name, a newline, and the file until the server
/// closes. The size cannot be verified, but a reset (how a server cuts a
/// transfer short) is an error, never an end, and so is, over TLS, a close
/// without `close_notify`; an `ERR ...` line alone is a refusal.
async fn fetch_raw(run: &mut Run<'_>, name: &str, target: &Path) -> Result<PathBuf, GetError> {
    let options = run.options;
    let (part, _) = part_paths(target);
    let mut stream = connect_by(run, run.wait_until()).await?;
    let mut request = options.encoding.encode(name).into_owned();
    request.push(b'\n');
    match timeout_at(run.wait_until(), stream.write_all(&request)).await {
        Ok(written) => written.map_err(|e| net(run, &format!("{name}: sending the name"), e))?,
        Err(_) => {
            return Err(GetError::Failed(format!(
                "{name}: the server ({}) does not read",
                options.addr
            )));
        }
    }
    warn_part_left(run, &part, "starting over (the raw protocol cannot resume)");
    let mut file = open_part(&part, 0).map_err(|e| at(&part, e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = Vec::new();
    let mut total = 0u64;
    loop {
        let n = match timeout_at(run.wait_until(), stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            // Over TLS, the raw protocol's end is the server's close_notify:
            // a close without it may have cut the file, which has no length.
            Ok(Err(e)) if is_truncation(&e) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: the server closed the connection without TLS close_notify after \
                     {total} bytes: the file may be truncated (the raw protocol has no length); \
                     {} is kept",
                    part.display()
                )));
            }
            Ok(Err(e)) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: {e} after {total} bytes; {} is kept",
                    part.display()
                )));
            }
            Err(_) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: {} after {total} bytes; {} is kept",
                    run.why_late(),
                    part.display()
                )));
            }
        };
        if n == 0 {
            break;
        }
        if first.len() < 512 {
            first.extend_from_slice(&buf[..n.min(512 - first.len())]);
        }
        file.write_all(&buf[..n]).map_err(|e| at(&part, e))?;
        total += n as u64;
    }
    if first.starts_with(b"ERR ") && first.ends_with(b"\n") && total == first.len() as u64 {
        let _ = fs::remove_file(&part);
        let reason = first[4..].strip_suffix(b"\n").unwrap_or(&first[4..]);
        let reason = reason.strip_suffix(b"\r").unwrap_or(reason);
        return Err(GetError::NotFound(format!(
            "{name}: {}",
            server_words(reason, options.encoding)
        )));
    }
    file.sync_all().map_err(|e| at(&part, e))?;
    fs::rename(&part, target).map_err(|e| at(&part, e))?;
    if !options.quiet {
        eprintln!(
            "{}: {total} bytes (raw protocol: the size could not be verified)",
            escape_text(name)
        );
    }
    Ok(target.to_owned())
}
