//! Connection slots with a first-come-first-served queue of waiters.
//!
//! While no one waits, taking and giving back a slot is one atomic
//! operation each (no lock). The queue's lock is taken only when the slots
//! are all held: to wait, to hand a freed slot to the first waiter, or to
//! give up waiting. A freed slot goes to the first waiter directly (the
//! count of held slots stays), so a newcomer cannot overtake the queue.
//!
//! A waiter announces itself (`queued`) before it checks the slots, and a
//! releaser frees its slot before it checks `queued`: with both in one
//! sequentially consistent order, either the waiter sees the free slot or
//! the releaser sees the waiter and hands it over, so no wake-up is lost.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// `max` slots and the requests waiting for one.
pub(super) struct Slots {
    max: u64,
    /// Slots held, at most `max`.
    held: AtomicU64,
    /// Waiters in the queue (and, briefly, one checking before it joins).
    queued: AtomicU64,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    /// Each waiter's id and the sender that hands it a slot.
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// What a request that found no free slot at first gets.
pub(super) enum Enqueued {
    /// A slot freed meanwhile and no one was ahead: it is held.
    Taken,
    /// Waiting in the queue; the receiver fires when a slot is handed over.
    Waiting(Ticket),
    /// The queue already holds `max_pending` waiters.
    Full,
}

/// A place in the queue.
pub(super) struct Ticket {
    id: u64,
    handed: oneshot::Receiver<()>,
}

impl Ticket {
    /// Ready when a slot was handed over (`true`), or when the queue went
    /// away without one (`false`: cannot happen while the slots live).
    pub(super) fn poll_handed(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        Pin::new(&mut self.handed).poll(cx).map(|r| r.is_ok())
    }
}

impl Slots {
    pub(super) fn new(max: u32) -> Self {
        Self {
            max: u64::from(max),
            held: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Takes a slot when one is free and no one waits (no lock).
    pub(super) fn try_take(&self) -> bool {
        self.queued.load(SeqCst) == 0 && self.take_free()
    }

    fn take_free(&self) -> bool {
        let mut held = self.held.load(SeqCst);
        while held < self.max {
            match self
                .held
                .compare_exchange_weak(held, held + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => held = actual,
            }
        }
        false
    }

    /// Joins the queue, unless a slot is free with no one ahead (taken)
    /// or `max_pending` already wait.
    pub(super) fn enqueue(&self, max_pending: u64) -> Enqueued {
        let mut queue = self.queue.lock();
        self.queued.fetch_add(1, SeqCst);
        if queue.waiters.is_empty() && self.take_free() {
            self.queued.fetch_sub(1, SeqCst);
            return Enqueued::Taken;
        }
        if queue.waiters.len() as u64 >= max_pending {
            self.queued.fetch_sub(1, SeqCst);
            return Enqueued::Full;
        }
        let (tx, rx) = oneshot::channel();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiters.push_back((id, tx));
        Enqueued::Waiting(Ticket { id, handed: rx })
    }

    /// Gives a slot back: to the first waiter, or free.
    pub(super) fn release(&self) {
        if self.queued.load(SeqCst) > 0 && self.hand_over(false) {
            return;
        }
        self.held.fetch_sub(1, SeqCst);
        // A waiter that joined after the check above may have seen this
        // slot still held.
        if self.queued.load(SeqCst) > 0 {
            self.hand_over(true);
        }
    }

    /// Hands a slot to the first waiter: the caller's (`free` false) or
    /// a free one (`free` true). Whether a waiter took it.
    fn hand_over(&self, free: bool) -> bool {
        let mut queue = self.queue.lock();
        while !queue.waiters.is_empty() {
            if free && !self.take_free() {
                return false;
            }
            let Some((_, tx)) = queue.waiters.pop_front() else {
                break;
            };
            self.queued.fetch_sub(1, SeqCst);
            if tx.send(()).is_ok() {
                return true;
            }
            // Its waiter is gone (it leaves the queue under this lock, so
            // this does not happen); the slot goes on to the next.
            if free {
                self.held.fetch_sub(1, SeqCst);
            }
        }
        false
    }

    /// A waiter gives up: it leaves the queue, or, when it was handed a
    /// slot already, passes that slot on.
    pub(super) fn leave(&self, ticket: &Ticket) {
        let mut queue = self.queue.lock();
        if let Some(at) = queue.waiters.iter().position(|(w, _)| *w == ticket.id) {
            queue.waiters.remove(at);
            self.queued.fetch_sub(1, SeqCst);
            return;
        }
        drop(queue);
        self.release();
    }

    /// Waiters now.
    pub(super) fn waiting(&self) -> u64 {
        self.queued.load(SeqCst)
    }

    /// Slots free now.
    pub(super) fn free(&self) -> u64 {
        self.max.saturating_sub(self.held.load(SeqCst))
    }
}
