//! One WebSocket connection as a hand-written future: the outgoing queue shared with
//! [`LinkSink::send`](crate::LinkSink::send), the read side, pings, the idle timeout, the close
//! handshake and the optional conditioner. Used by the server's shards and by the client.
//!
//! The future never waits on one thing while another is ready: each `poll` writes what the
//! socket accepts, reads what is there (unless the owner's channel is full, which is how
//! back-pressure reaches the peer's TCP window) and arms one timer, so a close request or a
//! timeout is seen even while the peer is not reading.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::{Sink, Stream};
use protocol::ErrorCode;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::PollSender;

use super::io::Io;
use super::{close_frame, reason_from_close};
use crate::conditioner::{AsyncConditioner, ConditionerConfig};
use crate::link::{CloseReason, LinkId, LinkStats, SendError};

/// Loop turns per `poll` before yielding, so one busy link cannot starve the others of its
/// shard.
const POLL_BUDGET: usize = 32;
/// Messages read per loop turn before the outgoing side gets another look.
const READ_BUDGET: usize = 32;

/// Why the driver was asked to close, as set by the sink or the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseRequest {
    Local(u16),
    Shutdown,
    SlowConsumer,
}

/// The part of a link shared between its driver and every sender: the outgoing queue, the close
/// request and the figures `stats` reports.
#[derive(Debug)]
pub(crate) struct LinkShared {
    pub(crate) id: LinkId,
    max_frame_bytes: usize,
    max_queued_bytes: usize,
    outbox: Mutex<Outbox>,
    waker: AtomicWaker,
    /// Mirrors `Outbox::bytes` so `stats` does not take the lock.
    queued_bytes: AtomicUsize,
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    /// Smoothed ping round trip in microseconds, 0 before the first pong.
    rtt_us: AtomicU32,
}

#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Bytes>,
    bytes: usize,
    close: Option<CloseRequest>,
    /// The driver has finished; nothing will be sent any more.
    finished: bool,
}

impl LinkShared {
    pub(crate) fn new(id: LinkId, max_frame_bytes: usize, max_queued_bytes: usize) -> Self {
        LinkShared {
            id,
            max_frame_bytes,
            max_queued_bytes,
            outbox: Mutex::new(Outbox::default()),
            waker: AtomicWaker::new(),
            queued_bytes: AtomicUsize::new(0),
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            rtt_us: AtomicU32::new(0),
        }
    }

    /// Queues one message. Never blocks: the lock is held for a queue push.
    pub(crate) fn send(&self, data: Bytes) -> Result<(), SendError> {
        if data.len() > self.max_frame_bytes {
            return Err(SendError::TooLarge { len: data.len(), max: self.max_frame_bytes });
        }
        let mut outbox = self.lock();
        if outbox.finished || outbox.close.is_some() {
            return Err(SendError::Closed(self.id));
        }
        if outbox.bytes + data.len() > self.max_queued_bytes {
            outbox.close = Some(CloseRequest::SlowConsumer);
            outbox.queue = VecDeque::new();
            outbox.bytes = 0;
            self.queued_bytes.store(0, Ordering::Relaxed);
            drop(outbox);
            self.waker.wake();
            return Err(SendError::SlowConsumer(self.id));
        }
        outbox.bytes += data.len();
        self.queued_bytes.store(outbox.bytes, Ordering::Relaxed);
        outbox.queue.push_back(data);
        // The driver drains the queue whenever it runs, so only the first message needs to
        // wake it.
        let wake = outbox.queue.len() == 1;
        drop(outbox);
        if wake {
            self.waker.wake();
        }
        Ok(())
    }

    /// Asks the driver to close. The first request wins; a slow-consumer close drops the queue.
    pub(crate) fn request_close(&self, request: CloseRequest) {
        let mut outbox = self.lock();
        if outbox.finished || outbox.close.is_some() {
            return;
        }
        if request == CloseRequest::SlowConsumer {
            outbox.queue = VecDeque::new();
            outbox.bytes = 0;
            self.queued_bytes.store(0, Ordering::Relaxed);
        }
        outbox.close = Some(request);
        drop(outbox);
        self.waker.wake();
    }

    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats {
            rtt_ms: self.rtt_us.load(Ordering::Relaxed).div_ceil(1000),
            loss: 0.0,
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
        }
    }

    fn close_request(&self) -> Option<CloseRequest> {
        self.lock().close
    }

    fn pop(&self) -> Option<Bytes> {
        let mut outbox = self.lock();
        let data = outbox.queue.pop_front()?;
        outbox.bytes -= data.len();
        self.queued_bytes.store(outbox.bytes, Ordering::Relaxed);
        Some(data)
    }

    fn is_drained(&self) -> bool {
        self.lock().queue.is_empty()
    }

    fn finish(&self) {
        let mut outbox = self.lock();
        outbox.finished = true;
        outbox.queue = VecDeque::new();
        outbox.bytes = 0;
        self.queued_bytes.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // The lock is only held for queue operations that cannot panic half-way, so a poisoned
        // outbox is still consistent.
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The per-connection settings the driver needs.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    pub(crate) ping_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) close_timeout: Duration,
    /// Decodes a received 1001 as [`CloseReason::Shutdown`] (the server went away) rather than as
    /// a normal close by a client leaving.
    pub(crate) is_client: bool,
    pub(crate) conditioner: Option<ConditionerConfig>,
}

#[derive(Debug)]
enum Phase {
    Open,
    /// The owner asked to close: send what is queued, then the close frame.
    Draining { reason: CloseReason, frame: CloseFrame, deadline: Instant },
    /// A close frame was sent or received (or the read side failed): flush, then read until the
    /// peer ends the connection, or the deadline.
    Finishing { reason: CloseReason, deadline: Instant },
}

enum Delivered {
    /// Everything received is with the owner (or there was nothing); `true` if anything moved.
    All(bool),
    /// The owner's channel is full (or gone); stop reading.
    Blocked(bool),
}

enum Step {
    Progress,
    Idle,
    Done(CloseReason),
}

/// Drives one connection until it ends and resolves to why it ended. Dropping it drops the
/// connection.
pub(crate) struct Driver<E> {
    ws: WebSocketStream<Io>,
    link: Arc<LinkShared>,
    events: PollSender<E>,
    make_event: fn(LinkId, Bytes) -> E,
    config: DriverConfig,
    phase: Phase,
    /// Received messages (past the conditioner) waiting for room in the owner's channel.
    inbound: VecDeque<Bytes>,
    cond_in: Option<AsyncConditioner<Bytes>>,
    cond_out: Option<AsyncConditioner<Bytes>>,
    /// The next message for the socket, waiting for `poll_ready`.
    outgoing: Option<Message>,
    need_flush: bool,
    read_ended: bool,
    timer: Pin<Box<Sleep>>,
    timer_deadline: Instant,
    last_seen: Instant,
    next_ping: Instant,
    ping_due: bool,
    ping_seq: u64,
    ping_sent: Option<(u64, Instant)>,
}

impl<E: Send + 'static> Driver<E> {
    pub(crate) fn new(
        ws: WebSocketStream<Io>,
        link: Arc<LinkShared>,
        events: tokio::sync::mpsc::Sender<E>,
        make_event: fn(LinkId, Bytes) -> E,
        config: DriverConfig,
    ) -> Self {
        let now = Instant::now();
        let (cond_in, cond_out) = match &config.conditioner {
            Some(c) => {
                // Each direction (and each link) gets its own stream of random numbers, derived
                // from the configured seed so a run still replays.
                let base = c.seed ^ link.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let incoming = ConditionerConfig { seed: base, ..c.clone() };
                let outgoing = ConditionerConfig { seed: base ^ 0x5555_5555_5555_5555, ..c.clone() };
                (Some(AsyncConditioner::new(incoming)), Some(AsyncConditioner::new(outgoing)))
            }
            None => (None, None),
        };
        let first_deadline = now + config.ping_interval;
        Driver {
            ws,
            link,
            events: PollSender::new(events),
            make_event,
            phase: Phase::Open,
            inbound: VecDeque::new(),
            cond_in,
            cond_out,
            outgoing: None,
            need_flush: false,
            read_ended: false,
            timer: Box::pin(tokio::time::sleep_until(first_deadline)),
            timer_deadline: first_deadline,
            last_seen: now,
            next_ping: first_deadline,
            ping_due: false,
            ping_seq: 0,
            ping_sent: None,
            config,
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let now = Instant::now();
        let mut progress = false;

        if matches!(self.phase, Phase::Open) {
            match self.link.close_request() {
                None => {}
                Some(CloseRequest::SlowConsumer) => {
                    return Step::Done(self.abort(cx, CloseReason::SlowConsumer, Some(ErrorCode::SlowConsumer as u16)));
                }
                Some(CloseRequest::Local(code)) => {
                    self.start_draining(CloseReason::Local { code }, code, now);
                    progress = true;
                }
                Some(CloseRequest::Shutdown) => {
                    self.start_draining(CloseReason::Shutdown, ErrorCode::ShuttingDown as u16, now);
                    progress = true;
                }
            }
        }

        match self.poll_write(cx) {
            Ok(p) => progress |= p,
            Err(e) => return Step::Done(self.reason_after_error(&e)),
        }

        match self.poll_read(cx, now) {
            Ok(p) => progress |= p,
            Err(reason) => return Step::Done(reason),
        }

        if let Phase::Finishing { reason, .. } = &self.phase
            && self.read_ended
            && !self.need_flush
            && self.outgoing.is_none()
        {
            return Step::Done(reason.clone());
        }

        match self.poll_timer(cx, now) {
            Ok(p) => progress |= p,
            Err(reason) => return Step::Done(reason),
        }

        if progress { Step::Progress } else { Step::Idle }
    }

    fn start_draining(&mut self, reason: CloseReason, code: u16, now: Instant) {
        // What arrives after the owner asked to close is no longer wanted.
        self.inbound.clear();
        self.phase = Phase::Draining { reason, frame: close_frame(code), deadline: now + self.config.close_timeout };
    }

    /// Closes at once: one non-blocking attempt at a close frame, nothing waited for. Used when
    /// the peer cannot or will not take more (slow consumer, idle timeout).
    fn abort(&mut self, cx: &mut Context<'_>, reason: CloseReason, code: Option<u16>) -> CloseReason {
        if let (None, Some(code)) = (&self.outgoing, code)
            && let Poll::Ready(Ok(())) = Pin::new(&mut self.ws).poll_ready(cx)
            && Pin::new(&mut self.ws).start_send(Message::Close(Some(close_frame(code)))).is_ok()
        {
            let _ = Pin::new(&mut self.ws).poll_flush(cx);
        }
        reason
    }

    /// Writes what the socket accepts: pings, queued messages (through the conditioner when
    /// set), and the close frame once a drain is complete.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, WsError> {
        let mut progress = false;
        loop {
            if self.outgoing.is_none() {
                self.outgoing = self.next_outgoing(cx);
            }
            let Some(message) = self.outgoing.take() else { break };
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Pending => {
                    self.outgoing = Some(message);
                    break;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) => {
                    let is_close = matches!(message, Message::Close(_));
                    if let Message::Binary(data) = &message {
                        self.link.sent_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    Pin::new(&mut self.ws).start_send(message)?;
                    self.need_flush = true;
                    progress = true;
                    if is_close && let Phase::Draining { reason, deadline, .. } = &self.phase {
                        self.phase = Phase::Finishing { reason: reason.clone(), deadline: *deadline };
                    }
                }
            }
        }
        if self.need_flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn next_outgoing(&mut self, cx: &mut Context<'_>) -> Option<Message> {
        if matches!(self.phase, Phase::Finishing { .. }) {
            return None;
        }
        if self.ping_due {
            self.ping_due = false;
            self.ping_seq += 1;
            self.ping_sent = Some((self.ping_seq, Instant::now()));
            return Some(Message::Ping(Bytes::copy_from_slice(&self.ping_seq.to_be_bytes())));
        }
        let mut conditioned_empty = true;
        if let Some(cond) = &mut self.cond_out {
            while let Some(data) = self.link.pop() {
                cond.push_stream(data);
            }
            if let Poll::Ready(data) = cond.poll_due(cx) {
                return Some(Message::Binary(data));
            }
            conditioned_empty = cond.conditioner().is_empty();
        } else if let Some(data) = self.link.pop() {
            return Some(Message::Binary(data));
        }
        if let Phase::Draining { frame, .. } = &self.phase
            && conditioned_empty
            && self.link.is_drained()
        {
            return Some(Message::Close(Some(frame.clone())));
        }
        None
    }

    /// Hands received messages to the owner and reads more while the owner keeps up.
    /// `Err` ends the link at once.
    fn poll_read(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<bool, CloseReason> {
        let mut progress = false;
        if let Some(cond) = &mut self.cond_in {
            while let Poll::Ready(data) = cond.poll_due(cx) {
                if matches!(self.phase, Phase::Open) {
                    self.inbound.push_back(data);
                }
            }
        }
        match self.deliver(cx, now) {
            Delivered::All(p) => progress |= p,
            Delivered::Blocked(p) => return Ok(progress | p),
        }
        if self.read_ended {
            return Ok(progress);
        }
        for _ in 0..READ_BUDGET {
            let item = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(item) => item,
            };
            progress = true;
            let message = match item {
                Some(Ok(message)) => message,
                None => {
                    self.read_ended = true;
                    if matches!(self.phase, Phase::Open) {
                        // The stream only ends after a close frame, which moves the phase on.
                        return Err(CloseReason::Remote { code: 0 });
                    }
                    break;
                }
                Some(Err(e)) => {
                    self.read_ended = true;
                    return self.read_failed(&e, now).map(|()| true);
                }
            };
            self.last_seen = now;
            match message {
                Message::Binary(data) => {
                    self.link.received_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if !matches!(self.phase, Phase::Open) {
                        continue;
                    }
                    match &mut self.cond_in {
                        Some(cond) => cond.push_stream(data),
                        None => {
                            self.inbound.push_back(data);
                            // Deliver before reading more, so a full channel stops the reading.
                            if let Delivered::Blocked(_) = self.deliver(cx, now) {
                                break;
                            }
                        }
                    }
                }
                Message::Text(_) => {
                    if matches!(self.phase, Phase::Open) {
                        self.fail(CloseReason::Protocol("text frame".into()), ErrorCode::Malformed as u16, now);
                        break;
                    }
                }
                Message::Close(frame) => {
                    // tungstenite has queued the reply; flushing it is part of finishing.
                    self.need_flush = true;
                    let reason = match &self.phase {
                        Phase::Open => reason_from_close(frame.as_ref(), self.config.is_client),
                        Phase::Draining { reason, .. } | Phase::Finishing { reason, .. } => reason.clone(),
                    };
                    let deadline = match &self.phase {
                        Phase::Draining { deadline, .. } | Phase::Finishing { deadline, .. } => *deadline,
                        Phase::Open => now + self.config.close_timeout,
                    };
                    self.inbound.clear();
                    self.outgoing = None;
                    self.phase = Phase::Finishing { reason, deadline };
                }
                Message::Pong(payload) => self.on_pong(&payload, now),
                // tungstenite answers pings itself during the read; make sure the pong goes out.
                Message::Ping(_) => self.need_flush = true,
                Message::Frame(_) => {}
            }
        }
        Ok(progress)
    }

    /// Moves received messages into the owner's channel while it has room.
    fn deliver(&mut self, cx: &mut Context<'_>, now: Instant) -> Delivered {
        let mut progress = false;
        while !self.inbound.is_empty() {
            match self.events.poll_reserve(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(data) = self.inbound.pop_front() {
                        // Cannot fail after a successful reserve except when the receiver is
                        // gone, which the next reserve reports.
                        let _ = self.events.send_item((self.make_event)(self.link.id, data));
                        progress = true;
                    }
                }
                Poll::Ready(Err(_)) => {
                    // The owner dropped its receiver: nobody wants this link any more.
                    self.link.request_close(CloseRequest::Shutdown);
                    self.inbound.clear();
                    return Delivered::Blocked(true);
                }
                Poll::Pending => {
                    // The owner is the slow side: stop reading so TCP pushes back on the peer,
                    // and do not count the pause against the peer's idle timeout.
                    self.last_seen = now;
                    return Delivered::Blocked(progress);
                }
            }
        }
        Delivered::All(progress)
    }

    /// The read side failed: a rule broken by the peer gets a close frame saying why; a dead
    /// connection just ends.
    fn read_failed(&mut self, error: &WsError, now: Instant) -> Result<(), CloseReason> {
        let reason = match &self.phase {
            Phase::Open => classify(error),
            // We were closing anyway: keep our reason.
            Phase::Draining { reason, .. } | Phase::Finishing { reason, .. } => return Err(reason.clone()),
        };
        match error {
            WsError::Capacity(_) => self.fail(reason, ErrorCode::TooLarge as u16, now),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return Err(reason),
            WsError::Protocol(_) | WsError::Utf8(_) | WsError::AttackAttempt => {
                self.fail(reason, ErrorCode::Malformed as u16, now);
            }
            _ => return Err(reason),
        }
        Ok(())
    }

    /// Sends a close frame with `code` ahead of anything queued and finishes.
    fn fail(&mut self, reason: CloseReason, code: u16, now: Instant) {
        tracing::debug!(link = %self.link.id, ?reason, "closing link on a protocol violation");
        self.inbound.clear();
        self.outgoing = Some(Message::Close(Some(close_frame(code))));
        self.phase = Phase::Finishing { reason, deadline: now + self.config.close_timeout };
    }

    fn on_pong(&mut self, payload: &[u8], now: Instant) {
        let Some((seq, sent)) = self.ping_sent else { return };
        if payload != seq.to_be_bytes() {
            return;
        }
        self.ping_sent = None;
        let sample = u32::try_from((now - sent).as_micros()).unwrap_or(u32::MAX);
        let old = self.link.rtt_us.load(Ordering::Relaxed);
        // The usual smoothing (RFC 6298): 7/8 of the old estimate, 1/8 of the new sample.
        let smoothed = if old == 0 { sample } else { ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32 };
        self.link.rtt_us.store(smoothed.max(1), Ordering::Relaxed);
    }

    /// One timer for pings, the idle timeout and the close deadline.
    fn poll_timer(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<bool, CloseReason> {
        let deadline = match &self.phase {
            Phase::Open => {
                let idle_at = self.last_seen + self.config.idle_timeout;
                if now >= idle_at {
                    // A silent peer is gone or unreachable: no close frame to wait for.
                    return Err(self.abort(cx, CloseReason::Timeout, None));
                }
                if now >= self.next_ping {
                    self.ping_due = true;
                    self.next_ping = now + self.config.ping_interval;
                    return Ok(true);
                }
                idle_at.min(self.next_ping)
            }
            Phase::Draining { reason, deadline, .. } | Phase::Finishing { reason, deadline } => {
                if now >= *deadline {
                    return Err(reason.clone());
                }
                *deadline
            }
        };
        if deadline != self.timer_deadline {
            self.timer.as_mut().reset(deadline);
            self.timer_deadline = deadline;
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Pending => Ok(false),
            // Due: the checks above act on it in the next turn.
            Poll::Ready(()) if Instant::now() >= deadline => Ok(true),
            // Fired early (clock granularity): re-arm so a wake-up stays registered.
            Poll::Ready(()) => {
                self.timer.as_mut().reset(deadline);
                Ok(self.timer.as_mut().poll(cx).is_ready())
            }
        }
    }

    fn reason_after_error(&self, error: &WsError) -> CloseReason {
        match &self.phase {
            Phase::Open => classify(error),
            Phase::Draining { reason, .. } | Phase::Finishing { reason, .. } => reason.clone(),
        }
    }
}

impl<E: Send + 'static> Future for Driver<E> {
    type Output = CloseReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = &mut *self;
        // Registered before anything looks at the queue, so a send that lands in between still
        // wakes us.
        this.link.waker.register(cx.waker());
        for _ in 0..POLL_BUDGET {
            match this.step(cx) {
                Step::Progress => {}
                Step::Idle => return Poll::Pending,
                Step::Done(reason) => {
                    this.link.finish();
                    return Poll::Ready(reason);
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How a WebSocket error looks to the owner. Everything the peer did wrong, including hanging up
/// without a close frame, is a [`CloseReason::Protocol`] with the detail.
fn classify(error: &WsError) -> CloseReason {
    match error {
        WsError::Capacity(e) => CloseReason::Protocol(format!("oversize frame: {e}")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            CloseReason::Protocol("connection closed without a close frame".into())
        }
        WsError::Protocol(e) => CloseReason::Protocol(format!("websocket protocol error: {e}")),
        WsError::Utf8(e) => CloseReason::Protocol(format!("invalid utf-8: {e}")),
        WsError::Io(e) => CloseReason::Protocol(format!("io error: {e}")),
        WsError::ConnectionClosed | WsError::AlreadyClosed => CloseReason::Remote { code: 0 },
        other => CloseReason::Protocol(other.to_string()),
    }
}
