//! Publishes and acks of concurrent callers share one transaction (group
//! commit), without a runtime: each caller queues its work, and whoever gets
//! the connection's turn runs everything queued in one transaction, answers
//! each caller, and hands the turn on. A commit is most of what a step costs
//! on turso, so sixteen concurrent publishers pay for a few commits, not
//! sixteen.
//!
//! Work is plain data, so it can run again: if the caller running a batch
//! stops waiting half-way, the batch goes back to the front of the queue and
//! its transaction is rolled back before the next one begins. Answers are
//! given only after the commit. If a batch fails, each of its jobs runs again
//! alone, so one caller's error is never another's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use litebus::driver::Append;
use litebus::{Error, Message, Outcome, Result};

use crate::serial::Serial;

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 256;

/// Work that can share a transaction with its neighbours.
pub(crate) enum Work {
    /// Appends messages to a topic (no expected last seq).
    Publish {
        topic: String,
        messages: Vec<Arc<Message>>,
    },
    /// Acks one delivery.
    Ack {
        topic: String,
        group: String,
        seq: u64,
        attempt: u32,
        now: litebus::Timestamp,
    },
}

/// What a job's caller gets back.
pub(crate) enum Answer {
    Published(Vec<Outcome>),
    Acked,
}

struct Job {
    work: Work,
    answer: Mutex<Option<Result<Answer>>>,
}

/// The queue of work waiting for a transaction.
#[derive(Default)]
pub(crate) struct Merger {
    queue: Mutex<VecDeque<Arc<Job>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Puts a batch back at the front of the queue unless it was answered (its
/// runner stopped waiting half-way).
struct Requeue<'a> {
    merger: &'a Merger,
    batch: Vec<Arc<Job>>,
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.merger.queue);
        for job in self.batch.drain(..).rev() {
            if lock(&job.answer).is_none() {
                queue.push_front(job);
            }
        }
    }
}

impl Merger {
    /// Queues `work` and returns its answer once a transaction holding it
    /// has committed (or failed).
    pub(crate) async fn submit(&self, serial: &Serial, work: Work) -> Result<Answer> {
        let job = Arc::new(Job {
            work,
            answer: Mutex::new(None),
        });
        lock(&self.queue).push_back(job.clone());
        loop {
            // Armed before the look, so an answer given after it wakes us.
            let answered = serial.listen_answered();
            if let Some(answer) = lock(&job.answer).take() {
                return answer;
            }
            let Some(turn) = serial.turn_or_answered(answered).await else {
                continue;
            };
            let batch: Vec<Arc<Job>> = {
                let mut queue = lock(&self.queue);
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // Another runner had this job in its batch; its answer is
                // given, or will be before that runner lets the turn go.
                continue;
            }
            let mut requeue = Requeue {
                merger: self,
                batch,
            };
            run_batch(serial, turn, &requeue.batch).await;
            requeue.batch.clear();
        }
    }
}

/// Runs `batch` in one transaction and answers every job; if that fails,
/// runs each job in a transaction of its own.
async fn run_batch<'a>(serial: &'a Serial, turn: crate::serial::Turn<'a>, batch: &[Arc<Job>]) {
    let answers = match serial.begin_in(turn).await {
        Ok(tx) => {
            let mut answers = Vec::with_capacity(batch.len());
            let mut failed = false;
            {
                let conn = &mut tx.conn();
                for job in batch {
                    if let Ok(answer) = run(conn, &job.work).await {
                        answers.push(answer);
                    } else {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                // The jobs then run one by one below.
                tx.roll_back().await;
                None
            } else {
                tx.end(Ok(())).await.ok().map(|()| answers)
            }
        }
        Err(_) => None,
    };
    match answers {
        Some(answers) => {
            for (job, answer) in batch.iter().zip(answers) {
                *lock(&job.answer) = Some(answer);
            }
            // The turn went back before the answers were in: wake the
            // callers again so that they find them.
            serial.wake_all();
        }
        None => {
            // One at a time, so each caller gets its own outcome.
            for job in batch {
                let answer = match serial.begin().await {
                    Ok(tx) => {
                        let result = {
                            let conn = &mut tx.conn();
                            run(conn, &job.work).await
                        };
                        match tx.end(result).await {
                            Ok(answer) => answer,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                *lock(&job.answer) = Some(answer);
                serial.wake_all();
            }
        }
    }
}

/// One job's statements. `Ok(Err(_))` is an answer that does not spoil the
/// transaction (a lost lease); `Err(_)` does.
async fn run(conn: &mut dyn litebus_sql::Conn, work: &Work) -> Result<Result<Answer>> {
    match work {
        Work::Publish { topic, messages } => {
            let append = Append {
                topic,
                messages,
                expected_last: None,
            };
            litebus_sql::append(conn, append)
                .await
                .map(|outcomes| Ok(Answer::Published(outcomes)))
        }
        Work::Ack {
            topic,
            group,
            seq,
            attempt,
            now,
        } => {
            // One primary-key delete (`ack_many`'s `seq IN (…)` is a range
            // over the group on turso).
            let settle = litebus::driver::Settle {
                topic,
                group,
                seq: *seq,
                attempt: *attempt,
                now: *now,
                settlement: litebus::driver::Settlement::Ack,
            };
            match litebus_sql::settle(conn, settle).await {
                Ok(_) => Ok(Ok(Answer::Acked)),
                Err(Error::LeaseLost) => Ok(Err(Error::LeaseLost)),
                Err(e) => Err(e),
            }
        }
    }
}
