//! The matchmaker service end to end over its service link on loopback, with the real Postgres:
//! a GCS-side client queues tickets and receives `MatchFoundPush` with join tokens that verify;
//! cancel and status; expiry pushes; no capacity re-queues and a later match; result reports
//! acknowledged and stored once; a spawner whose binary fails re-queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use matchmaker::allocation::spawner::{ProcessSpawner, SpawnerConfig};
use matchmaker::allocation::{AllocError, Allocation, Allocator, HostRequest, InProcess, InstanceAddr, StaticPool};
use matchmaker::service::{self, AllocationConfig, MatchmakerConfig, Parts};
use matchmaker::store::ResultStore;
use migrations::testing::TestDb;
use protocol::ErrorCode;
use protocol::tavern::{
    CancelTicketT, EnqueueTicketT, GameOverReason, MatchFoundPushT, MatchResultT, PlayerInfoT, PlayerOutcome,
    PlayerResultT, QueueState, ServiceBodyT, ServiceMessageT, ServiceRole, TicketStatusRequestT, TicketStatusT,
    UuidT,
};
use token_service::{JoinVerifier, Keyring};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use transport::service_link::{ClientConfig, ServiceClient};
use uuid::Uuid;

const TOKEN: &str = "matchmaker-test-service-token";
const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    addr: std::net::SocketAddr,
    keyring: Keyring,
    store: ResultStore,
    stop: CancellationToken,
    running: Option<service::Running>,
    db: Option<TestDb>,
    registry: prometheus::Registry,
}

impl Harness {
    async fn start(allocator: Arc<dyn Allocator>, tweak: impl FnOnce(&mut MatchmakerConfig)) -> Harness {
        let db = TestDb::postgres().await;
        let keyring = Keyring::generate();
        let mut config = MatchmakerConfig {
            service_token: TOKEN.into(),
            tick_ms: 20,
            requeue_delay_ms: 100,
            allocation: AllocationConfig::InProcess,
            ..MatchmakerConfig::default()
        };
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let stop = CancellationToken::new();
        let registry = prometheus::Registry::new();
        let parts = Parts { db: db.db.clone(), keyring: keyring.clone(), allocator, registry: registry.clone() };
        let running = service::start(config, parts, listener, stop.clone()).await.expect("matchmaker starts");
        Harness {
            addr,
            keyring,
            store: ResultStore::new(db.db.clone()),
            stop,
            running: Some(running),
            db: Some(db),
            registry,
        }
    }

    fn client(&self, node: &str, role: ServiceRole) -> (ServiceClient, mpsc::Receiver<ServiceMessageT>) {
        let mut c = ClientConfig::new(self.addr.to_string(), node, role, TOKEN);
        c.backoff_initial = Duration::from_millis(20);
        ServiceClient::start(c, self.stop.clone())
    }

    async fn gcs(&self, node: &str) -> Gcs {
        let (client, pushes) = self.client(node, ServiceRole::Gcs);
        client.connected(WAIT).await.expect("gcs link up");
        Gcs { client, pushes, node: node.to_owned() }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(WAIT, r.wait()).await.expect("matchmaker drains");
        }
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
    }
}

struct Gcs {
    client: ServiceClient,
    pushes: mpsc::Receiver<ServiceMessageT>,
    node: String,
}

fn wire(id: Uuid) -> UuidT {
    UuidT::from_bytes(id.into_bytes())
}

impl Gcs {
    async fn enqueue(&self, ticket: Uuid, users: &[Uuid], mode: &str) -> ServiceMessageT {
        let players = users
            .iter()
            .map(|u| protocol::build!(PlayerInfoT { user_id: wire(*u), username: format!("user-{}", &u.to_string()[..8]) }))
            .collect();
        let e = protocol::build!(EnqueueTicketT {
            ticket_id: wire(ticket),
            players: Some(players),
            mode: mode.to_owned(),
            gcs_node_id: self.node.clone(),
        });
        self.client.request(ServiceBodyT::EnqueueTicket(Box::new(e)), WAIT).await.expect("enqueue answered")
    }

    async fn status(&self, ticket: Uuid) -> TicketStatusT {
        let r = protocol::build!(TicketStatusRequestT { ticket_id: wire(ticket) });
        let answer = self.client.request(ServiceBodyT::TicketStatusRequest(Box::new(r)), WAIT).await.expect("status");
        status_of(answer)
    }

    async fn cancel(&self, ticket: Uuid) -> ServiceMessageT {
        let c = protocol::build!(CancelTicketT { ticket_id: wire(ticket) });
        self.client.request(ServiceBodyT::CancelTicket(Box::new(c)), WAIT).await.expect("cancel answered")
    }

    /// The next push that satisfies `pick`, acknowledging pushes that ask for it; others are
    /// collected into `skipped`.
    async fn next_push<T>(
        &mut self,
        mut pick: impl FnMut(&ServiceBodyT) -> Option<T>,
        skipped: &mut Vec<ServiceBodyT>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let push = tokio::time::timeout_at(deadline, self.pushes.recv())
                .await
                .unwrap_or_else(|_| panic!("no expected push in time; saw {skipped:?}"))
                .expect("push channel open");
            if push.cid != 0 {
                self.client.send(&ServiceMessageT::ack(push.cid)).expect("ack the push");
            }
            if let Some(t) = pick(&push.body) {
                return t;
            }
            skipped.push(push.body);
        }
    }

    async fn match_found(&mut self) -> MatchFoundPushT {
        let mut skipped = Vec::new();
        self.next_push(|b| if let ServiceBodyT::MatchFoundPush(m) = b { Some((**m).clone()) } else { None }, &mut skipped)
            .await
    }
}

fn status_of(m: ServiceMessageT) -> TicketStatusT {
    match m.body {
        ServiceBodyT::TicketStatus(s) => *s,
        other => panic!("expected a ticket status, got {other:?}"),
    }
}

fn error_code(m: &ServiceMessageT) -> Option<u16> {
    match &m.body {
        ServiceBodyT::Error(e) => Some(e.code),
        _ => None,
    }
}

fn one_instance(name: &str) -> Allocation {
    Allocation {
        instance_id: name.to_owned(),
        address: InstanceAddr { host: "127.0.0.1".into(), udp_port: 7501, ws_url: Some("ws://127.0.0.1:7501/ws".into()) },
    }
}

fn now_ms() -> i64 {
    service_runtime::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tickets_are_matched_with_join_tokens_that_verify() {
    let h = Harness::start(Arc::new(StaticPool::new(vec![one_instance("static-a")])), |_| {}).await;
    let mut gcs = h.gcs("gcs-a").await;
    let (t1, t2, u1, u2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let s1 = status_of(gcs.enqueue(t1, &[u1], "duel").await);
    assert_eq!((s1.state, s1.position), (QueueState::Searching, 1));
    // A repeated enqueue is idempotent; the same user in another ticket is refused.
    assert_eq!(status_of(gcs.enqueue(t1, &[u1], "duel").await).state, QueueState::Searching);
    assert_eq!(error_code(&gcs.enqueue(Uuid::new_v4(), &[u1], "duel").await), Some(ErrorCode::AlreadyQueued.code()));
    assert_eq!(error_code(&gcs.enqueue(Uuid::new_v4(), &[u2], "chess").await), Some(ErrorCode::UnknownMode.code()));
    gcs.enqueue(t2, &[u2], "duel").await;

    let found = gcs.match_found().await;
    let match_id = Uuid::from_bytes(found.match_id.to_bytes());
    assert_eq!(found.mode, "duel");
    assert_eq!((found.instance.instance_id.as_str(), found.instance.udp_port), ("static-a", 7501));
    let players = found.players.clone().unwrap_or_default();
    assert_eq!(players.len(), 2);
    let verifier = JoinVerifier::new(h.keyring.clone(), 100);
    let mut seen = Vec::new();
    for p in &players {
        let user = Uuid::from_bytes(p.player.user_id.to_bytes());
        let claims = verifier.verify(&p.join_token, match_id, "static-a", now_ms()).expect("join token verifies");
        assert_eq!(claims.user_id, user);
        seen.push((user, Uuid::from_bytes(p.ticket_id.to_bytes()), p.team));
    }
    seen.sort();
    let mut want = [(u1, t1), (u2, t2)];
    want.sort();
    assert_eq!(seen.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), want);
    assert_ne!(seen[0].2, seen[1].2, "one player per team");
    assert!(found.join_by_ms > now_ms());

    // The metrics of DESIGN.md §8 are exported under their names.
    let names: Vec<String> = h.registry.gather().iter().map(|f| f.name().to_owned()).collect();
    for want in [
        "tavern_matchmaker_queue_tickets",
        "tavern_matchmaker_tick_duration_seconds",
        "tavern_matchmaker_matches_total",
        "tavern_matchmaker_wait_duration_seconds",
        "tavern_matchmaker_allocation_duration_seconds",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_is_told_about_its_own_players_and_parties_stay_together() {
    let h = Harness::start(Arc::new(StaticPool::new(vec![one_instance("static-p")])), |_| {}).await;
    let mut a = h.gcs("gcs-party").await;
    let mut b = h.gcs("gcs-solo").await;
    let (p1, p2, s1, s2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let party = Uuid::new_v4();
    assert_eq!(status_of(a.enqueue(party, &[p1, p2], "duo").await).state, QueueState::Searching);
    b.enqueue(Uuid::new_v4(), &[s1], "duo").await;
    b.enqueue(Uuid::new_v4(), &[s2], "duo").await;
    let (fa, fb) = (a.match_found().await, b.match_found().await);
    assert_eq!(fa.match_id, fb.match_id);
    // Each node hears of all four players (its players' opponents too) but holds the join
    // tokens of its own players only.
    for f in [&fa, &fb] {
        assert_eq!(f.players.as_ref().map(Vec::len), Some(4), "every player is listed");
    }
    let users = |f: &MatchFoundPushT| {
        let mut u: Vec<(Uuid, u8)> = f
            .players
            .clone()
            .unwrap_or_default()
            .iter()
            .filter(|p| !p.join_token.is_empty())
            .map(|p| (Uuid::from_bytes(p.player.user_id.to_bytes()), p.team))
            .collect();
        u.sort();
        u
    };
    let (ua, ub) = (users(&fa), users(&fb));
    assert_eq!(ua.iter().map(|u| u.0).collect::<std::collections::BTreeSet<_>>(), [p1, p2].into());
    assert_eq!(ub.iter().map(|u| u.0).collect::<std::collections::BTreeSet<_>>(), [s1, s2].into());
    assert_eq!(ua[0].1, ua[1].1, "the party is on one team");
    assert!(ub.iter().all(|u| u.1 != ua[0].1), "the solos are the other team");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_push_is_sent_again_until_acknowledged() {
    let h = Harness::start(Arc::new(StaticPool::new(vec![one_instance("static-r")])), |_| {}).await;
    let mut gcs = h.gcs("gcs-r").await;
    gcs.enqueue(Uuid::new_v4(), &[Uuid::new_v4()], "duel").await;
    gcs.enqueue(Uuid::new_v4(), &[Uuid::new_v4()], "duel").await;
    // Take the first push without acknowledging it.
    let first = tokio::time::timeout(WAIT, gcs.pushes.recv()).await.expect("push").expect("open");
    let ServiceBodyT::MatchFoundPush(m1) = &first.body else { panic!("expected a match push, got {first:?}") };
    assert_ne!(first.cid, 0, "a match push asks for an ack");
    let again = gcs.match_found().await;
    assert_eq!(again.match_id, m1.match_id, "the same match, sent again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_frees_the_ticket_and_status_follows_it() {
    let h = Harness::start(Arc::new(StaticPool::new(vec![one_instance("static-b")])), |_| {}).await;
    let gcs = h.gcs("gcs-b").await;
    let (t1, u1) = (Uuid::new_v4(), Uuid::new_v4());
    gcs.enqueue(t1, &[u1], "duel").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = gcs.status(t1).await;
    assert_eq!((s.state, s.position), (QueueState::Searching, 1));
    assert!(s.waited_ms >= 50, "waited {} ms", s.waited_ms);
    assert!(matches!(gcs.cancel(t1).await.body, ServiceBodyT::Ack(_)));
    assert_eq!(gcs.status(t1).await.state, QueueState::Idle);
    // Cancelling an unknown ticket is acknowledged too.
    assert!(matches!(gcs.cancel(Uuid::new_v4()).await.body, ServiceBodyT::Ack(_)));
    // The user may queue again at once, and the cancelled ticket is never matched with them.
    let t2 = Uuid::new_v4();
    assert_eq!(status_of(gcs.enqueue(t2, &[u1], "duel").await).state, QueueState::Searching);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gcs.status(t2).await.state, QueueState::Searching, "alone in the queue");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_pushed_to_its_node() {
    let h = Harness::start(Arc::new(StaticPool::new(Vec::new())), |c| c.ticket_ttl_s = 1).await;
    let mut gcs = h.gcs("gcs-c").await;
    let (t1, u1) = (Uuid::new_v4(), Uuid::new_v4());
    gcs.enqueue(t1, &[u1], "duel").await;
    let mut skipped = Vec::new();
    let expired = gcs
        .next_push(|b| if let ServiceBodyT::TicketExpired(e) = b { Some((**e).clone()) } else { None }, &mut skipped)
        .await;
    assert_eq!(expired.ticket_id, wire(t1));
    assert_eq!(expired.user_ids, Some(vec![wire(u1)]));
    assert_eq!(gcs.status(t1).await.state, QueueState::Idle);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_requeues_and_the_match_is_made_when_capacity_returns() {
    let (alloc, mut host) = InProcess::new(16, Duration::from_secs(5));
    let refusals = Arc::new(AtomicUsize::new(0));
    let refused = Arc::clone(&refusals);
    tokio::spawn(async move {
        while let Some(req) = host.recv().await {
            if let HostRequest::Allocate { spec, reply } = req {
                // The first two allocations find no capacity.
                let n = refused.fetch_add(1, Ordering::SeqCst);
                let _ = reply.send(if n < 2 {
                    Err(AllocError::NoCapacity)
                } else {
                    Ok(Allocation {
                        instance_id: format!("inproc-{}", spec.match_id),
                        address: InstanceAddr { host: "127.0.0.1".into(), udp_port: 7600, ws_url: None },
                    })
                });
            }
        }
    });
    let h = Harness::start(Arc::new(alloc), |_| {}).await;
    let mut gcs = h.gcs("gcs-d").await;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    gcs.enqueue(t1, &[Uuid::new_v4()], "duel").await;
    gcs.enqueue(t2, &[Uuid::new_v4()], "duel").await;
    let enqueued_at = now_ms();

    let mut skipped = Vec::new();
    let found = gcs
        .next_push(|b| if let ServiceBodyT::MatchFoundPush(m) = b { Some((**m).clone()) } else { None }, &mut skipped)
        .await;
    assert!(found.instance.instance_id.starts_with("inproc-"));
    assert_eq!(refusals.load(Ordering::SeqCst), 3, "two refusals, then the allocation");
    // Each refusal told the node both tickets are searching again, with their waits kept.
    let searching: Vec<&TicketStatusT> = skipped
        .iter()
        .filter_map(|b| if let ServiceBodyT::TicketStatus(s) = b { Some(&**s) } else { None })
        .collect();
    assert_eq!(searching.len(), 4, "{skipped:?}");
    assert!(searching.iter().all(|s| s.state == QueueState::Searching));
    let last_wait = searching.iter().map(|s| s.waited_ms).max().unwrap_or(0);
    assert!(i64::from(last_wait) >= 100, "the second refusal came after a re-queue delay: {last_wait} ms");
    assert!(now_ms() - enqueued_at >= 200, "two re-queue delays passed");
    assert_eq!(h.running.as_ref().map(|r| r.metrics().requeued.get()), Some(4));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_acknowledged_and_stored_once() {
    let h = Harness::start(Arc::new(StaticPool::new(vec![one_instance("static-e")])), |_| {}).await;
    let mut gcs = h.gcs("gcs-e").await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    gcs.enqueue(Uuid::new_v4(), &[u1], "duel").await;
    gcs.enqueue(Uuid::new_v4(), &[u2], "duel").await;
    let found = gcs.match_found().await;
    let players = found.players.clone().unwrap_or_default();
    let team_of = |u: Uuid| players.iter().find(|p| p.player.user_id == wire(u)).map(|p| p.team).unwrap_or(9);

    let (instance, _pushes) = h.client("instance-e", ServiceRole::Instance);
    instance.connected(WAIT).await.expect("instance link up");
    let result = protocol::build!(MatchResultT {
        match_id: found.match_id.clone(),
        mode: Some("duel".into()),
        winner: Some(wire(u1)),
        reason: GameOverReason::HeroDefeated,
        players: Some(vec![
            protocol::build!(PlayerResultT { user_id: wire(u1), outcome: PlayerOutcome::Win, team: team_of(u1) }),
            protocol::build!(PlayerResultT { user_id: wire(u2), outcome: PlayerOutcome::Loss, team: team_of(u2) }),
        ]),
        duration_ms: 60_000,
        ended_at_ms: now_ms(),
        instance_id: Some("static-e".into()),
    });
    // Three reports, two of them at once: every one is acknowledged.
    let send = |r: MatchResultT| {
        let instance = instance.clone();
        async move { instance.request(ServiceBodyT::MatchResult(Box::new(r)), WAIT).await.expect("answered") }
    };
    let (a, b) = tokio::join!(send(result.clone()), send(result.clone()));
    let c = send(result.clone()).await;
    for answer in [a, b, c] {
        match answer.body {
            ServiceBodyT::MatchResultAck(ack) => assert_eq!(ack.match_id, found.match_id),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    let match_id = Uuid::from_bytes(found.match_id.to_bytes());
    let stored = h.store.stored_match(match_id).await.expect("read").expect("stored");
    assert_eq!((stored.mode.as_str(), stored.region.as_str(), stored.reason.as_str()), ("duel", "local", "hero_defeated"));
    assert_eq!(stored.players.len(), 2);
    assert_eq!(h.store.games(u1, "duel").await.expect("games"), 1, "applied exactly once");
    assert_eq!(h.store.games(u2, "duel").await.expect("games"), 1);
    let ratings = h.store.read_ratings(&[u1, u2], "duel").await.expect("ratings");
    assert!(ratings[0].rating > 1500.0 && ratings[1].rating < 1500.0);

    // The result freed the static instance: the next two players get it.
    gcs.enqueue(Uuid::new_v4(), &[Uuid::new_v4()], "duel").await;
    gcs.enqueue(Uuid::new_v4(), &[Uuid::new_v4()], "duel").await;
    assert_eq!(gcs.match_found().await.instance.instance_id, "static-e");

    // A GCS may not report results; an instance may not queue.
    let bad = gcs.client.request(ServiceBodyT::MatchResult(Box::new(result)), WAIT).await.expect("answered");
    assert_eq!(error_code(&bad), Some(ErrorCode::UnexpectedMessage.code()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawner_whose_binary_fails_requeues_the_match() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-instance.sh");
    let spawner = ProcessSpawner::start(SpawnerConfig {
        program: "/bin/sh".into(),
        args: vec![script.into(), "{port}".into(), "{instance_id}".into(), "fail".into()],
        first_port: 47_100,
        warm: 0,
        max_processes: 2,
        ready_timeout_ms: 2_000,
        ..SpawnerConfig::default()
    });
    let h = Harness::start(Arc::new(spawner), |_| {}).await;
    let mut gcs = h.gcs("gcs-f").await;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    gcs.enqueue(t1, &[Uuid::new_v4()], "duel").await;
    gcs.enqueue(t2, &[Uuid::new_v4()], "duel").await;
    let mut skipped = Vec::new();
    let requeued = gcs
        .next_push(|b| if let ServiceBodyT::TicketStatus(s) = b { Some((**s).clone()) } else { None }, &mut skipped)
        .await;
    assert_eq!(requeued.state, QueueState::Searching);
    assert!(requeued.ticket_id == wire(t1) || requeued.ticket_id == wire(t2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still queued (or matched again and being allocated), never dropped.
    for t in [t1, t2] {
        let s = gcs.status(t).await.state;
        assert!(s == QueueState::Searching || s == QueueState::Matched, "{s:?}");
    }
    let failures = h
        .running
        .as_ref()
        .map(|r| r.metrics().allocation_failures.with_label_values(&["process", "failed"]).get())
        .unwrap_or(0);
    assert!(failures >= 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_match_is_recorded_as_match_found_in_the_outbox() {
    let h = Harness::start(Arc::new(StaticPool::new(vec![one_instance("static-a")])), |_| {}).await;
    let mut gcs = h.gcs("gcs-a").await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    gcs.enqueue(Uuid::new_v4(), &[u1], "duel").await;
    gcs.enqueue(Uuid::new_v4(), &[u2], "duel").await;
    let found = gcs.match_found().await;
    let match_id = Uuid::from_bytes(found.match_id.to_bytes()).to_string();
    let db = h.db.as_ref().expect("the harness holds its database").db.clone();
    let outbox = outbox::Outbox::new(db, "test");
    // The row is written right after the pushes start, so it may trail the push a little.
    let deadline = tokio::time::Instant::now() + WAIT;
    let event = loop {
        let rows = outbox.events_after(0, 100).await.expect("outbox rows");
        if let Some(r) = rows.into_iter().find(|r| r.event.kind == "match_found") {
            break r.event;
        }
        assert!(tokio::time::Instant::now() < deadline, "no match_found recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event.source, "matchmaker");
    let p = event.payload_json().expect("json payload");
    assert_eq!(p["match_id"], match_id.as_str(), "{p}");
    assert_eq!(p["mode"], "duel", "{p}");
    assert_eq!(p["instance"]["instance_id"], "static-a", "{p}");
    assert_eq!(p["instance"]["udp_port"], 7501, "{p}");
    let mut users: Vec<String> = p["players"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["user_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    users.sort();
    let mut want = vec![u1.to_string(), u2.to_string()];
    want.sort();
    assert_eq!(users, want, "{p}");
    h.stop().await;
}
