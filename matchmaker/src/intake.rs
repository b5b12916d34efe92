//! The lock-free intake of a shard: a bounded queue that any number of request handlers push
//! into without taking a lock, and that the shard's one owner drains before each tick.
//!
//! It is a fixed ring of slots claimed with compare-and-swap (`crossbeam_queue::ArrayQueue`):
//! a push never blocks and never allocates, and a full queue says so at once, handing the request
//! back, so the caller answers "busy" instead of growing memory. Order is FIFO, so a cancel pushed
//! after its enqueue is drained after it.

use crossbeam_queue::ArrayQueue;

use crate::core::{Ticket, TicketId};

/// What a shard's owner is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Enqueue(Ticket),
    Cancel(TicketId),
}

/// A bounded multi-producer queue drained by one owner.
#[derive(Debug)]
pub struct Intake<T = Request> {
    queue: ArrayQueue<T>,
}

impl<T> Intake<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Intake<T> {
        Intake { queue: ArrayQueue::new(capacity.max(1)) }
    }

    /// Adds `item`, or hands it back at once if the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        self.queue.push(item)
    }

    /// Moves up to `max` items, oldest first, to the end of `out`; returns how many. Only the
    /// owner calls this.
    pub fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.queue.pop() {
                Some(item) => {
                    out.push(item);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Items waiting (a snapshot: producers may be pushing).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn full_queue_hands_the_item_back_and_drain_is_fifo() {
        let q = Intake::new(2);
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(3));
        let mut out = Vec::new();
        assert_eq!(q.drain_into(&mut out, 10), 2);
        assert_eq!(out, [1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn many_producers_lose_nothing() {
        let q = Arc::new(Intake::new(1024));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let mut item = p * 1_000_000 + i;
                        // Bounded wait: the consumer below drains continuously.
                        for _ in 0..10_000_000 {
                            match q.push(item) {
                                Ok(()) => break,
                                Err(back) => {
                                    item = back;
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while got.len() < 40_000 && std::time::Instant::now() < deadline {
            if q.drain_into(&mut got, 4096) == 0 {
                std::thread::yield_now();
            }
        }
        for p in producers {
            p.join().expect("producer thread");
        }
        assert_eq!(got.len(), 40_000);
        // Each producer's items arrive in its own order.
        for p in 0..4u64 {
            let mine: Vec<u64> = got.iter().copied().filter(|v| v / 1_000_000 == p).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {p} reordered");
        }
    }
}
