//! [`Listener`]: a live, non-durable feed of one topic, with a bounded buffer.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};
use futures_core::Stream;

use crate::clock::lock;
use crate::error::{Error, Result};
use crate::message::Message;

/// What a [`Listener`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// A message committed to the topic.
    Message {
        /// Its seq.
        seq: u64,
        /// The message.
        message: Arc<Message>,
    },
    /// The listener fell behind and this many of the oldest unread messages
    /// were dropped; what follows is newer.
    Lagged(u64),
}

pub(crate) struct ListenerShared {
    queue: Mutex<Queue>,
    event: Event,
    capacity: usize,
}

struct Queue {
    items: VecDeque<(u64, Arc<Message>)>,
    lagged: u64,
    closed: bool,
}

impl ListenerShared {
    pub(crate) fn new(capacity: usize) -> Self {
        ListenerShared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                lagged: 0,
                closed: false,
            }),
            event: Event::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn push(&self, seq: u64, message: Arc<Message>) {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return;
        }
        if queue.items.len() >= self.capacity {
            queue.items.pop_front();
            queue.lagged += 1;
        }
        queue.items.push_back((seq, message));
        drop(queue);
        self.event.notify(usize::MAX);
    }

    pub(crate) fn close(&self) {
        lock(&self.queue).closed = true;
        self.event.notify(usize::MAX);
    }

    fn try_next(&self) -> Option<Result<Live>> {
        let mut queue = lock(&self.queue);
        if queue.lagged > 0 {
            return Some(Ok(Live::Lagged(std::mem::take(&mut queue.lagged))));
        }
        if let Some((seq, message)) = queue.items.pop_front() {
            return Some(Ok(Live::Message { seq, message }));
        }
        queue.closed.then_some(Err(Error::Closed))
    }
}

/// A live feed of the messages published to one topic through this bus (and
/// dead letters it moves there) after the listener was created. It has no
/// group and no acks: it is what a UI or a cache wants.
#[must_use = "a listener hears nothing unless polled"]
pub struct Listener {
    shared: Arc<ListenerShared>,
    waiting: Option<EventListener>,
}

impl Listener {
    pub(crate) fn new(shared: Arc<ListenerShared>) -> Self {
        Listener {
            shared,
            waiting: None,
        }
    }

    /// Waits for the next message (or a [`Live::Lagged`] notice);
    /// [`Error::Closed`] once the bus is closed and the buffer is empty.
    pub async fn recv(&mut self) -> Result<Live> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<Live>> {
        self.shared.try_next()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Live>> {
        loop {
            if let Some(item) = self.shared.try_next() {
                self.waiting = None;
                return Poll::Ready(item);
            }
            match &mut self.waiting {
                // Arm, then look again: a push between the look and the arm
                // is not lost.
                None => self.waiting = Some(self.shared.event.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.waiting = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl Stream for Listener {
    type Item = Live;

    /// Yields what the listener hears; ends when the bus is closed.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Live>> {
        self.get_mut().poll_recv(cx).map(Result::ok)
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}
