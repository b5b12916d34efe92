//! The matchmaker's internal read API (`matchmaker::api`) over a real listener, on the real
//! Postgres and on SQLite: the service token gate, a new player's empty answer, ratings, records
//! and recent matches after results stored through the `ResultStore`, and the merge with the
//! admin routes that the service does.

use matchmaker::api::{self, PlayerRatings};
use matchmaker::ratings::Winner;
use matchmaker::store::{MatchResult, Recorded, ResultStore};
use migrations::Db;
use reqwest::StatusCode;
use serde_json::Value;
use service_runtime::admin::Admin;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

migrations::both_backends!(
    every_request_needs_the_service_token,
    a_new_player_has_empty_lists,
    ratings_and_recent_matches_follow_stored_results,
    bad_input_is_refused_with_a_code,
    the_api_merges_into_the_admin_routes,
);

const TOKEN: &str = "matchmaker-api-test-token-0123456789";
const T0: i64 = 1_700_000_000_000;

/// A server for the test's lifetime; dropping it stops the server.
struct Server {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(router: axum::Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await });
    Server { base, http: reqwest::Client::new(), shutdown }
}

impl Server {
    /// GETs `path` with `bearer`; the status and the JSON body (`Null` when not JSON).
    async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn player(&self, user: Uuid, query: &str) -> PlayerRatings {
        let (status, body) = self.get(&format!("/internal/v1/players/{user}/ratings{query}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).expect("a PlayerRatings body")
    }
}

fn result(a: Uuid, b: Uuid, winner: Winner, mode: &str, ended_at_ms: i64) -> MatchResult {
    MatchResult {
        match_id: Uuid::new_v4(),
        mode: mode.into(),
        region: "local".into(),
        created_at_ms: T0,
        ended_at_ms,
        teams: [vec![a], vec![b]],
        winner,
        reason: "hero_destroyed".into(),
    }
}

async fn record(store: &ResultStore, r: &MatchResult) {
    let recorded = store.record_result(r, r.ended_at_ms + 1).await.expect("record");
    assert!(matches!(recorded, Recorded::Applied(_)), "{recorded:?}");
}

async fn every_request_needs_the_service_token(db: Db) {
    let server = serve(api::router(db.clone(), TOKEN)).await;
    let path = format!("/internal/v1/players/{}/ratings", Uuid::new_v4());
    let check = |bearer: Option<&'static str>, status: StatusCode, error: &'static str| {
        let (server, path) = (&server, &path);
        async move {
            let (s, body) = server.get(path, bearer).await;
            assert_eq!((s, body["error"].as_str()), (status, Some(error)), "bearer {bearer:?}: {body}");
        }
    };
    check(None, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    check(Some("not-the-service-token-at-all-000"), StatusCode::UNAUTHORIZED, "token_invalid").await;
    check(Some(&TOKEN[..TOKEN.len() - 1]), StatusCode::UNAUTHORIZED, "token_invalid").await;

    // Without a configured token the API is off, whatever the caller presents.
    let off = serve(api::router(db, "  ")).await;
    let (s, body) = off.get(&path, Some(TOKEN)).await;
    assert_eq!((s, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{body}");
}

async fn a_new_player_has_empty_lists(db: Db) {
    let server = serve(api::router(db, TOKEN)).await;
    let user = Uuid::new_v4();
    let player = server.player(user, "").await;
    assert_eq!(player, PlayerRatings { user_id: user, ratings: vec![], recent_matches: vec![] });
}

async fn ratings_and_recent_matches_follow_stored_results(db: Db) {
    let store = ResultStore::new(db.clone());
    let server = serve(api::router(db, TOKEN)).await;
    let (me, rival, partner) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let won = result(me, rival, Winner::Team(0), "duel", T0 + 1_000);
    let lost = result(rival, me, Winner::Team(0), "duel", T0 + 2_000);
    let drawn = result(me, rival, Winner::Draw, "duel", T0 + 3_000);
    let other_mode = result(partner, me, Winner::Team(1), "duo", T0 + 4_000);
    let not_mine = result(rival, partner, Winner::Team(0), "duel", T0 + 5_000);
    for r in [&won, &lost, &drawn, &other_mode, &not_mine] {
        record(&store, r).await;
    }

    let player = server.player(me, "").await;
    assert_eq!(player.user_id, me);
    let modes: Vec<(&str, i64, i64, i64, i64)> =
        player.ratings.iter().map(|r| (r.mode.as_str(), r.games, r.wins, r.losses, r.draws)).collect();
    assert_eq!(modes, vec![("duel", 3, 1, 1, 1), ("duo", 1, 1, 0, 0)]);
    // The same rating the matchmaker matches with.
    let stored = store.read_ratings(&[me], "duel").await.expect("read")[0];
    let duel = &player.ratings[0];
    // JSON keeps about 17 significant digits, and serde_json's default parser may miss the last.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(
        close(duel.rating, stored.rating) && close(duel.deviation, stored.deviation) && close(duel.volatility, stored.volatility),
        "{duel:?} is not {stored:?}"
    );
    assert_eq!(duel.updated_at_ms, T0 + 3_001, "the last duel result changed it");

    // Newest first, this player's side of each match, nobody else's matches.
    let recent: Vec<(Uuid, &str, &str)> =
        player.recent_matches.iter().map(|m| (m.match_id, m.mode.as_str(), m.outcome.as_str())).collect();
    assert_eq!(
        recent,
        vec![(other_mode.match_id, "duo", "win"), (drawn.match_id, "duel", "draw"), (lost.match_id, "duel", "loss"), (won.match_id, "duel", "win")]
    );
    let first_win = &player.recent_matches[3];
    assert_eq!((first_win.rating_before, first_win.ended_at_ms, first_win.reason.as_str()), (1500.0, T0 + 1_000, "hero_destroyed"));
    assert!(first_win.rating_after > first_win.rating_before);
    let duo = &player.recent_matches[0];
    assert_eq!(duo.rating_after, player.ratings[1].rating);

    // `recent` bounds the history; the ratings stay whole.
    let two = server.player(me, "?recent=2").await;
    assert_eq!(two.recent_matches, player.recent_matches[..2]);
    assert_eq!(two.ratings, player.ratings);
    assert!(server.player(me, "?recent=0").await.recent_matches.is_empty());
}

async fn bad_input_is_refused_with_a_code(db: Db) {
    let server = serve(api::router(db, TOKEN)).await;
    let user = Uuid::new_v4();
    for path in [
        "/internal/v1/players/not-a-uuid/ratings".to_owned(),
        format!("/internal/v1/players/{user}/ratings?recent=51"),
        format!("/internal/v1/players/{user}/ratings?recent=-1"),
        format!("/internal/v1/players/{user}/ratings?other=1"),
    ] {
        let (s, body) = server.get(&path, Some(TOKEN)).await;
        assert_eq!((s, body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_field")), "{path}: {body}");
    }
}

async fn the_api_merges_into_the_admin_routes(db: Db) {
    // What `matchmaker::run` serves on `admin_bind`, and what the launcher can do likewise.
    let admin = Admin::new(prometheus::Registry::new());
    let server = serve(admin.router().merge(api::router(db, TOKEN))).await;
    let resp = server.http.get(format!("{}/healthz", server.base)).send().await.expect("healthz");
    assert_eq!(resp.status(), StatusCode::OK);
    let user = Uuid::new_v4();
    assert!(server.player(user, "").await.ratings.is_empty());
    let (s, _) = server.get(&format!("/internal/v1/players/{user}/ratings"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
