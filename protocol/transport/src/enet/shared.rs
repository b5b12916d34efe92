//! What the owner task shares with the threads that send: per-link counters (queued bytes, stats)
//! read and written lock-free, the one bounded command channel, and the `LinkSink` over them.
//!
//! Queued bytes are exact: each message handed to ENet carries a guard that gives its bytes back
//! when ENet releases the packet (acknowledged, sent unreliably, or dropped with its peer), so a
//! peer that stops acknowledging grows its link's count until `send` refuses and closes it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::link::{Delivery, LinkId, LinkSink, LinkStats, SendError};

/// One link's counters, shared by the owner task (writer of stats) and senders.
#[derive(Debug)]
pub(crate) struct LinkShared {
    pub(crate) id: LinkId,
    queued: AtomicUsize,
    /// Set once the link accepts no more sends (closing or closed).
    closed: AtomicBool,
    rtt_ms: AtomicU32,
    loss_bits: AtomicU32,
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
}

impl LinkShared {
    pub(crate) fn new(id: LinkId) -> Arc<Self> {
        Arc::new(LinkShared {
            id,
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            rtt_ms: AtomicU32::new(0),
            loss_bits: AtomicU32::new(0),
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats {
            rtt_ms: self.rtt_ms.load(Ordering::Relaxed),
            loss: f32::from_bits(self.loss_bits.load(Ordering::Relaxed)),
            queued_bytes: self.queued.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_path(&self, rtt_ms: u32, loss: f32) {
        self.rtt_ms.store(rtt_ms, Ordering::Relaxed);
        self.loss_bits.store(loss.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn add_received(&self, bytes: usize) {
        self.received_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the link closed; true for the one caller that closed it.
    pub(crate) fn mark_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Reserves `len` queued bytes, or fails (reserving nothing) when that passes `limit`.
    fn reserve(&self, len: usize, limit: usize) -> bool {
        let after = self.queued.fetch_add(len, Ordering::AcqRel).saturating_add(len);
        if after > limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// A message on its way to ENet: its bytes count as queued on its link until ENet drops it.
pub(crate) struct Tracked {
    data: Bytes,
    link: Arc<LinkShared>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.link.queued.fetch_sub(self.data.len(), Ordering::AcqRel);
    }
}

impl Tracked {
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }
}

/// How a close was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseKind {
    /// The owner closed it with this code; queued data is delivered first.
    Local(u16),
    /// The queue passed its limit: closed at once, queued data dropped.
    SlowConsumer,
}

/// What senders ask of the owner task.
pub(crate) enum Command {
    Send { link: LinkId, payload: Box<Tracked>, delivery: Delivery },
    Close { link: LinkId, kind: CloseKind },
}

/// The send side of the owner task's one bounded command channel, with the few closes that
/// found it full parked beside it (each link closes once, so that list is bounded by the links).
pub(crate) struct Commands {
    tx: mpsc::Sender<Command>,
    parked: Mutex<Vec<(LinkId, CloseKind)>>,
    has_parked: AtomicBool,
}

impl Commands {
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Arc::new(Commands { tx, parked: Mutex::new(Vec::new()), has_parked: AtomicBool::new(false) }), rx)
    }

    /// Queues a message for a link; `Err` gives the command back when the channel is full or
    /// the owner is gone.
    fn send(&self, command: Command) -> Result<(), mpsc::error::TrySendError<Command>> {
        self.tx.try_send(command)
    }

    pub(crate) fn close(&self, link: LinkId, kind: CloseKind) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Command::Close { link, kind }) {
            if let Ok(mut parked) = self.parked.lock() {
                parked.push((link, kind));
                self.has_parked.store(true, Ordering::Release);
            }
        }
    }

    /// Closes parked because the channel was full.
    pub(crate) fn take_parked(&self) -> Vec<(LinkId, CloseKind)> {
        if !self.has_parked.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.parked.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }
}

/// Validates and queues one send on a link: the frame limit, the link's queue limit (closing
/// the link when passed), then the command channel (a full channel means the owner task is
/// behind; the sending link is shed rather than blocking or growing memory).
pub(crate) fn queue_send(
    commands: &Commands,
    link: &Arc<LinkShared>,
    data: Bytes,
    delivery: Delivery,
    max_frame_bytes: usize,
    max_queued_bytes: usize,
) -> Result<(), SendError> {
    if data.len() > max_frame_bytes {
        return Err(SendError::TooLarge { len: data.len(), max: max_frame_bytes });
    }
    if link.is_closed() {
        return Err(SendError::Closed(link.id));
    }
    if !link.reserve(data.len(), max_queued_bytes) {
        if link.mark_closed() {
            commands.close(link.id, CloseKind::SlowConsumer);
        }
        return Err(SendError::SlowConsumer(link.id));
    }
    let payload = Box::new(Tracked { data, link: link.clone() });
    match commands.send(Command::Send { link: link.id, payload, delivery }) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => {
            if link.mark_closed() {
                commands.close(link.id, CloseKind::SlowConsumer);
            }
            Err(SendError::SlowConsumer(link.id))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            link.mark_closed();
            Err(SendError::Closed(link.id))
        }
    }
}

/// The `LinkSink` of one ENet server.
pub(crate) struct EnetSink {
    pub(crate) commands: Arc<Commands>,
    pub(crate) links: Arc<DashMap<LinkId, Arc<LinkShared>>>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_queued_bytes: usize,
}

impl LinkSink for EnetSink {
    fn send(&self, link: LinkId, data: Bytes, delivery: Delivery) -> Result<(), SendError> {
        if data.len() > self.max_frame_bytes {
            return Err(SendError::TooLarge { len: data.len(), max: self.max_frame_bytes });
        }
        let shared = self.links.get(&link).map(|l| l.value().clone()).ok_or(SendError::Closed(link))?;
        queue_send(&self.commands, &shared, data, delivery, self.max_frame_bytes, self.max_queued_bytes)
    }

    fn close(&self, link: LinkId, code: u16) {
        if let Some(shared) = self.links.get(&link).map(|l| l.value().clone())
            && shared.mark_closed()
        {
            self.commands.close(link, CloseKind::Local(code));
        }
    }

    fn stats(&self, link: LinkId) -> Option<LinkStats> {
        self.links.get(&link).map(|l| l.value().stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_bytes_are_returned_when_enet_drops_the_payload() {
        let (commands, mut rx) = Commands::new(8);
        let link = LinkShared::new(LinkId::new(0, 1));
        queue_send(&commands, &link, Bytes::from_static(b"hello"), Delivery::Reliable, 100, 100).expect("queued");
        assert_eq!(link.stats().queued_bytes, 5);
        let Ok(Command::Send { payload, .. }) = rx.try_recv() else { panic!("expected a send") };
        drop(payload);
        assert_eq!(link.stats().queued_bytes, 0);
    }

    #[test]
    fn passing_the_queue_limit_closes_the_link_once() {
        let (commands, mut rx) = Commands::new(8);
        let link = LinkShared::new(LinkId::new(0, 2));
        let big = Bytes::from(vec![0u8; 60]);
        queue_send(&commands, &link, big.clone(), Delivery::Reliable, 100, 100).expect("first fits");
        assert_eq!(
            queue_send(&commands, &link, big.clone(), Delivery::Reliable, 100, 100),
            Err(SendError::SlowConsumer(link.id))
        );
        assert_eq!(queue_send(&commands, &link, big, Delivery::Reliable, 100, 100), Err(SendError::Closed(link.id)));
        assert!(matches!(rx.try_recv(), Ok(Command::Send { .. })));
        assert!(matches!(rx.try_recv(), Ok(Command::Close { kind: CloseKind::SlowConsumer, .. })));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn oversize_is_refused_before_anything_is_queued() {
        let (commands, _rx) = Commands::new(8);
        let link = LinkShared::new(LinkId::new(0, 3));
        assert_eq!(
            queue_send(&commands, &link, Bytes::from(vec![0u8; 11]), Delivery::Unreliable, 10, 100),
            Err(SendError::TooLarge { len: 11, max: 10 })
        );
        assert_eq!(link.stats().queued_bytes, 0);
    }

    #[test]
    fn a_full_channel_parks_the_close() {
        let (commands, _rx) = Commands::new(1);
        let a = LinkShared::new(LinkId::new(0, 4));
        queue_send(&commands, &a, Bytes::from_static(b"x"), Delivery::Reliable, 10, 100).expect("fills the channel");
        assert_eq!(
            queue_send(&commands, &a, Bytes::from_static(b"y"), Delivery::Reliable, 10, 100),
            Err(SendError::SlowConsumer(a.id))
        );
        assert_eq!(commands.take_parked(), vec![(a.id, CloseKind::SlowConsumer)]);
        assert!(commands.take_parked().is_empty());
    }
}
