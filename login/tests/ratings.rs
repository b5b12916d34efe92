//! `/v1/account` with the player's ratings and recent matches, read from the real matchmaker read
//! API (`matchmaker::api::router`, a dev-dependency only) over the same test database, on real
//! Postgres and on SQLite; and the account still answering, with `ratings: null`, when the
//! matchmaker is not configured, unreachable or refuses login's token.

use login::{AppState, LoginConfig};
use matchmaker::ratings::Winner;
use matchmaker::store::{MatchResult, Recorded, ResultStore};
use migrations::Db;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod support;
use support::{Server, start};

migrations::both_backends!(
    the_account_shows_ratings_after_a_stored_result,
    the_account_answers_without_ratings_when_the_matchmaker_is_unreachable,
    the_account_answers_without_ratings_when_the_matchmaker_refuses_the_token,
    the_account_has_null_ratings_without_a_matchmaker,
);

const SERVICE_TOKEN: &str = "ratings-test-service-token-0123456789";

/// Stops what it names when dropped.
struct Stop(CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn test_config(matchmaker_api_url: Option<String>) -> LoginConfig {
    let mut c = support::test_config();
    c.service_token = Some(SERVICE_TOKEN.to_owned());
    c.matchmaker_api_url = matchmaker_api_url;
    c.matchmaker_api_timeout_ms = 2000;
    c
}

/// The matchmaker's read API on its own loopback listener, guarded by `token`; its base URL.
async fn start_matchmaker_api(db: Db, token: &str) -> (String, Stop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let (router, stop) = (matchmaker::api::router(db, token), shutdown.clone());
    tokio::spawn(async move { axum_serve(listener, router, stop).await });
    (base, Stop(shutdown))
}

async fn axum_serve(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
}

async fn account(login: &Server, session: &str) -> Value {
    let (s, body) = login.call(Method::GET, "/v1/account", Some(session), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

async fn the_account_shows_ratings_after_a_stored_result(db: Db) {
    let (api, _api) = start_matchmaker_api(db.clone(), SERVICE_TOKEN).await;
    let login = start(db.clone(), test_config(Some(format!("{api}/")))).await;
    let (me, session) = login.user("rated_player").await;

    // Before any match: known to the matchmaker as nobody, so empty lists, not null.
    let before = account(&login, &session).await;
    assert_eq!((&before["ratings"], &before["recent_matches"]), (&json!([]), &json!([])), "{before}");

    let store = ResultStore::new(db);
    let result = MatchResult {
        match_id: Uuid::new_v4(),
        mode: "duel".into(),
        region: "local".into(),
        created_at_ms: 1_700_000_000_000,
        ended_at_ms: 1_700_000_300_000,
        teams: [vec![me], vec![Uuid::new_v4()]],
        winner: Winner::Team(0),
        reason: "hero_destroyed".into(),
    };
    let recorded = store.record_result(&result, 1_700_000_300_001).await.expect("record");
    assert!(matches!(recorded, Recorded::Applied(_)), "{recorded:?}");

    let after = account(&login, &session).await;
    assert_eq!(after["user_id"], json!(me.to_string()));
    let ratings = after["ratings"].as_array().expect("ratings listed");
    assert_eq!(ratings.len(), 1, "{after}");
    let duel = &ratings[0];
    assert_eq!((&duel["mode"], &duel["games"], &duel["wins"], &duel["losses"]), (&json!("duel"), &json!(1), &json!(1), &json!(0)));
    let rating = duel["rating"].as_f64().expect("rating");
    assert!(rating > 1500.0, "a win raises the rating: {rating}");
    let recent = after["recent_matches"].as_array().expect("recent matches listed");
    assert_eq!(recent.len(), 1, "{after}");
    assert_eq!((&recent[0]["match_id"], &recent[0]["outcome"]), (&json!(result.match_id.to_string()), &json!("win")));
    assert_eq!(recent[0]["rating_before"].as_f64(), Some(1500.0));

    // The PATCH answer is the same account, ratings included.
    let (s, patched) = login.call(Method::PATCH, "/v1/account", Some(&session), Some(json!({"display_name": "Rated"}))).await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!((&patched["display_name"], &patched["ratings"]), (&json!("Rated"), &after["ratings"]));
}

async fn the_account_answers_without_ratings_when_the_matchmaker_is_unreachable(db: Db) {
    // A loopback port that nobody listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = closed.local_addr().expect("local addr");
    drop(closed);
    let login = start(db, test_config(Some(format!("http://{addr}")))).await;
    let (_, session) = login.user("lonely_player").await;
    let account = account(&login, &session).await;
    assert_eq!(account["username"], json!("lonely_player"));
    assert_eq!((&account["ratings"], &account["recent_matches"]), (&Value::Null, &Value::Null), "{account}");
}

async fn the_account_answers_without_ratings_when_the_matchmaker_refuses_the_token(db: Db) {
    let (api, _api) = start_matchmaker_api(db.clone(), "a-different-service-token-0123456789").await;
    let login = start(db, test_config(Some(api))).await;
    let (_, session) = login.user("refused_player").await;
    let account = account(&login, &session).await;
    assert_eq!((&account["ratings"], &account["recent_matches"]), (&Value::Null, &Value::Null), "{account}");
}

async fn the_account_has_null_ratings_without_a_matchmaker(db: Db) {
    let login = start(db.clone(), test_config(None)).await;
    let (_, session) = login.user("unrated_player").await;
    let account = account(&login, &session).await;
    assert_eq!(account["ratings"], Value::Null, "{account}");

    // The field is part of the public contract.
    let (s, doc) = login.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let account_props = &schemas["AccountResponse"]["properties"];
    assert!(account_props["ratings"].is_object() && account_props["recent_matches"].is_object(), "{account_props}");
    assert!(schemas["ModeRating"]["properties"]["rating"].is_object(), "{schemas}");
    assert!(schemas["RecentMatch"]["properties"]["outcome"].is_object(), "{schemas}");

    // A URL without a token to present is a config error, not a silent null.
    let mut config = test_config(Some("http://127.0.0.1:9104".to_owned()));
    config.service_token = None;
    let tokens = support::tokens(&db, &config);
    let err = AppState::new(config, db, tokens, &prometheus::Registry::new())
        .err()
        .expect("matchmaker_api_url without service_token is refused");
    assert!(err.to_string().contains("service_token"), "{err}");
}
