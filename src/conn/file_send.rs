//! Sending a file to a TCP socket: sendfile(2) from the page cache on the
//! async worker, and the reads that would wait for the disk moved off it.
//!
//! sendfile on a non-blocking socket never waits for the client, but it does
//! wait for the disk when the pages it sends are not in the page cache: on a
//! cold, slow disk that stalls every other connection of the worker. So
//! before each call the range is probed with `preadv2(RWF_NOWAIT)`, which
//! answers at once whether its bytes (one every 256 KiB, and the last) are
//! cached; a range that is not is read on the blocking pool first, 512 KiB
//! ahead (at most [`MAX_WARMING`] reads at a time in the process), and only
//! then sent from the cache. A file system that cannot answer (tmpfs) is
//! in memory, and sent directly; any other that cannot is read ahead the
//! same way, to be safe.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use super::{ConnError, MinRate};

/// Most file reads on the blocking pool at once, process-wide. A disk that
/// hangs (a dead network mount) can hold this many threads, not more: the
/// sends that find no slot fail at their deadline instead.
pub(super) const MAX_WARMING: usize = 64;

/// Bytes read ahead in one trip to the blocking pool, so that a cold file
/// makes one trip per this much rather than one per chunk.
const WARM_BYTES: usize = 512 * 1024;

/// Bytes of the scratch buffer a warming read goes through.
const WARM_BUFFER: usize = 64 * 1024;

static WARMING: Semaphore = Semaphore::const_new(MAX_WARMING);

/// When a file send's next write must have gone out: within the stall
/// limit, and before the average since the start falls under the minimum
/// rate, if there is one.
pub(super) struct SendDeadlines {
    pub stall: Duration,
    pub pace: Option<MinRate>,
    pub started: Instant,
}

impl SendDeadlines {
    /// The deadline of the next write, `sent` bytes into the file, and the
    /// error if it passes.
    pub fn next_write(&self, sent: u64) -> (Instant, ConnError) {
        let stalled_at = Instant::now() + self.stall;
        match self
            .pace
            .map(|pace| (pace.deadline(self.started, sent), pace))
        {
            Some((by, pace)) if by < stalled_at => {
                (by, ConnError::ReaderTooSlow(pace.bytes_per_second))
            }
            _ => (stalled_at, ConnError::WriteStalled(self.stall)),
        }
    }
}

/// What a file send did besides sending.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct SendReport {
    /// Ranges that were not in the page cache and were read on the
    /// blocking pool before they were sent.
    pub cache_misses: u64,
}

/// What a sendfile call asks for at least. The call takes what the socket
/// has room for and returns at once, so asking for more costs no waiting:
/// in 64 KiB calls a 1 MiB GET took 17 sendfile calls where nginx makes
/// one (`strace -c` under wrk).
pub(super) const SENDFILE_STEP: usize = 1024 * 1024;

/// How soon after a full socket the client must have freed room (a third
/// of the buffer: when the kernel wakes a writer) to count as keeping up:
/// at the default 256 KiB `send_buffer`, a client reading 1.7 MB/s or
/// more. Its send buffer is then grown (`send_budget`). Not shorter: under
/// wrk's 64 connections each one is served every 50 ms or so, however
/// fast the whole, and a stalled reader never frees room at all.
const KEPT_UP_WAIT: Duration = Duration::from_millis(100);

/// Sends `file` from `offset` up to `end` with sendfile(2), at most `chunk`
/// a call, advancing `offset`; stops early if the file shrinks. Calls
/// `kept_up` when the socket was full and the client freed room within
/// [`KEPT_UP_WAIT`], before the next call.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sendfile(
    tcp: &TcpStream,
    file: &Arc<File>,
    end: u64,
    chunk: usize,
    deadlines: &SendDeadlines,
    offset: &mut u64,
    report: &mut SendReport,
    kept_up: &mut impl FnMut(),
) -> Result<(), ConnError> {
    let start = *offset;
    // Bytes before this were just probed as cached, or read through the
    // page cache: not probed again.
    let mut cached_until = start;
    let mut memory_backed = None;
    while *offset < end {
        let (until, late) = deadlines.next_write(*offset - start);
        let left = end - *offset;
        let want = usize::try_from(left).map_or(chunk, |left| left.min(chunk));
        let past_known = *offset + want as u64 > cached_until;
        // One probe of a range of PROBE_AHEAD rather than of each call's:
        // its stride, not the calls, decides how many system calls it takes.
        let ahead = usize::try_from(left).map_or(PROBE_AHEAD, |left| left.min(PROBE_AHEAD));
        let ahead = want.max(ahead);
        let cold = past_known
            && match residency(file, *offset, ahead) {
                Residency::Cached => {
                    cached_until = *offset + ahead as u64;
                    false
                }
                Residency::NotCached => true,
                // A file system that cannot say: in memory anyway (tmpfs),
                // or read on the blocking pool to be safe.
                Residency::Unknown => {
                    let in_memory = *memory_backed.get_or_insert_with(|| is_memory_backed(file));
                    if in_memory {
                        cached_until = end;
                    }
                    !in_memory
                }
            };
        if cold {
            report.cache_misses += 1;
            let ahead = usize::try_from(left).map_or(WARM_BYTES, |left| left.min(WARM_BYTES));
            let ahead = want.max(ahead);
            timeout_at(until, warm(file, *offset, ahead))
                .await
                .map_err(|_| ConnError::DiskStalled)??;
            cached_until = *offset + ahead as u64;
        }
        let mut waited_long = false;
        let send = async {
            let mut full_since: Option<Instant> = None;
            loop {
                tcp.writable().await?;
                if let Some(full) = full_since.take() {
                    let waited = full.elapsed();
                    if waited <= KEPT_UP_WAIT {
                        kept_up();
                    }
                    waited_long |= waited >= REPROBE_AFTER;
                }
                let sent = tcp.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(tcp, file, Some(&mut *offset), want)
                        .map_err(io::Error::from)
                });
                match sent {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        full_since = Some(Instant::now());
                    }
                    other => return other,
                }
            }
        };
        let sent = timeout_at(until, send).await.map_err(|_| late)??;
        // While the client was slow, the pages probed ahead may have been
        // evicted: probed again before the next call.
        if waited_long {
            cached_until = cached_until.min(*offset);
        }
        if sent == 0 {
            break;
        }
    }
    Ok(())
}

/// The page size the probes reason in (the smallest the kernel caches).
const PAGE: u64 = 4096;

/// Distance between the bytes probed in a range: 4 a MiB. At 128 KiB
/// (and every range probed again after each wait for the socket) the
/// probes were a tenth of the server's CPU in a download of a cached file
/// with a grown send buffer (`perf record`, bench/ab-download.sh).
const PROBE_STRIDE: u64 = 256 * 1024;

/// Bytes probed at once ahead of a send: 9 probes for 2 MiB, where probing
/// each 64 KiB call took 32 a MiB (over half the server's system calls in
/// 1 MiB GETs).
const PROBE_AHEAD: usize = 2 * 1024 * 1024;

/// A wait for the socket at least this long has the range ahead probed
/// again: the pages may have been evicted meanwhile. Not after every wait:
/// a client that keeps up makes the sender wait at every round, for
/// milliseconds, in which pages just read are not evicted.
const REPROBE_AFTER: Duration = Duration::from_secs(1);

/// Whether a range of a file is in the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Residency {
    /// Every byte probed is (past the end counts: sendfile then finds the end).
    Cached,
    /// One is not: reading it would wait for the disk.
    NotCached,
    /// The file system cannot answer without waiting (tmpfs, /proc).
    Unknown,
}

/// Whether the `len` bytes of `file` at `offset` are in the page cache,
/// asked without waiting for the disk: `preadv2(RWF_NOWAIT)` of one byte at
/// the start, every [`PROBE_STRIDE`] bytes, and at the end.
pub(super) fn residency(file: &File, offset: u64, len: usize) -> Residency {
    let last = offset.saturating_add(len.saturating_sub(1) as u64);
    let mut at = offset;
    loop {
        let mut byte = [0u8; 1];
        match rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(&mut byte)],
            at,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::AGAIN) => return Residency::NotCached,
            Err(_) => return Residency::Unknown,
        }
        // The last byte's page was just probed (a small range): done.
        if at >= last || last / PAGE == at / PAGE {
            return Residency::Cached;
        }
        at = at.saturating_add(PROBE_STRIDE).min(last);
    }
}

/// Bodies up to this size go out in one write with what precedes them (an
/// HTTP response head): the page-cache read of a few pages costs less than
/// a sendfile call, and one segment wakes the client once, not twice.
pub(super) const SMALL_BODY: usize = 16 * 1024;

/// Appends the `len` bytes of `file` at `offset` to `buf` if the page cache
/// holds them all, read without waiting for the disk (`preadv2(RWF_NOWAIT)`);
/// false, with `buf` as it was, when it does not, the file system cannot
/// say, or the file is shorter now.
pub(super) fn read_cached(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> bool {
    let before = buf.len();
    buf.resize(before + len, 0);
    let read = rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(&mut buf[before..])],
        offset,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    if read.is_ok_and(|n| n == len) {
        return true;
    }
    buf.truncate(before);
    false
}

/// True for a file in memory (tmpfs, ramfs): no disk to wait for.
fn is_memory_backed(file: &File) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    rustix::fs::fstatfs(file).is_ok_and(|fs| {
        let kind = fs.f_type as u64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

/// Reads `len` bytes of `file` from `offset` on the blocking pool, so that
/// they are in the page cache when sendfile wants them.
async fn warm(file: &Arc<File>, offset: u64, len: usize) -> Result<(), ConnError> {
    // The semaphore is never closed, so acquire cannot fail.
    let Ok(permit) = WARMING.acquire().await else {
        return Err(ConnError::DiskStalled);
    };
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        read_through(&file, offset, len)
    })
    .await
    .map_err(|e| ConnError::Io(io::Error::other(e)))?
    .map_err(ConnError::Io)
}

/// Reads `len` bytes of `file` from `offset` into a scratch buffer and drops
/// them: the point is the page cache, not the bytes.
fn read_through(file: &File, offset: u64, len: usize) -> io::Result<()> {
    let mut buf = vec![0u8; len.clamp(1, WARM_BUFFER)];
    let end = offset.saturating_add(len as u64);
    let mut at = offset;
    while at < end {
        let want = usize::try_from(end - at).map_or(buf.len(), |left| left.min(buf.len()));
        match file.read_at(&mut buf[..want], at)? {
            0 => break,
            n => at += n as u64,
        }
    }
    Ok(())
}

/// A file of `len` bytes on a disk-backed file system (the crate's
/// directory: /tmp may be tmpfs, whose pages cannot be evicted), written
/// through and evicted from the page cache.
#[cfg(test)]
pub(super) fn cold_file(len: usize) -> (tempfile::TempDir, File) {
    use std::io::Write;
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("temp dir");
    let path = dir.path().join("cold.bin");
    let mut f = File::create(&path).expect("create");
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    f.write_all(&bytes).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    let f = File::open(&path).expect("open");
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
    (dir, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evicted_range_reads_as_not_cached_and_a_read_warms_it() {
        let (_dir, f) = cold_file(1 << 20);
        assert_eq!(
            residency(&f, 0, 65536),
            Residency::NotCached,
            "an evicted file must probe as not cached (is the crate on tmpfs?)"
        );
        read_through(&f, 0, 65536).expect("read");
        assert_eq!(residency(&f, 0, 65536), Residency::Cached);
        // A range whose last byte was not read is still cold.
        assert_eq!(residency(&f, 0, 512 * 1024), Residency::NotCached);
        // So is one whose middle was evicted (a whole megabyte: the page
        // cache may hold a file in folios bigger than a page).
        let (_dir, f) = cold_file(4 << 20);
        read_through(&f, 0, 4 << 20).expect("read");
        assert_eq!(residency(&f, 0, 4 << 20), Residency::Cached);
        let hole = std::num::NonZeroU64::new(1 << 20);
        rustix::fs::fadvise(&f, 1 << 20, hole, rustix::fs::Advice::DontNeed).expect("fadvise");
        assert_eq!(residency(&f, 0, 4 << 20), Residency::NotCached);
    }

    #[test]
    fn a_small_body_is_read_only_from_the_page_cache() {
        let (_dir, f) = cold_file(8192);
        // A NOWAIT read of evicted pages starts readahead, and on fast
        // storage it may finish in time (a CI run saw it): so the contract
        // checked here is "all or nothing", not "never from disk".
        let mut buf = b"head".to_vec();
        if read_cached(&f, 0, 8192, &mut buf) {
            assert_eq!(buf.len(), 4 + 8192);
            assert_eq!(buf[4..8], [0, 1, 2, 3]);
        } else {
            assert_eq!(buf, b"head", "not read: nothing appended");
        }
        buf.truncate(4);
        read_through(&f, 0, 8192).expect("read");
        assert!(read_cached(&f, 100, 8000, &mut buf));
        assert_eq!(buf.len(), 4 + 8000);
        // cold_file writes byte i as i % 251.
        assert_eq!(buf[4..8], [100, 101, 102, 103]);
        // A file shorter than asked (it shrank): not read.
        let mut buf = Vec::new();
        assert!(!read_cached(&f, 4096, 8192, &mut buf));
        assert!(buf.is_empty());
    }

    #[test]
    fn past_the_end_counts_as_cached() {
        let (_dir, f) = cold_file(4096);
        read_through(&f, 0, 4096).expect("read");
        assert_eq!(residency(&f, 0, 1 << 20), Residency::Cached);
        assert_eq!(residency(&f, 1 << 30, 1), Residency::Cached);
    }

    #[test]
    fn a_file_in_memory_is_known_as_such() {
        let shm = std::path::Path::new("/dev/shm");
        let Ok(dir) = tempfile::tempdir_in(shm) else {
            eprintln!("skipped: no /dev/shm here");
            return;
        };
        let path = dir.path().join("f");
        std::fs::write(&path, b"in memory").expect("write");
        let f = File::open(&path).expect("open");
        assert!(is_memory_backed(&f), "/dev/shm is tmpfs");
        let (_dir, disk) = cold_file(4096);
        assert!(!is_memory_backed(&disk));
    }
}
