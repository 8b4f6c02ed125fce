//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each
//! takes arbitrary bytes, runs one parser on them, and panics when an
//! invariant of that parser does not hold. Nothing else uses them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::Config;

/// The opening bytes of a connection to a port with `mode = "optional"`:
/// the first byte decides between plaintext and TLS, and a TLS opening is
/// fed to the listener's rustls server (its config: versions, the
/// resolver of the rotating pair) as a client would send it, in pieces.
/// Nothing panics; what the server answers is bounded (a handshake flight
/// and an alert, never more than 64 KiB for any input); plaintext is never
/// taken for TLS.
pub fn tls_opening(data: &[u8]) {
    use std::sync::Arc;

    use crate::tls::service::{TlsService, starts_tls};

    static SERVICE: OnceLock<TlsService> = OnceLock::new();
    let Some(&first) = data.first() else {
        return;
    };
    if !starts_tls(first) {
        assert_ne!(first, 0x16, "a TLS record taken for plaintext");
        return;
    }
    let service = SERVICE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchboard-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, include_str!("../fuzz/tls/cert.pem")).expect("write cert");
        std::fs::write(&key, include_str!("../fuzz/tls/key.pem")).expect("write key");
        let settings = crate::tls::TlsSettings {
            cert,
            key,
            client_ca: None,
            min_version: crate::tls::MinVersion::Tls12,
            handshake_timeout: Duration::from_secs(10),
            mode: crate::tls::Mode::Optional,
            check_interval: None,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new()).listener("fuzz", "echo");
        let service = TlsService::new(&settings, &metrics, None);
        // Read once, at the making: every fuzz run left a folder behind.
        let _ = std::fs::remove_dir_all(&dir);
        service
    });
    let config = service.server_config().expect("the fuzz certificate loads");
    let mut conn = rustls::ServerConnection::new(config).expect("a server connection");
    let mut answered = Vec::new();
    // In pieces of up to 700 bytes, as a network would deliver them.
    for piece in data.chunks(700) {
        let mut piece = piece;
        while !piece.is_empty() {
            match conn.read_tls(&mut piece) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let failed = conn.process_new_packets().is_err();
            while conn.wants_write() {
                if conn.write_tls(&mut answered).is_err() {
                    break;
                }
            }
            assert!(
                answered.len() <= 64 * 1024,
                "answered {} bytes",
                answered.len()
            );
            if failed {
                return;
            }
        }
    }
}

/// `get`'s address or URL: any text gives a target or one line saying
/// what to write (never a panic); a URL's target has a port (the
/// `ADDR NAME` form passes ADDR on as written: the connect judges it).
pub fn client_url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (addr, name) = match text.split_once('\n') {
        Some((addr, name)) => (addr, Some(name)),
        None => (text, None),
    };
    match crate::client::target::get_target(addr, name) {
        Ok(target) if addr.contains("://") => {
            assert!(target.addr.contains(':'), "no port in {target:?}");
            // A name that starts with `/` is the top directory
            // (`https://host/`, for -r), or was written so (`%2F`): the
            // server's confinement judges it, as any name.
        }
        Ok(target) => assert_eq!(target.addr, addr),
        Err(message) => assert!(!message.is_empty()),
    }
}

/// The config loader: any text loads or fails with one line that names the
/// file (and never panics).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml(text, "fuzz.toml") {
        let line = e.to_string();
        assert!(!line.contains('\n'), "a config error is one line: {line:?}");
        assert!(line.starts_with("fuzz.toml"), "{line}");
    }
}

/// Message framing: the messages of a byte stream are each at most the
/// limit and hold no newline; without an error, they and their line
/// endings are the whole stream; a line said to be buffered comes with no
/// read (from a stream that has ended). The first byte sets the limit (1
/// to 256).
pub fn framing(data: &[u8]) {
    let Some((&limit, stream)) = data.split_first() else {
        return;
    };
    let limit = usize::from(limit) + 1;
    let runtime = runtime();
    let mut reader = crate::conn::MessageReader::new(crate::conn::FrameLimits {
        max_message_bytes: limit,
        message_gap: Duration::from_millis(50),
        idle_timeout: Duration::from_secs(60),
        message_timeout: Duration::from_secs(60),
    });
    let mut io = stream;
    let mut rebuilt = Vec::new();
    loop {
        let buffered = reader.line_buffered();
        let next = if buffered {
            let mut ended: &[u8] = &[];
            let next = runtime.block_on(reader.next(&mut ended, None, &mut None));
            // Or it is too long, which needs no read to know either.
            assert!(
                matches!(next, Ok(Some(_)) if reader.ended_at_newline())
                    || matches!(next, Err(crate::conn::FrameError::TooLong(_))),
                "a buffered line did not come whole without a read"
            );
            next
        } else {
            runtime.block_on(reader.next(&mut io, None, &mut None))
        };
        match next {
            Ok(Some(message)) => {
                assert!(message.len() <= limit, "message over the limit");
                assert!(!message.contains(&b'\n'), "a message holds a newline");
                rebuilt.extend_from_slice(&message);
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let without_endings: Vec<u8> = stream
        .split(|b| *b == b'\n')
        .flat_map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .copied()
        .collect();
    assert_eq!(rebuilt, without_endings, "messages lost or added bytes");
}

/// The download handler's name resolution, under a fixed root with files,
/// a directory and symlinks inside and outside: whatever the name, what it
/// resolves to is inside the root, and not hidden; and the fast path
/// (`openat2` with `RESOLVE_CACHED`, on the worker) agrees when it answers.
pub fn download_path(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let root = download_root();
    let (slow, fast) = crate::handler::resolve_for_fuzzing(root, name.trim());
    // The fast path (on the worker) decides as the blocking one, or defers.
    if let Some(fast) = fast {
        assert_eq!(fast, slow, "the fast path decided otherwise for {name:?}");
    }
    if let Ok(path) = slow {
        let inside = path.strip_prefix(root).expect("resolved outside the root");
        assert!(
            !inside
                .components()
                .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b".")),
            "resolved to a hidden name: {}",
            path.display()
        );
    }
}

/// The metrics handler's request line and the bots' reply templates: they
/// accept or refuse, never panic; a template renders.
pub fn request_line_and_template(data: &[u8]) {
    let _ = crate::http::request::request_line(data);
    if let Ok(text) = std::str::from_utf8(data) {
        crate::handler::template_for_fuzzing(text);
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// A root made once per process: `a.txt`, `.hidden`, `dir/b.txt`, a symlink
/// to `a.txt`, one to `.hidden`, and one to a file outside the root.
fn download_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // One fixed place, made again idempotently by every process that
        // needs it, so that runs do not leave a directory each behind.
        let base = std::env::temp_dir().join("switchboard-fuzz-root");
        let root = base.join("root");
        let _ = std::fs::create_dir_all(root.join("dir"));
        let _ = std::fs::write(base.join("outside"), b"secret");
        let _ = std::fs::write(root.join("a.txt"), b"a");
        let _ = std::fs::write(root.join(".hidden"), b"h");
        let _ = std::fs::write(root.join("dir/b.txt"), b"b");
        let _ = std::os::unix::fs::symlink("a.txt", root.join("to-a"));
        let _ = std::os::unix::fs::symlink(".hidden", root.join("to-hidden"));
        let _ = std::os::unix::fs::symlink(base.join("outside"), root.join("to-outside"));
        std::fs::canonicalize(&root).expect("the fuzz root exists")
    })
}

/// The PROXY protocol header framing and parsing: the first byte picks the
/// versions taken, the rest is what a balancer sent. Framing never reads
/// past its input, a frame is within the bounds, and it is prefix-stable
/// (what a prefix decided, complete or refused, the whole input decides the
/// same way), which is what reading it as it arrives relies on. Parsing a
/// frame never panics, and a header written for the address it gives
/// parses back to that address.
pub fn proxy_header(data: &[u8]) {
    use crate::conn::proxy_header::{self, Extent, Proxied, V1_MAX, V2_MAX, Versions};
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let versions = match pick % 3 {
        0 => Versions::V1,
        1 => Versions::V2,
        _ => Versions::Any,
    };
    let whole = proxy_header::extent(bytes, versions);
    for cut in 0..bytes.len().min(V2_MAX + 1) {
        match proxy_header::extent(&bytes[..cut], versions) {
            Ok(Extent::NeedMore) => {}
            prefix => assert_eq!(prefix, whole, "a prefix of {cut} bytes decided otherwise"),
        }
    }
    let Ok(Extent::Complete(end)) = whole else {
        return;
    };
    assert!(
        end <= bytes.len() && end <= V2_MAX.max(V1_MAX),
        "frame of {end} bytes"
    );
    if let Ok(Proxied::Client(client)) = proxy_header::parse(&bytes[..end]) {
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        for header in [
            proxy_header::v1_header(client, server),
            proxy_header::v2_header(client, server),
        ] {
            let back = proxy_header::parse(&header);
            let same = match (&back, client) {
                (Ok(Proxied::Client(got)), want) => {
                    *got == want
                        || got.ip().to_canonical() == want.ip().to_canonical()
                            && got.port() == want.port()
                }
                _ => false,
            };
            assert!(same, "{client} did not round-trip: {back:?}");
        }
    }
}

/// The download port's HTTP: the request head parser, its framing-field
/// checks, strict percent-decoding, `Range`, entity tags, HTTP-dates and
/// the precondition order. No input panics; a parsed head is within the
/// bound and its bytes; the head alone parses to the same request (what
/// follows it is not read into it); a head that parsed has only valid
/// framing fields (`Content-Length` digits, token lists, never both
/// framings); a decoded path holds no NUL, has no leading `/` (nor has
/// the redirect built from it) and encodes back to itself; a
/// satisfiable range lies inside the file, and a head with several
/// `Range` fields has none; a precondition failure or 304 comes only from
/// a field that asks for it; `Last-Modified` is never later than now, and
/// an `If-Range` date matches only a date a second old. The first 8 bytes
/// are the file size for the range and the file's time for the
/// validators; the input's length says where now is (after that time, at
/// it, or before it: a file dated in the future).
pub fn http_request(data: &[u8]) {
    use crate::handler::download_http_for_fuzzing::is_request_line;
    use crate::http::conditional::{self, Decision};
    use crate::http::etag::{self, Validators};
    use crate::http::range::byte_range;
    use crate::http::request::{MAX_HEAD_BYTES, parse_head};
    use crate::http::{accept, date, percent};
    if data.len() < 8 {
        return;
    }
    let (size, bytes) = data.split_at(8);
    let seed = u64::from_le_bytes(size.try_into().unwrap_or([0; 8]));
    let size = seed % (1 << 40);
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let _ = is_request_line(
        bytes[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&bytes[..line_end]),
    );
    if let Ok(Some((request, len))) = parse_head(bytes) {
        assert!(
            len <= bytes.len() && len <= MAX_HEAD_BYTES,
            "head of {len} bytes"
        );
        match parse_head(&bytes[..len]) {
            Ok(Some((again, again_len))) => {
                assert_eq!(again_len, len);
                assert_eq!(again, request, "the head alone parses otherwise");
            }
            other => panic!("the head alone did not parse: {other:?}"),
        }
        let head = &bytes[..len];
        framing_fields_are_valid(head);
        if let Ok(path) = &request.path {
            assert!(!path.contains('\0'), "a NUL in {path:?}");
            // Leading slashes are merged: a redirect built from the name
            // cannot start with `//` (another host).
            assert!(!path.starts_with('/'), "a leading slash in {path:?}");
            assert!(!percent::directory_location(path).starts_with("//"));
        }
        if let Some(range) = &request.range
            && let Some(Ok((start, len))) = byte_range(range, size)
        {
            assert!(
                len > 0 && start.checked_add(len).is_some_and(|end| end <= size),
                "{range:?} on {size} bytes gave {start}+{len}"
            );
            assert!(
                fields_named(head, "range") == 1,
                "a range from several Range fields: {range:?}"
            );
        }
        let mtime = i64::from_le_bytes(seed.to_le_bytes());
        // Now is two seconds after the file's time, the same second, a
        // second before it or long before it (a file dated in the future).
        let offset = [2, 0, -1, -(1 << 34)][bytes.len() % 4];
        let now = date::from_unix_seconds(mtime.rem_euclid(1 << 35) + offset)
            .unwrap_or(std::time::UNIX_EPOCH);
        let file = Validators::of(1, 2, size, mtime, 0, now);
        let _ = file.last_modified();
        if let Some(modified) = file.modified {
            assert!(
                modified <= now,
                "Last-Modified {modified:?} after now {now:?}"
            );
        }
        let pre = request.preconditions();
        if let Some(validator) = pre.if_range
            && !validator.trim().starts_with('"')
            && !file.modified_is_strong
        {
            assert_eq!(
                conditional::evaluate(
                    &conditional::Preconditions {
                        if_range: Some(validator),
                        ..Default::default()
                    },
                    Some(&file),
                    now
                ),
                Decision::Proceed { use_range: false },
                "If-Range {validator:?} matched a date changed less than a second ago"
            );
        }
        let listing = conditional::evaluate(&pre, None, now);
        assert!(
            listing != Decision::NotModified || pre.if_none_match.is_some(),
            "a listing's 304 without If-None-Match"
        );
        match conditional::evaluate(&pre, Some(&file), now) {
            Decision::Failed => assert!(
                pre.if_match.is_some() || pre.if_unmodified_since.is_some(),
                "412 without If-Match or If-Unmodified-Since"
            ),
            Decision::NotModified => assert!(
                pre.if_none_match.is_some() || pre.if_modified_since.is_some(),
                "304 without If-None-Match or If-Modified-Since"
            ),
            Decision::Proceed { use_range } => {
                assert!(use_range || pre.if_range.is_some(), "range dropped")
            }
        }
        let _ = accept::prefers_plain(request.accept.as_deref());
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Some(Ok((start, len))) = byte_range(text, size) {
            assert!(
                len > 0 && start + len <= size,
                "{text:?} on {size} bytes gave {start}+{len}"
            );
        }
        if let Ok(path) = percent::decode(text) {
            assert!(!path.contains('\0'), "a NUL in {path:?}");
            let escapes_ok = text.match_indices('%').all(|(at, _)| {
                text.as_bytes()
                    .get(at + 1..at + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            });
            assert!(escapes_ok, "{text:?} decoded despite a bad escape");
            assert_eq!(
                percent::decode(&percent::encode_path(&path)).as_deref(),
                Ok(path.as_str()),
                "{path:?} does not round-trip"
            );
        }
        let ours = Some("\"1-2-3-4\"");
        if etag::matches_strongly(text, ours) {
            assert!(
                etag::matches_weakly(text, ours),
                "strong but not weak: {text:?}"
            );
        }
        if let Some(time) = date::parse(text) {
            // Whatever parses formats back (httpdate's years are 1970-9999).
            assert!(date::format(time).is_some(), "{text:?} does not format");
        }
    }
    // Any time at all, past year 9999 included, formats or is no date.
    if let Some(time) = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seed)) {
        let _ = date::format(time);
    }
}

/// How many fields of the head that parsed are named `name`.
fn fields_named(head: &[u8], name: &str) -> usize {
    let mut fields = [httparse::EMPTY_HEADER; crate::http::request::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let _ = parsed.parse(head);
    parsed
        .headers
        .iter()
        .filter(|field| field.name.eq_ignore_ascii_case(name))
        .count()
}

/// Every framing field of a head that parsed is valid: `Content-Length`
/// is digits (a list of one value), `Transfer-Encoding` and `Connection`
/// are token lists, and the two framings never come together.
fn framing_fields_are_valid(head: &[u8]) {
    let mut fields = [httparse::EMPTY_HEADER; crate::http::request::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    assert!(matches!(
        parsed.parse(head),
        Ok(httparse::Status::Complete(_))
    ));
    let token_list = |value: &[u8]| {
        value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b" \t,!#$%&'*+-.^_`|~".contains(&b))
    };
    let (mut length, mut chunked) = (false, false);
    for field in parsed.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            length = true;
            assert!(
                field
                    .value
                    .iter()
                    .all(|&b| b.is_ascii_digit() || b" \t,".contains(&b)),
                "Content-Length {:?} accepted",
                String::from_utf8_lossy(field.value)
            );
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
            assert!(token_list(field.value), "Transfer-Encoding accepted");
        } else if field.name.eq_ignore_ascii_case("connection") {
            assert!(token_list(field.value), "Connection accepted");
        }
    }
    assert!(!(length && chunked), "both framings accepted");
}

/// `switchboard get -r`'s reading of a server's listing: whatever the
/// server sends, every name it accepts is one plain component, so joined
/// to the output directory it stays a direct child of it.
pub fn client_listing(data: &[u8]) {
    let base = Path::new("/out");
    for (name, _) in crate::client::listing_entries(data).flatten() {
        let joined = base.join(name);
        assert_eq!(joined.parent(), Some(base), "{name:?} leaves the directory");
        assert!(
            matches!(
                Path::new(name).components().collect::<Vec<_>>()[..],
                [std::path::Component::Normal(_)]
            ),
            "{name:?} is not one plain component"
        );
    }
}

/// `switchboard get`'s reading of a server's response (after a first byte
/// that sets how the body is split): the head parser never panics, and a
/// head it accepts lies within the bytes given, has an ordered
/// Content-Range (a length alone only on a 416) and not both framings; the chunked decoder, fed what
/// follows the head (or everything), gives the same bytes, the same end
/// and the same error however the input is split, and never more bytes
/// than it was given.
pub fn client_response(data: &[u8]) {
    use crate::http::response::{ChunkedDecoder, parse_head};
    let Some((&step, response)) = data.split_first() else {
        return;
    };
    let mut body = response;
    if let Ok(Some((head, len))) = parse_head(response) {
        assert!(
            len <= response.len(),
            "a head of {len} in {} bytes",
            response.len()
        );
        if let Some(range) = head.content_range {
            assert!(
                range.first <= range.last && range.last < range.total,
                "{range:?}"
            );
        }
        assert!(!(head.chunked && head.content_length.is_some()), "{head:?}");
        assert!(
            head.unsatisfied_total.is_none() || head.status == 416,
            "a length alone outside a 416: {head:?}"
        );
        body = &response[len..];
    }
    let decode = |step: usize| {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in body.chunks(step) {
            match decoder.feed(piece, &mut out) {
                Ok(n) => {
                    used += n;
                    if n < piece.len() {
                        break;
                    }
                }
                Err(e) => return (Err(e), out, decoder.is_done()),
            }
        }
        (Ok(used), out, decoder.is_done())
    };
    let (whole, whole_out, whole_done) = decode(body.len().max(1));
    let (split, split_out, split_done) = decode(usize::from(step).max(1));
    assert_eq!(whole, split, "the split changed the outcome");
    assert_eq!(whole_done, split_done);
    assert!(whole_out.len() <= body.len());
    if whole.is_ok() {
        assert_eq!(whole_out, split_out, "the split changed the data");
    }
}

/// Folders as tar streams, both ways. The first bytes make a tree (names
/// of plain, non-ASCII and long components, sizes, times before 1970 and
/// far after), laid out as the server does (`tar::Layout`): the pieces of
/// the whole archive are exactly its computed length, and the client's
/// reader (`tar::read`), fed in pieces of sizes the input chooses, gives
/// back every member, in order, with its name, kind, size, time and body.
/// The same bytes as a stream of their own never panic the reader nor
/// make it loop: each call takes bytes or says something.
pub fn tar_roundtrip(data: &[u8]) {
    use crate::tar::read::{Event, Kind, Reader};
    use crate::tar::{Entry, EntryKind, Layout, Piece};

    // Whatever the bytes are, as an archive of their own.
    let mut reader = Reader::new();
    let mut pos = 0;
    for step in 0.. {
        assert!(step <= 4 * data.len() + 4, "the reader does not progress");
        let chunk = &data[pos..(pos + 1 + step % 700).min(data.len())];
        match reader.next(chunk) {
            Ok((n, event)) => {
                assert!(n <= chunk.len());
                pos += n;
                // A resume point is a block boundary, past the bytes
                // read by a body's padding at most.
                let point = reader.resume_point();
                assert!(point.is_multiple_of(512), "resume point {point}");
                assert!(
                    point <= (pos as u64).div_ceil(512) * 512,
                    "{point} past {pos}"
                );
                if event == Event::End || (event == Event::More && pos == data.len()) {
                    break;
                }
                assert!(n > 0 || event != Event::More, "More without taking bytes");
            }
            Err(_) => break,
        }
    }

    // A tree from the bytes: one entry for each 6 bytes.
    const PIECES: [&str; 6] = ["a", "photos", "照片", "é..", "x y", ".hidden"];
    let mut entries = Vec::new();
    for (i, spec) in data.chunks_exact(6).take(64).enumerate() {
        let depth = 1 + usize::from(spec[0] % 4);
        let mut name = String::from("top");
        for level in 0..depth {
            name.push('/');
            let piece = PIECES[usize::from(spec[1].wrapping_add(level as u8)) % PIECES.len()];
            let repeat = if spec[2] & 0x80 != 0 {
                1 + usize::from(spec[2] % 40)
            } else {
                1
            };
            name.push_str(&piece.repeat(repeat));
        }
        name.push_str(&format!("{i}"));
        let kind = if spec[3] & 1 == 0 {
            EntryKind::File
        } else {
            EntryKind::Directory
        };
        let size = u64::from(u16::from_le_bytes([spec[3] >> 1, spec[4]])) % 3000;
        let mtime = match spec[5] % 4 {
            0 => -i64::from(spec[5]) * 1_000_003,
            1 => 0o777_7777_7777 + i64::from(spec[5]),
            _ => i64::from(spec[5]) * 86_400 * 365,
        };
        entries.push(Entry {
            name,
            kind,
            size,
            mode: 0o644,
            mtime,
            mtime_nsec: 0,
            dev: 1,
            inode: i as u64,
        });
    }
    let layout = Layout::new(entries);
    let body_byte = |member: usize, offset: u64| (member as u64 * 31 + offset * 7) as u8;
    let mut bytes = Vec::new();
    let mut header = Vec::new();
    for piece in layout.pieces(0, layout.len()) {
        match piece {
            Piece::Header { member, skip, len } => {
                header.clear();
                layout.header(member, &mut header);
                bytes.extend_from_slice(&header[skip..skip + len]);
            }
            Piece::Body {
                member,
                offset,
                len,
            } => {
                bytes.extend((offset..offset + len).map(|o| body_byte(member, o)));
            }
            Piece::Zeros(len) => bytes.resize(bytes.len() + len as usize, 0),
        }
    }
    assert_eq!(
        bytes.len() as u64,
        layout.len(),
        "the computed length is not the bytes'"
    );

    let mut reader = Reader::new();
    let mut members = layout.entries().enumerate();
    let mut current: Option<(usize, u64)> = None;
    let mut pos = 0;
    let mut step = 0usize;
    loop {
        step += 1;
        let feed = 1 + usize::from(data.get(step % data.len().max(1)).copied().unwrap_or(0)) * 13;
        let chunk = &bytes[pos..(pos + feed).min(bytes.len())];
        let (n, event) = reader.next(chunk).expect("the server's archive reads back");
        pos += n;
        match event {
            Event::More => assert!(pos < bytes.len(), "the archive ended without its end"),
            Event::Member(m) => {
                let (index, entry) = members.next().expect("a member the layout does not have");
                let mut name = entry.name.clone().into_bytes();
                let kind = match entry.kind {
                    EntryKind::File => Kind::File,
                    EntryKind::Directory => {
                        name.push(b'/');
                        Kind::Directory
                    }
                };
                assert_eq!(m.path, name);
                assert_eq!(m.kind, kind);
                assert_eq!(m.size, entry.body_len());
                assert_eq!(m.mtime, entry.mtime);
                current = Some((index, 0));
            }
            Event::Data(d) => {
                let (index, seen) = current.as_mut().expect("data outside a member");
                for (i, &b) in d.iter().enumerate() {
                    assert_eq!(
                        b,
                        body_byte(*index, *seen + i as u64),
                        "a body byte differs"
                    );
                }
                *seen += d.len() as u64;
            }
            Event::MemberEnd => {
                let (index, seen) = current.take().expect("an end outside a member");
                assert_eq!(seen, layout.entry(index).body_len());
            }
            Event::End => break,
        }
    }
    assert!(members.next().is_none(), "members missing");
    assert_eq!(pos, bytes.len(), "bytes after the end blocks");

    // Cut anywhere: the members read whole before the cut, then those a
    // reader resumed at the resume point reads, are all the members once.
    let cut = data.get(..4).map_or(0, |b| {
        u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize % (bytes.len() + 1)
    });
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut reader = Reader::new();
    let mut current = None;
    let mut pos = 0;
    while pos < cut {
        let (n, event) = reader.next(&bytes[pos..cut]).expect("reads back");
        pos += n;
        match event {
            Event::More | Event::End => break,
            Event::Member(m) => current = Some(m.path),
            Event::Data(_) => {}
            Event::MemberEnd => names.extend(current.take()),
        }
    }
    let point = reader.resume_point();
    let mut reader = Reader::resumed_at(point);
    let mut pos = usize::try_from(point).expect("within the archive");
    loop {
        let (n, event) = reader.next(&bytes[pos..]).expect("the rest reads back");
        pos += n;
        match event {
            Event::More => panic!("the rest ended without its end"),
            Event::Member(m) => names.push(m.path),
            Event::Data(_) | Event::MemberEnd => {}
            Event::End => break,
        }
    }
    let expected: Vec<Vec<u8>> = layout
        .entries()
        .map(|e| {
            let mut name = e.name.clone().into_bytes();
            if e.kind == EntryKind::Directory {
                name.push(b'/');
            }
            name
        })
        .collect();
    assert_eq!(names, expected, "cut at {cut}, resumed at {point}");
}

/// The Redis history script's answer, as the batch task reads it: the
/// first byte is the number of picks expected, the rest the answer. Never
/// a panic; picks read are the answer's bytes in order, each after its
/// length, and nothing is left over.
pub fn redis_picks(data: &[u8]) {
    let Some((&count, answer)) = data.split_first() else {
        return;
    };
    let answer = bytes::Bytes::copy_from_slice(answer);
    if let Ok(picks) = crate::history::split_picks(answer.clone(), usize::from(count)) {
        assert_eq!(picks.len(), usize::from(count));
        let mut at = 0;
        for pick in &picks {
            let len = u32::from_le_bytes(answer[at..at + 4].try_into().expect("4 bytes"));
            assert_eq!(usize::try_from(len).expect("a length"), pick.len());
            assert_eq!(&answer[at + 4..at + 4 + pick.len()], &pick[..]);
            at += 4 + pick.len();
        }
        assert_eq!(at, answer.len(), "bytes left after the picks");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The targets' invariants hold on their committed seed corpora
    /// (`fuzz/corpus/TARGET/`), and on every invalid config fixture.
    #[test]
    fn the_seed_corpora_pass() {
        let seeds = |target: &str| -> Vec<Vec<u8>> {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(target);
            let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| std::fs::read(entry.expect("entry").path()).expect("read seed"))
                .collect();
            assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
            inputs
        };
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 12] = [
            ("client_url", client_url),
            ("tls_opening", tls_opening),
            ("config", config),
            ("client_listing", client_listing),
            ("client_response", client_response),
            ("http_request", http_request),
            ("proxy_header", proxy_header),
            ("framing", framing),
            ("download_path", download_path),
            ("request_line_and_template", request_line_and_template),
            ("tar_roundtrip", tar_roundtrip),
            ("redis_picks", redis_picks),
        ];
        for (target, run) in targets {
            for input in seeds(target) {
                run(&input);
            }
        }
        for fixture in std::fs::read_dir("tests/fixtures/invalid").expect("fixtures") {
            config(&std::fs::read(fixture.expect("entry").path()).expect("read"));
        }
    }
}
