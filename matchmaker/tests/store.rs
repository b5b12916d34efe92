//! The results store on the real Postgres and on SQLite: rating changes persisted with the match
//! history, duplicate reports acknowledged without change (also when they race), team results,
//! concurrent matches of one player, and rejected reports.

use std::sync::Arc;

use matchmaker::ratings::{Rating, RatingConfig, Standing, Winner, rate_teams};
use matchmaker::store::{MatchResult, Recorded, ResultStore, StoreError};
use migrations::Db;
use uuid::Uuid;

migrations::both_backends!(
    rating_changes_are_persisted_with_the_history,
    a_duplicate_report_is_acknowledged_and_changes_nothing,
    concurrent_duplicate_reports_apply_exactly_once,
    team_results_update_every_player,
    concurrent_matches_of_one_player_lose_no_update,
    invalid_results_are_rejected_and_store_nothing,
);

const T0: i64 = 1_700_000_000_000;

fn result(teams: [Vec<Uuid>; 2], winner: Winner) -> MatchResult {
    MatchResult {
        match_id: Uuid::new_v4(),
        mode: "duel".into(),
        region: "local".into(),
        created_at_ms: T0,
        ended_at_ms: T0 + 300_000,
        teams,
        winner,
        reason: "hero_destroyed".into(),
    }
}

fn applied(r: Recorded) -> Vec<matchmaker::store::RatingChange> {
    match r {
        Recorded::Applied(c) => c,
        Recorded::Duplicate => panic!("expected the result to apply, got a duplicate"),
    }
}

async fn rating_changes_are_persisted_with_the_history(db: Db) {
    let store = ResultStore::new(db);
    let (a, b, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.read_ratings(&[a, b], "duel").await.expect("read"), vec![Rating::NEW, Rating::NEW]);

    let r1 = result([vec![a], vec![b]], Winner::Team(0));
    let changes = applied(store.record_result(&r1, T0 + 300_001).await.expect("record"));
    let [want_a, want_b] = rate_teams([&[Rating::NEW], &[Rating::NEW]], Winner::Team(0), &RatingConfig::default());
    let by_user = |u: Uuid| changes.iter().find(|c| c.user_id == u).copied().expect("change for player");
    assert_eq!(by_user(a).after, want_a[0]);
    assert_eq!(by_user(b).after, want_b[0]);
    assert_eq!((by_user(a).standing, by_user(b).standing), (Standing::Win, Standing::Loss));
    assert!(want_a[0].rating > 1500.0 && want_b[0].rating < 1500.0);

    // Read back in the asked order, with a default for a player who never played.
    let read = store.read_ratings(&[b, stranger, a], "duel").await.expect("read");
    assert_eq!(read, vec![want_b[0], Rating::NEW, want_a[0]]);
    assert_eq!(store.read_ratings(&[a], "duo").await.expect("read"), vec![Rating::NEW], "ratings are per mode");
    assert_eq!(store.games(a, "duel").await.expect("games"), 1);

    let stored = store.stored_match(r1.match_id).await.expect("read match").expect("stored");
    assert_eq!((stored.mode.as_str(), stored.region.as_str()), ("duel", "local"));
    assert_eq!((stored.created_at_ms, stored.ended_at_ms, stored.recorded_at_ms), (T0, T0 + 300_000, T0 + 300_001));
    assert_eq!(stored.winner, Winner::Team(0));
    assert_eq!(stored.reason, "hero_destroyed");
    let pa = stored.players.iter().find(|p| p.user_id == a).expect("history of a");
    assert_eq!((pa.team, pa.standing), (0, Standing::Win));
    assert_eq!((pa.rating_before, pa.deviation_before), (1500.0, 350.0));
    assert_eq!((pa.rating_after, pa.deviation_after), (want_a[0].rating, want_a[0].deviation));

    // A second match starts from the stored ratings.
    let r2 = result([vec![a], vec![b]], Winner::Team(1));
    let changes = applied(store.record_result(&r2, T0 + 600_000).await.expect("record"));
    let [want_a2, want_b2] = rate_teams([&[want_a[0]], &[want_b[0]]], Winner::Team(1), &RatingConfig::default());
    assert_eq!(changes.iter().find(|c| c.user_id == a).map(|c| (c.before, c.after)), Some((want_a[0], want_a2[0])));
    assert_eq!(store.read_ratings(&[a, b], "duel").await.expect("read"), vec![want_a2[0], want_b2[0]]);
    assert_eq!(store.games(b, "duel").await.expect("games"), 2);
}

async fn a_duplicate_report_is_acknowledged_and_changes_nothing(db: Db) {
    let store = ResultStore::new(db);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let r = result([vec![a], vec![b]], Winner::Team(0));
    applied(store.record_result(&r, T0 + 1).await.expect("record"));
    let ratings = store.read_ratings(&[a, b], "duel").await.expect("read");
    let stored = store.stored_match(r.match_id).await.expect("read");

    // The retry says the same; a confused one says otherwise. Both are acknowledged, neither
    // changes anything.
    assert_eq!(store.record_result(&r, T0 + 2).await.expect("retry"), Recorded::Duplicate);
    let contrary = MatchResult { winner: Winner::Team(1), reason: "concede".into(), ..r.clone() };
    assert_eq!(store.record_result(&contrary, T0 + 3).await.expect("retry"), Recorded::Duplicate);
    assert_eq!(store.read_ratings(&[a, b], "duel").await.expect("read"), ratings);
    assert_eq!(store.stored_match(r.match_id).await.expect("read"), stored);
    assert_eq!(store.games(a, "duel").await.expect("games"), 1);
}

async fn concurrent_duplicate_reports_apply_exactly_once(db: Db) {
    let store = Arc::new(ResultStore::new(db));
    let (a, b, c, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let r = Arc::new(MatchResult { mode: "duo".into(), ..result([vec![a, b], vec![c, d]], Winner::Team(1)) });
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, r) = (Arc::clone(&store), Arc::clone(&r));
            tokio::spawn(async move { store.record_result(&r, T0 + i).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in futures::future::join_all(tasks).await {
        outcomes.push(t.expect("task").expect("every report is acknowledged"));
    }
    let applied_count = outcomes.iter().filter(|o| matches!(o, Recorded::Applied(_))).count();
    assert_eq!(applied_count, 1, "exactly one report applies: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Recorded::Duplicate).count(), 7);

    let new = [Rating::NEW, Rating::NEW];
    let [winners_lost, winners_won] = rate_teams([&new, &new], Winner::Team(1), &RatingConfig::default());
    let read = store.read_ratings(&[a, b, c, d], "duo").await.expect("read");
    assert_eq!(read, vec![winners_lost[0], winners_lost[1], winners_won[0], winners_won[1]], "ratings changed once");
    for u in [a, b, c, d] {
        assert_eq!(store.games(u, "duo").await.expect("games"), 1);
    }
    assert_eq!(store.stored_match(r.match_id).await.expect("read").expect("stored").players.len(), 4);
}

async fn team_results_update_every_player(db: Db) {
    let store = ResultStore::new(db);
    let players: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    // Give the first player some history so the team is uneven.
    let warmup = MatchResult { mode: "duo".into(), ..result([vec![players[0]], vec![Uuid::new_v4()]], Winner::Team(0)) };
    applied(store.record_result(&warmup, T0).await.expect("record"));
    let before = store.read_ratings(&players, "duo").await.expect("read");
    let r = MatchResult {
        mode: "duo".into(),
        ..result([vec![players[0], players[1]], vec![players[2], players[3]]], Winner::Draw)
    };
    let changes = applied(store.record_result(&r, T0 + 1).await.expect("record"));
    assert_eq!(changes.len(), 4);
    assert!(changes.iter().all(|c| c.standing == Standing::Draw));
    let [ta, tb] = rate_teams([&before[..2], &before[2..]], Winner::Draw, &RatingConfig::default());
    let after = store.read_ratings(&players, "duo").await.expect("read");
    assert_eq!(after, [ta, tb].concat());
    // Everyone's deviation shrinks after a game; the stronger team loses points in a draw.
    assert!(after.iter().zip(&before).all(|(a, b)| a.deviation < b.deviation));
    assert!(after[0].rating < before[0].rating && after[2].rating > before[2].rating);
    let stored = store.stored_match(r.match_id).await.expect("read").expect("stored");
    assert_eq!(stored.winner, Winner::Draw);
    let teams: Vec<u8> = players
        .iter()
        .map(|u| stored.players.iter().find(|p| p.user_id == *u).map(|p| p.team).expect("player stored"))
        .collect();
    assert_eq!(teams, [0, 0, 1, 1]);
}

async fn concurrent_matches_of_one_player_lose_no_update(db: Db) {
    let store = Arc::new(ResultStore::new(db));
    let star = Uuid::new_v4();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let r = result([vec![star], vec![Uuid::new_v4()]], Winner::Team(0));
            tokio::spawn(async move { store.record_result(&r, T0 + i).await })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        applied(t.expect("task").expect("record"));
    }
    assert_eq!(store.games(star, "duel").await.expect("games"), 8, "every win counted");
    // Eight wins in a row, applied one after the other: the rating climbed each time.
    let mut r = Rating::NEW;
    for _ in 0..8 {
        let [won, _] = rate_teams([&[r], &[Rating::NEW]], Winner::Team(0), &RatingConfig::default());
        r = won[0];
    }
    let got = store.read_ratings(&[star], "duel").await.expect("read")[0];
    assert!((got.rating - r.rating).abs() < 1e-6, "{got:?} vs sequential {r:?}");
}

async fn invalid_results_are_rejected_and_store_nothing(db: Db) {
    let store = ResultStore::new(db);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ok = result([vec![a], vec![b]], Winner::Team(0));
    let cases = [
        MatchResult { teams: [vec![a], vec![]], ..ok.clone() },
        MatchResult { teams: [vec![a], vec![a]], ..ok.clone() },
        MatchResult { winner: Winner::Team(2), ..ok.clone() },
        MatchResult { mode: String::new(), ..ok.clone() },
        MatchResult { ended_at_ms: T0 - 1, ..ok.clone() },
        MatchResult { reason: "x".repeat(201), ..ok.clone() },
    ];
    for bad in cases {
        match store.record_result(&bad, T0).await {
            Err(StoreError::InvalidResult { match_id, .. }) => assert_eq!(match_id, ok.match_id),
            other => panic!("expected InvalidResult for {bad:?}, got {other:?}"),
        }
    }
    assert_eq!(store.stored_match(ok.match_id).await.expect("read"), None);
    assert_eq!(store.games(a, "duel").await.expect("games"), 0);
    let many: Vec<Uuid> = (0..65).map(|_| Uuid::new_v4()).collect();
    assert!(matches!(store.read_ratings(&many, "duel").await, Err(StoreError::TooManyUsers(65))));
    // The valid one still applies afterwards.
    applied(store.record_result(&ok, T0).await.expect("record"));
}
