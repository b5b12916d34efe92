//! The catalog loader on the real Postgres and on SQLite: the data migration 0003 seeds loads,
//! validates and equals the in-code standard catalog; corrupted rows are refused with a message
//! naming the row.

use instance_server::catalog::store::{LoadError, load};
use instance_server::catalog::{Catalog, CatalogError};
use migrations::{Db, both_backends, on_db};

async fn seeded_catalog_loads_and_equals_the_standard_one(db: Db) {
    let catalog = match load(&db).await {
        Ok(c) => c,
        Err(e) => panic!("{} catalog: {e}", db.backend()),
    };
    assert!(catalog.cards().len() >= 30);
    assert!(catalog.starter_decks().len() >= 2);
    // The standard catalog that tests and the bench use is the seeded data, row for row.
    assert!(
        catalog == Catalog::standard(),
        "{}: migration 0003 and catalog/standard.rs differ",
        db.backend()
    );
}

async fn execute(db: &Db, sql: &str) {
    let done = on_db!(db, |pool| sqlx::query(sql)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()));
    if let Err(e) = done {
        panic!("{sql}: {e}");
    }
}

async fn insert_card(
    db: &Db,
    id: &str,
    kind: &str,
    attack: i32,
    health: i32,
    effect: Option<&str>,
) {
    let sql = "INSERT INTO card_definitions (id, name, kind, cost, attack, health, guard, charge, effect, \
               effect_amount, effect_target, rarity, text) VALUES ($1, 'Broken', $2, 3, $3, $4, $5, $6, $7, $8, $9, 'common', '')";
    let (amount, target) = if effect.is_some() {
        (Some(2), Some("any"))
    } else {
        (None, None)
    };
    let done = on_db!(db, |pool| sqlx::query(sql)
        .bind(id)
        .bind(kind)
        .bind(attack)
        .bind(health)
        .bind(false)
        .bind(false)
        .bind(effect)
        .bind(amount)
        .bind(target)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()));
    if let Err(e) = done {
        panic!("insert {id}: {e}");
    }
}

fn invalid(result: Result<Catalog, LoadError>) -> CatalogError {
    match result {
        Err(LoadError::Invalid(e)) => e,
        Err(other) => panic!("expected invalid data, got {other}"),
        Ok(_) => panic!("corrupted data was accepted"),
    }
}

async fn a_card_with_stats_out_of_range_is_refused(db: Db) {
    insert_card(&db, "broken_card", "unit", 99, 3, None).await;
    let err = invalid(load(&db).await);
    assert_eq!(
        err,
        CatalogError::OutOfRange {
            card: "broken_card".into(),
            field: "attack",
            value: 99,
            min: 0,
            max: 12
        }
    );
    let shown = LoadError::Invalid(err).to_string();
    assert_eq!(
        shown,
        "invalid game data: card \"broken_card\": attack 99 is out of range 0..=12"
    );
}

async fn a_card_with_an_unknown_effect_is_refused(db: Db) {
    insert_card(&db, "broken_spell", "spell", 0, 0, Some("explode")).await;
    let err = invalid(load(&db).await);
    assert!(
        matches!(&err, CatalogError::UnknownValue { card, field: "effect", value, .. } if card == "broken_spell" && value == "explode"),
        "{err}"
    );
}

async fn a_starter_deck_with_a_missing_card_is_refused(db: Db) {
    execute(
        &db,
        "DELETE FROM starter_deck_cards WHERE deck_id = 'iron_vanguard' AND card_id = 'smite'",
    )
    .await;
    let err = invalid(load(&db).await);
    assert_eq!(
        err,
        CatalogError::DeckSize {
            deck: "iron_vanguard".into(),
            size: 19
        }
    );
}

async fn a_starter_deck_with_too_many_copies_is_refused(db: Db) {
    execute(&db, "UPDATE starter_deck_cards SET copies = 3 WHERE deck_id = 'ember_raiders' AND card_id = 'spark'").await;
    let err = invalid(load(&db).await);
    assert_eq!(
        err,
        CatalogError::Copies {
            deck: "ember_raiders".into(),
            card: "spark".into(),
            copies: 3
        }
    );
}

both_backends!(
    seeded_catalog_loads_and_equals_the_standard_one,
    a_card_with_stats_out_of_range_is_refused,
    a_card_with_an_unknown_effect_is_refused,
    a_starter_deck_with_a_missing_card_is_refused,
    a_starter_deck_with_too_many_copies_is_refused,
);
