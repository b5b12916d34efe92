//! Login's internal API for trusted services (`/internal/v1`) over a real listener, on real
//! Postgres and on SQLite: the service token gate, the social graph through friend and block
//! changes made with the public API, and username lookups.

use login::{AppState, LoginConfig};
use migrations::Db;
use protocol::ErrorCode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::{Server, check_error, start};

const SERVICE_TOKEN: &str = "internal-test-service-token-0123456789";

fn test_config(service_token: Option<&str>) -> LoginConfig {
    let mut c = support::test_config();
    c.service_token = service_token.map(str::to_owned);
    c
}

/// Registers `username`; (user id, session token), the id as the string the JSON carries.
async fn register(srv: &Server, username: &str) -> (String, String) {
    let (id, token) = srv.user(username).await;
    (id.to_string(), token)
}

async fn social(srv: &Server, user_id: &str) -> Value {
    let (s, body) = srv.call(Method::GET, &format!("/internal/v1/users/{user_id}/social"), Some(SERVICE_TOKEN), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

/// A user action through the public API that must succeed.
async fn act(srv: &Server, method: Method, path: &str, token: &str, body: Option<Value>) {
    let (s, resp) = srv.call(method, path, Some(token), body).await;
    assert!(s.is_success(), "{path}: {s} {resp}");
}

fn str_of(v: &Value) -> String {
    v.as_str().expect("a string field").to_owned()
}

/// The friend ids and names of a social answer, in the order given.
fn friends_of(social: &Value) -> Vec<(String, String)> {
    social["friends"]
        .as_array()
        .expect("friends array")
        .iter()
        .map(|f| (str_of(&f["user_id"]), str_of(&f["username"])))
        .collect()
}

fn ids_of(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v.as_array().expect("an id array").iter().map(str_of).collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn internal_routes_need_the_service_token(db: Db) {
    let srv = start(db, test_config(Some(SERVICE_TOKEN))).await;
    let (alice, session) = register(&srv, "alice").await;
    let social = format!("/internal/v1/users/{alice}/social");
    let lookup = "/internal/v1/users/lookup";
    let ids = json!({"user_ids": [alice]});

    check_error(srv.call(Method::GET, &social, None, None).await, ErrorCode::Unauthenticated);
    check_error(srv.call(Method::POST, lookup, None, Some(ids.clone())).await, ErrorCode::Unauthenticated);
    check_error(srv.call(Method::GET, &social, Some("internal-test-service-token-012345678X"), None).await, ErrorCode::TokenInvalid);
    check_error(srv.call(Method::POST, lookup, Some("short"), Some(ids.clone())).await, ErrorCode::TokenInvalid);
    // A user's session token is no service token.
    check_error(srv.call(Method::GET, &social, Some(&session), None).await, ErrorCode::TokenInvalid);

    let (s, body) = srv.call(Method::GET, &social, Some(SERVICE_TOKEN), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"user_id": alice, "username": "alice", "friends": [], "blocked": [], "blocked_by": []}));

    // The internal routes are not part of the public contract.
    let (s, doc) = srv.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("openapi paths");
    assert!(!paths.is_empty() && paths.keys().all(|p| !p.contains("internal")), "{:?}", paths.keys());
}

async fn internal_routes_are_off_without_a_service_token(db: Db) {
    let srv = start(db, test_config(None)).await;
    let (alice, _) = register(&srv, "alice").await;
    for bearer in [None, Some(SERVICE_TOKEN), Some("")] {
        check_error(
            srv.call(Method::GET, &format!("/internal/v1/users/{alice}/social"), bearer, None).await,
            ErrorCode::Forbidden,
        );
        check_error(
            srv.call(Method::POST, "/internal/v1/users/lookup", bearer, Some(json!({"user_ids": [alice]}))).await,
            ErrorCode::Forbidden,
        );
    }
}

async fn social_graph_follows_friend_and_block_changes(db: Db) {
    let srv = start(db, test_config(Some(SERVICE_TOKEN))).await;
    let (alice, ta) = register(&srv, "alice").await;
    let (bob, tb) = register(&srv, "bob").await;
    let (carol, tc) = register(&srv, "carol").await;
    let (dave, td) = register(&srv, "dave").await;

    // A pending request makes nobody a friend.
    act(&srv, Method::POST, "/v1/friends/requests", &ta, Some(json!({"user_id": bob}))).await;
    act(&srv, Method::POST, "/v1/friends/requests", &tc, Some(json!({"username": "alice"}))).await;
    assert!(friends_of(&social(&srv, &alice).await).is_empty());
    assert!(friends_of(&social(&srv, &bob).await).is_empty());

    // Accepting makes both sides friends, ordered by name.
    act(&srv, Method::POST, &format!("/v1/friends/requests/{alice}/accept"), &tb, None).await;
    act(&srv, Method::POST, &format!("/v1/friends/requests/{carol}/accept"), &ta, None).await;
    let a = social(&srv, &alice).await;
    assert_eq!(a["username"], "alice");
    assert_eq!(friends_of(&a), vec![(bob.clone(), "bob".to_owned()), (carol.clone(), "carol".to_owned())]);
    assert_eq!(friends_of(&social(&srv, &bob).await), vec![(alice.clone(), "alice".to_owned())]);
    assert_eq!(friends_of(&social(&srv, &carol).await), vec![(alice.clone(), "alice".to_owned())]);

    // Removal from either side ends the friendship for both.
    act(&srv, Method::DELETE, &format!("/v1/friends/{alice}"), &tc, None).await;
    assert_eq!(friends_of(&social(&srv, &alice).await), vec![(bob.clone(), "bob".to_owned())]);
    assert!(friends_of(&social(&srv, &carol).await).is_empty());

    // Blocks show on both sides: `blocked` for the blocker, `blocked_by` for the blocked.
    act(&srv, Method::POST, "/v1/blocks", &td, Some(json!({"user_id": alice}))).await;
    act(&srv, Method::POST, "/v1/blocks", &ta, Some(json!({"user_id": bob}))).await;
    let a = social(&srv, &alice).await;
    assert!(friends_of(&a).is_empty(), "a block ends the friendship: {a}");
    assert_eq!(ids_of(&a["blocked"]), vec![bob.clone()]);
    assert_eq!(ids_of(&a["blocked_by"]), vec![dave.clone()]);
    let b = social(&srv, &bob).await;
    assert!(friends_of(&b).is_empty());
    assert_eq!(ids_of(&b["blocked"]), Vec::<String>::new());
    assert_eq!(ids_of(&b["blocked_by"]), vec![alice.clone()]);
    let d = social(&srv, &dave).await;
    assert_eq!(ids_of(&d["blocked"]), vec![alice.clone()]);
    assert_eq!(ids_of(&d["blocked_by"]), Vec::<String>::new());
    act(&srv, Method::POST, "/v1/blocks", &tc, Some(json!({"user_id": alice}))).await;
    assert_eq!(ids_of(&social(&srv, &alice).await["blocked_by"]), sorted(vec![carol.clone(), dave.clone()]));

    // Unblocking clears both views.
    act(&srv, Method::DELETE, &format!("/v1/blocks/{alice}"), &td, None).await;
    assert_eq!(ids_of(&social(&srv, &alice).await["blocked_by"]), vec![carol.clone()]);
    assert_eq!(ids_of(&social(&srv, &dave).await["blocked"]), Vec::<String>::new());

    // An unknown user is `user_not_found`; a malformed id is refused.
    let unknown = uuid::Uuid::new_v4();
    check_error(
        srv.call(Method::GET, &format!("/internal/v1/users/{unknown}/social"), Some(SERVICE_TOKEN), None).await,
        ErrorCode::UserNotFound,
    );
    let (s, _) = srv.call(Method::GET, "/internal/v1/users/not-a-uuid/social", Some(SERVICE_TOKEN), None).await;
    assert!(s.is_client_error(), "{s}");
}

async fn lookup_names_known_users_once(db: Db) {
    let srv = start(db, test_config(Some(SERVICE_TOKEN))).await;
    let (alice, _) = register(&srv, "Alice").await;
    let (bob, _) = register(&srv, "bob").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let lookup = "/internal/v1/users/lookup";

    let (s, body) =
        srv.call(Method::POST, lookup, Some(SERVICE_TOKEN), Some(json!({"user_ids": [bob, unknown, alice, bob]}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let mut users: Vec<(String, String)> = body["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| (str_of(&u["user_id"]), str_of(&u["username"])))
        .collect();
    users.sort();
    let mut expected = vec![(alice.clone(), "Alice".to_owned()), (bob.clone(), "bob".to_owned())];
    expected.sort();
    assert_eq!(users, expected);

    let (s, body) = srv.call(Method::POST, lookup, Some(SERVICE_TOKEN), Some(json!({"user_ids": []}))).await;
    assert_eq!((s, body), (StatusCode::OK, json!({"users": []})));

    // The bound: 256 ids are served, 257 refused.
    let many: Vec<String> = (0..256).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let (s, body) = srv.call(Method::POST, lookup, Some(SERVICE_TOKEN), Some(json!({"user_ids": many}))).await;
    assert_eq!((s, body), (StatusCode::OK, json!({"users": []})));
    let too_many: Vec<String> = (0..257).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    check_error(
        srv.call(Method::POST, lookup, Some(SERVICE_TOKEN), Some(json!({"user_ids": too_many}))).await,
        ErrorCode::InvalidField,
    );
    check_error(
        srv.call(Method::POST, lookup, Some(SERVICE_TOKEN), Some(json!({"user_ids": ["nope"]}))).await,
        ErrorCode::Malformed,
    );
}

async fn trusted_calls_skip_the_per_address_limit(db: Db) {
    let mut config = test_config(Some(SERVICE_TOKEN));
    config.limits.requests_per_ip_per_s = 1;
    let srv = start(db, config).await;
    let unknown = uuid::Uuid::new_v4();
    let path = format!("/internal/v1/users/{unknown}/social");
    // Far past the address's burst of 2, a trusted service is still answered.
    for _ in 0..20 {
        check_error(srv.call(Method::GET, &path, Some(SERVICE_TOKEN), None).await, ErrorCode::UserNotFound);
    }
    // Guesses at the token spend the address's budget.
    let mut limited = false;
    for _ in 0..10 {
        let (s, _) = srv.call(Method::GET, &path, Some("a-wrong-service-token-guess"), None).await;
        limited |= s == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(limited, "wrong service tokens must be rate limited");
}

migrations::both_backends!(
    internal_routes_need_the_service_token,
    internal_routes_are_off_without_a_service_token,
    social_graph_follows_friend_and_block_changes,
    lookup_names_known_users_once,
    trusted_calls_skip_the_per_address_limit,
);

#[tokio::test]
async fn a_short_service_token_is_refused_at_start() {
    let t = migrations::testing::TestDb::sqlite().await;
    let config = test_config(Some("too-short"));
    let tokens = support::tokens(&t.db, &config);
    let err = AppState::new(config, t.db.clone(), tokens, &prometheus::Registry::new()).err();
    assert!(err.is_some_and(|e| e.to_string().contains("service_token")));
    t.drop_db().await;
}
