//! The outbox on the real Postgres and SQLite with the real Redis: events reach the stream in
//! order with their fields; while Redis is unreachable nothing is marked or lost, and a relay
//! that can reach it publishes everything once and in order; a relay whose Redis goes away and
//! comes back recovers by itself; concurrent recorders and two relays on one database lose
//! nothing; the in-process log; retention deletes only old published rows. Each test has its own
//! stream key and every wait is bounded.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use migrations::testing::redis_url;
use migrations::{Db, on_db};
use outbox::{Event, InProcessLog, Outbox, OutboxError, OutboxMetrics, RedisStream, Relay, RelayConfig, Sink};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

migrations::both_backends!(
    recorded_events_arrive_in_the_stream_in_order_with_their_fields,
    while_redis_is_unreachable_nothing_is_lost_and_a_working_relay_publishes_each_once_in_order,
    a_relay_recovers_when_redis_comes_back,
    concurrent_recorders_lose_nothing_and_publish_in_id_order,
    two_relays_on_one_database_lose_nothing,
    the_in_process_log_keeps_the_latest_events_and_broadcasts_them,
    retention_deletes_only_old_published_rows,
    invalid_kinds_are_refused,
);

/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(15);

/// A quick relay: short poll and backoff so tests do not wait on the production pacing.
fn fast() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// A stream prefix no other test uses.
fn prefix() -> String {
    format!("tavern-test-{}:", Uuid::new_v4().simple())
}

struct Running {
    metrics: OutboxMetrics,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    fn start(outbox: &Outbox, sink: Sink, config: RelayConfig) -> Running {
        let metrics = OutboxMetrics::unregistered(outbox.source());
        let shutdown = CancellationToken::new();
        let handle = Relay::spawn_with(outbox.clone(), sink, config, metrics.clone(), shutdown.clone());
        Running { metrics, shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle).await.expect("relay stops in time").expect("relay task");
    }
}

fn redis_sink(url: &str, prefix: &str) -> Sink {
    Sink::RedisStream(RedisStream::new(url, prefix).expect("valid redis url"))
}

/// One stream entry's fields.
type Entry = HashMap<String, String>;

async fn redis() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("redis url");
    tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
        .await
        .expect("redis connects in time")
        .unwrap_or_else(|e| panic!("test redis at {} is not reachable: {e}", redis_url()))
}

async fn stream(prefix: &str) -> Vec<Entry> {
    let mut conn = redis().await;
    let entries: Vec<(String, Entry)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}events"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    entries.into_iter().map(|(_, fields)| fields).collect()
}

async fn drop_stream(prefix: &str) {
    let mut conn = redis().await;
    let _: Result<(), _> = redis::cmd("DEL").arg(format!("{prefix}events")).query_async(&mut conn).await;
}

fn entry_ids(entries: &[Entry]) -> Vec<i64> {
    entries.iter().map(|e| e.get("id").and_then(|i| i.parse().ok()).expect("entry has a numeric id")).collect()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stream_len_at_least(prefix: &str, n: usize) -> Vec<Entry> {
    eventually(&format!("{n} stream entries"), || async {
        let s = stream(prefix).await;
        (s.len() >= n).then_some(s)
    })
    .await
}

async fn record_n(outbox: &Outbox, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(outbox.record("test_event", json!({ "n": i })).await.expect("record"));
    }
    ids
}

async fn recorded_events_arrive_in_the_stream_in_order_with_their_fields(db: Db) {
    let prefix = prefix();
    let outbox = Outbox::new(db, "test-service");
    let relay = Running::start(&outbox, redis_sink(&redis_url(), &prefix), fast());
    let mut want = Vec::new();
    for (kind, payload) in [
        ("match_found", json!({ "match_id": "m1", "players": ["a", "b"] })),
        ("game_started", json!({ "match_id": "m1", "mode": "duel" })),
        ("game_ended", json!({ "match_id": "m1", "winner": null, "reason": "aborted" })),
    ] {
        let id = outbox.record(kind, payload.clone()).await.expect("record");
        want.push((id, kind, payload));
    }
    let entries = stream_len_at_least(&prefix, 3).await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    for (entry, (id, kind, payload)) in entries.iter().zip(&want) {
        assert_eq!(entry.get("id"), Some(&id.to_string()));
        assert_eq!(entry.get("kind").map(String::as_str), Some(*kind));
        assert_eq!(entry.get("source").map(String::as_str), Some("test-service"));
        let at: i64 = entry.get("at_ms").and_then(|a| a.parse().ok()).expect("at_ms");
        assert!(at > 1_700_000_000_000, "at_ms {at}");
        let got: serde_json::Value = serde_json::from_str(entry.get("payload").expect("payload")).expect("json payload");
        assert_eq!(&got, payload);
    }
    assert!(want.windows(2).all(|w| w[0].0 < w[1].0), "ids increase: {want:?}");
    eventually("rows marked published", || async { (outbox.pending().await.ok()? == 0).then_some(()) }).await;
    let rows = outbox.events_after(0, 10).await.expect("rows");
    assert!(rows.iter().all(|r| r.published_at_ms.is_some()), "{rows:?}");
    assert_eq!(relay.metrics.published.get(), 3);
    relay.stop().await;
    drop_stream(&prefix).await;
}

async fn while_redis_is_unreachable_nothing_is_lost_and_a_working_relay_publishes_each_once_in_order(db: Db) {
    let prefix = prefix();
    let outbox = Outbox::new(db, "test-service");
    // Port 1 on loopback: nothing listens there, so every publish fails.
    let down = Running::start(&outbox, redis_sink("redis://127.0.0.1:1", &prefix), fast());
    let ids = record_n(&outbox, 300).await;
    eventually("several failed attempts", || async { (down.metrics.publish_failures.get() >= 3).then_some(()) }).await;
    assert_eq!(outbox.pending().await.expect("pending"), 300);
    assert_eq!(down.metrics.published.get(), 0);
    down.stop().await;
    assert_eq!(outbox.pending().await.expect("pending"), 300, "the final flush marked nothing either");

    // Another relay on the same database, with a Redis that works (two batches of 256 + 44).
    let up = Running::start(&outbox, redis_sink(&redis_url(), &prefix), fast());
    stream_len_at_least(&prefix, 300).await;
    eventually("nothing pending", || async { (outbox.pending().await.ok()? == 0).then_some(()) }).await;
    up.stop().await;
    let entries = stream(&prefix).await;
    assert_eq!(entry_ids(&entries), ids, "every event once, in order");
    drop_stream(&prefix).await;
}

/// A TCP forwarder to the real Redis that the test can take down (closing every connection) and
/// bring back on the same port.
struct Proxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(addr: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let stop = CancellationToken::new();
        let target: SocketAddr = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .expect("test redis url is redis://host:port");
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut client, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Proxy { addr, stop }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn down(&self) {
        self.stop.cancel();
    }
}

async fn a_relay_recovers_when_redis_comes_back(db: Db) {
    let prefix = prefix();
    let outbox = Outbox::new(db, "test-service");
    let proxy = Proxy::start("127.0.0.1:0".parse().expect("addr")).await;
    let relay = Running::start(&outbox, redis_sink(&proxy.url(), &prefix), fast());
    let mut want = record_n(&outbox, 5).await;
    stream_len_at_least(&prefix, 5).await;

    proxy.down();
    // Let the listener go away before more events come.
    tokio::time::sleep(Duration::from_millis(100)).await;
    want.extend(record_n(&outbox, 5).await);
    eventually("a failed attempt", || async { (relay.metrics.publish_failures.get() >= 1).then_some(()) }).await;
    assert_eq!(outbox.pending().await.expect("pending"), 5);

    let back = Proxy::start(proxy.addr).await;
    let entries = stream_len_at_least(&prefix, 10).await;
    assert_eq!(entry_ids(&entries), want, "every event once, in order, after the outage");
    relay.stop().await;
    back.down();
    drop_stream(&prefix).await;
}

async fn concurrent_recorders_lose_nothing_and_publish_in_id_order(db: Db) {
    let outbox = Outbox::new(db, "test-service");
    let log = InProcessLog::new(10_000);
    let relay = Running::start(&outbox, Sink::InProcessLog(log.clone()), fast());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let outbox = outbox.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                ids.push(outbox.record("test_event", json!({ "task": t, "i": i })).await.expect("record"));
            }
            ids
        }));
    }
    let mut recorded = HashSet::new();
    for t in tasks {
        recorded.extend(t.await.expect("recorder"));
    }
    assert_eq!(recorded.len(), 320);
    eventually("320 events in the log", || async { (log.recent().len() >= 320).then_some(()) }).await;
    relay.stop().await;
    let published: Vec<i64> = log.recent().iter().map(|e| e.id).collect();
    assert_eq!(published.len(), 320, "each once");
    assert!(published.windows(2).all(|w| w[0] < w[1]), "published in id order");
    assert_eq!(published.into_iter().collect::<HashSet<_>>(), recorded);
}

async fn two_relays_on_one_database_lose_nothing(db: Db) {
    let prefix = prefix();
    // Two processes' outboxes on one database, each with its relay.
    let a = Outbox::new(db.clone(), "service-a");
    let b = Outbox::new(db, "service-b");
    let relay_a = Running::start(&a, redis_sink(&redis_url(), &prefix), fast());
    let relay_b = Running::start(&b, redis_sink(&redis_url(), &prefix), fast());
    let (ra, rb) = tokio::join!(record_n(&a, 100), record_n(&b, 100));
    let mut recorded: Vec<i64> = ra.into_iter().chain(rb).collect();
    recorded.sort_unstable();
    eventually("nothing pending", || async { (a.pending().await.ok()? == 0).then_some(()) }).await;
    relay_a.stop().await;
    relay_b.stop().await;
    let entries = stream(&prefix).await;
    // At least once: duplicates are allowed, and consumers dedupe by id. The first copy of each
    // id arrives in id order, and every id is there.
    let mut seen = HashSet::new();
    let first_copies: Vec<i64> = entry_ids(&entries).into_iter().filter(|id| seen.insert(*id)).collect();
    assert_eq!(first_copies, recorded);
    let sources: HashSet<String> = entries.iter().filter_map(|e| e.get("source").cloned()).collect();
    assert_eq!(sources, HashSet::from(["service-a".to_owned(), "service-b".to_owned()]));
    drop_stream(&prefix).await;
}

async fn the_in_process_log_keeps_the_latest_events_and_broadcasts_them(db: Db) {
    let outbox = Outbox::new(db, "test-service");
    let log = InProcessLog::new(3);
    let mut sub = log.subscribe();
    let relay = Running::start(&outbox, Sink::InProcessLog(log.clone()), fast());
    let ids = record_n(&outbox, 5).await;
    let last = log.wait_for(WAIT, |e| e.id == ids[4]).await.expect("the last event arrives");
    assert_eq!(last.kind, "test_event");
    assert_eq!(last.payload_json().expect("json"), json!({ "n": 4 }));
    let kept: Vec<i64> = log.recent().iter().map(|e| e.id).collect();
    assert_eq!(kept, ids[2..], "the ring keeps the latest 3");
    let mut broadcast = Vec::new();
    for _ in 0..5 {
        let e: Event = tokio::time::timeout(WAIT, sub.recv()).await.expect("in time").expect("broadcast");
        broadcast.push(e.id);
    }
    assert_eq!(broadcast, ids, "subscribers get every event in order");
    assert!(log.wait_for(Duration::from_millis(50), |e| e.id == ids[0]).await.is_none(), "evicted");
    relay.stop().await;
}

async fn retention_deletes_only_old_published_rows(db: Db) {
    let outbox = Outbox::new(db.clone(), "test-service");
    let ids = record_n(&outbox, 6).await;
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis(),
    )
    .expect("fits");
    // Rows 0-2 published long ago, row 3 published just now, rows 4-5 never published (and
    // recorded long ago, which must not matter).
    let day = 24 * 3600 * 1000;
    assert_eq!(outbox.mark_published(ids[0], ids[2], now - 2 * day).await.expect("mark"), 3);
    assert_eq!(outbox.mark_published(ids[3], ids[3], now).await.expect("mark"), 1);
    let old = "UPDATE events_outbox SET created_at_ms = $1 WHERE id >= $2";
    on_db!(&db, |pool| sqlx::query(old).bind(now - 10 * day).bind(ids[4]).execute(pool).await.map(drop)).expect("age rows");

    // Bounded batches: two rows, then the last old one, then nothing.
    assert_eq!(outbox.prune_published(now - day, 2).await.expect("prune"), 2);
    assert_eq!(outbox.prune_published(now - day, 2).await.expect("prune"), 1);
    assert_eq!(outbox.prune_published(now - day, 2).await.expect("prune"), 0);
    let left: Vec<i64> = outbox.events_after(0, 100).await.expect("rows").iter().map(|r| r.event.id).collect();
    assert_eq!(left, ids[3..]);

    // The relay prunes with its retention: a row published now stays under a 1 h retention.
    let relay = Running::start(
        &outbox,
        Sink::InProcessLog(InProcessLog::default()),
        RelayConfig { retention: Duration::from_secs(3600), prune_interval: Duration::from_millis(20), ..fast() },
    );
    eventually("published", || async { (outbox.pending().await.ok()? == 0).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left: Vec<i64> = outbox.events_after(0, 100).await.expect("rows").iter().map(|r| r.event.id).collect();
    assert_eq!(left, ids[3..], "recent published rows are kept");
    relay.stop().await;
    // With no retention at all, the relay deletes every published row.
    let relay = Running::start(
        &outbox,
        Sink::InProcessLog(InProcessLog::default()),
        RelayConfig { retention: Duration::ZERO, prune_interval: Duration::from_millis(20), ..fast() },
    );
    let extra = outbox.record("test_event", json!({})).await.expect("record");
    eventually("published rows pruned", || async {
        let rows = outbox.events_after(0, 100).await.ok()?;
        rows.is_empty().then_some(())
    })
    .await;
    relay.stop().await;
    assert!(extra > ids[5]);
}

async fn invalid_kinds_are_refused(db: Db) {
    let outbox = Outbox::new(db, "test-service");
    for kind in ["", "Game Started", "x;drop", &"a".repeat(65)] {
        let got = outbox.record(kind, json!({})).await;
        assert!(matches!(got, Err(OutboxError::InvalidKind(_))), "{kind:?}: {got:?}");
    }
    assert_eq!(outbox.pending().await.expect("pending"), 0);
}
