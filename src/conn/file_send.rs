//! Sending a file to a TCP socket: sendfile(2) from the page cache on the
//! async worker, and the reads that would wait for the disk moved off it.
//!
//! sendfile on a non-blocking socket never waits for the client, but it does
//! wait for the disk when the pages it sends are not in the page cache: on a
//! cold, slow disk that stalls every other connection of the worker. So
//! before each call the range is probed with `preadv2(RWF_NOWAIT)`, which
//! answers at once whether its first and last bytes are cached; a range that
//! is not is read on the blocking pool first (at most [`MAX_WARMING`] reads
//! at a time in the process), and only then sent from the cache.

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

/// Sends `file` from `offset` up to `end` with sendfile(2), at most `chunk`
/// a call, advancing `offset`; stops early if the file shrinks.
pub(super) async fn sendfile(
    tcp: &TcpStream,
    file: &Arc<File>,
    end: u64,
    chunk: usize,
    deadlines: &SendDeadlines,
    offset: &mut u64,
    report: &mut SendReport,
) -> Result<(), ConnError> {
    let start = *offset;
    while *offset < end {
        let (until, late) = deadlines.next_write(*offset - start);
        let left = end - *offset;
        let want = usize::try_from(left).map_or(chunk, |left| left.min(chunk));
        if !is_cached(file, *offset, want) {
            report.cache_misses += 1;
            let ahead = usize::try_from(left).map_or(WARM_BYTES, |left| left.min(WARM_BYTES));
            timeout_at(until, warm(file, *offset, want.max(ahead)))
                .await
                .map_err(|_| ConnError::DiskStalled)??;
        }
        let send = async {
            loop {
                tcp.writable().await?;
                let sent = tcp.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(tcp, file, Some(&mut *offset), want)
                        .map_err(io::Error::from)
                });
                match sent {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
            }
        };
        let sent = timeout_at(until, send).await.map_err(|_| late)??;
        if sent == 0 {
            break;
        }
    }
    Ok(())
}

/// Whether the bytes at `offset` and `offset + len - 1` of `file` are in the
/// page cache, asked without waiting for the disk. Past the end counts as
/// cached (sendfile then finds the end); a file system that cannot answer
/// counts as not cached, so the read goes to the blocking pool.
pub(super) fn is_cached(file: &File, offset: u64, len: usize) -> bool {
    let last = offset.saturating_add(len.saturating_sub(1) as u64);
    [offset, last].into_iter().all(|at| {
        let mut byte = [0u8; 1];
        rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(&mut byte)],
            at,
            rustix::io::ReadWriteFlags::NOWAIT,
        )
        .is_ok()
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
        assert!(
            !is_cached(&f, 0, 65536),
            "an evicted file must probe as not cached (is the crate on tmpfs?)"
        );
        read_through(&f, 0, 65536).expect("read");
        assert!(is_cached(&f, 0, 65536));
        // A range whose last byte was not read is still cold.
        assert!(!is_cached(&f, 0, 512 * 1024));
    }

    #[test]
    fn past_the_end_counts_as_cached() {
        let (_dir, f) = cold_file(4096);
        read_through(&f, 0, 4096).expect("read");
        assert!(is_cached(&f, 0, 1 << 20));
        assert!(is_cached(&f, 1 << 30, 1));
    }
}
