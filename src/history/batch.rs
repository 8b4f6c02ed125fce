//! Messages of many connections to one SQLite or Redis history, in
//! batches: a connection queues its message with how it records it, and
//! waits (within its timeout) for its pick; the backend takes whatever has
//! queued up as one batch, one commit or one round trip for all. The queue
//! is bounded, and a message whose connection stopped waiting before the
//! backend took it is dropped unrecorded.
//!
//! Each message knows whether the backend has taken it ([`claim`]): a
//! connection whose deadline passes before then knows its message is not
//! stored, and one whose deadline passes after cannot know (the commit or
//! the script may still complete), which its error says.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Failure, Limits, Recording};

/// A message waiting in the queue or in a batch not yet begun.
const QUEUED: u8 = 0;
/// Its connection stopped waiting before the backend took it: never stored.
const ABANDONED: u8 = 1;
/// The backend took it into a commit or a script call.
const TAKEN: u8 = 2;

/// Messages waiting for a backend, at most, per history; a connection that
/// finds the queue full waits (within its timeout) for room.
pub(super) const QUEUE: usize = 1024;

/// Times [`next`] lets the other tasks run before it closes a batch, at
/// most (it stops as soon as a round brings nothing).
const GATHER_ROUNDS: usize = 4;

/// One message, how it is recorded, and where its pick (or why not) goes.
pub(super) struct Job {
    pub message: Bytes,
    pub how: Recording,
    reply: oneshot::Sender<Result<Bytes, Failure>>,
    /// [`QUEUED`], [`ABANDONED`] or [`TAKEN`], shared with the connection.
    state: Arc<AtomicU8>,
}

impl Job {
    /// Whether its connection has stopped waiting for it.
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.state.load(Ordering::Acquire) == ABANDONED
    }
}

/// Where a history's connections queue their messages.
pub(super) type Queue = mpsc::Sender<Job>;

/// A new queue, and the end its backend reads.
pub(super) fn queue() -> (Queue, mpsc::Receiver<Job>) {
    mpsc::channel(QUEUE)
}

/// Queues `message` and waits for its pick, all within the timeout of
/// `how`; `Err` says why not (`backend` names who did not answer), and
/// whether the message may be stored all the same.
pub(super) async fn submit(
    queue: &Queue,
    message: Bytes,
    how: Recording,
    backend: &str,
) -> Result<Bytes, Failure> {
    let timeout = how.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let (reply, mut picked) = oneshot::channel();
    let state = Arc::new(AtomicU8::new(QUEUED));
    let job = Job {
        message,
        how,
        reply,
        state: state.clone(),
    };
    match tokio::time::timeout_at(deadline, queue.send(job)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(Failure::NotStored(format!("{backend} has stopped"))),
        Err(_) => {
            return Err(Failure::NotStored(format!(
                "the queue stayed full for {timeout:?}"
            )));
        }
    }
    let answer = tokio::time::timeout_at(deadline, &mut picked).await;
    if let Ok(Ok(result)) = answer {
        return result;
    }
    // An answer that came with the deadline is still the answer.
    if let Ok(result) = picked.try_recv() {
        return result;
    }
    // No answer: the message is unrecorded if the backend had not taken
    // it, and from now on it never will.
    let untaken = state
        .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    Err(match (answer.is_err(), untaken) {
        (true, true) => Failure::NotStored(format!(
            "{backend} did not take the message within {timeout:?}"
        )),
        (true, false) => Failure::Unknown(format!(
            "{backend} took the message and did not answer within {timeout:?}"
        )),
        (false, true) => Failure::NotStored(format!("{backend} has stopped")),
        (false, false) => Failure::Unknown(format!("{backend} stopped during the message")),
    })
}

/// Takes the messages of `batch` for the backend, just before it begins
/// them; leaves out those whose connection stopped waiting (unrecorded).
/// From here on, a connection that stops waiting cannot tell whether its
/// message is stored.
pub(super) fn claim(batch: &mut Vec<Job>) {
    batch.retain(|job| {
        !job.reply.is_closed()
            && job
                .state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    });
}

/// The next batch, at most `max` messages: waits for one, then lets the
/// other connections that are ready queue theirs (while that brings more).
/// Messages nobody waits for any more are left out. `None` once every
/// connection's end of the queue is gone.
pub(super) async fn next(queue: &mut mpsc::Receiver<Job>, max: usize) -> Option<Vec<Job>> {
    loop {
        let first = queue.recv().await?;
        let mut batch = Vec::with_capacity(max.min(QUEUE));
        batch.push(first);
        for _ in 0..GATHER_ROUNDS {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < max {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == max {
                break;
            }
        }
        batch.retain(|job| !job.abandoned());
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// The tightest limits of a batch: a history shared by listeners with
/// different limits is trimmed to the smallest.
pub(super) fn tightest(batch: &[Job]) -> Limits {
    Limits {
        messages: batch
            .iter()
            .map(|j| j.how.limits.messages)
            .min()
            .unwrap_or(1),
        bytes: batch.iter().map(|j| j.how.limits.bytes).min().unwrap_or(1),
    }
}

/// A batch's answers: each waiting connection and its pick, or the error.
pub(super) type Answers = Vec<(
    oneshot::Sender<Result<Bytes, Failure>>,
    Result<Bytes, Failure>,
)>;

/// The answers of a batch: its picks, one per message, or the one error
/// for all.
pub(super) fn answers(batch: Vec<Job>, picked: Result<Vec<Bytes>, Failure>) -> Answers {
    match picked {
        Ok(picks) if picks.len() == batch.len() => (batch.into_iter())
            .zip(picks)
            .map(|(job, pick)| (job.reply, Ok(pick)))
            .collect(),
        Ok(picks) => {
            // The backend did its work, and answered wrong.
            let reason = format!("{} picks for {} messages", picks.len(), batch.len());
            answers(batch, Err(Failure::Unknown(reason)))
        }
        Err(reason) => (batch.into_iter())
            .map(|job| (job.reply, Err(reason.clone())))
            .collect(),
    }
}

/// Hands each answer to the connection waiting for it.
pub(super) fn deliver(answers: Answers) {
    for (reply, answer) in answers {
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::SqliteSync;
    use super::*;

    fn how() -> Recording {
        Recording {
            limits: Limits {
                messages: 10,
                bytes: 1 << 20,
            },
            timeout: Duration::from_secs(1),
            sync: SqliteSync::Normal,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_before_the_claim_is_not_stored_and_after_it_unknown() {
        let (queue, mut queued) = queue();
        // Nobody takes it: not stored, and left out of the next batch.
        let untaken = submit(&queue, Bytes::from_static(b"a"), how(), "test").await;
        assert!(matches!(untaken, Err(Failure::NotStored(_))), "{untaken:?}");
        let taken = tokio::spawn({
            let queue = queue.clone();
            async move { submit(&queue, Bytes::from_static(b"b"), how(), "test").await }
        });
        let mut batch = next(&mut queued, 8).await.expect("a batch");
        claim(&mut batch);
        let texts: Vec<&[u8]> = batch.iter().map(|job| &job.message[..]).collect();
        assert_eq!(texts, [b"b"], "the abandoned message is left out");
        // Claimed, then no answer in time: unknown.
        let taken = taken.await.unwrap();
        assert!(matches!(taken, Err(Failure::Unknown(_))), "{taken:?}");
        // Claimed and answered: the pick.
        let answered = tokio::spawn({
            let queue = queue.clone();
            async move { submit(&queue, Bytes::from_static(b"c"), how(), "test").await }
        });
        let mut batch = next(&mut queued, 8).await.expect("a batch");
        claim(&mut batch);
        deliver(answers(batch, Ok(vec![Bytes::from_static(b"pick")])));
        assert_eq!(answered.await.unwrap(), Ok(Bytes::from_static(b"pick")));
    }
}
