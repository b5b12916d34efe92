//! Loads the game data tables (seeded by migration 0003) from Postgres or SQLite into a validated
//! [`Catalog`], once at start: a bad row stops the process with a message naming it, rather than
//! surfacing mid-match.
//!
//! The statements are the same text in both dialects. Integer columns are read as `i32` (the
//! width of `INTEGER` in Postgres) and widened, so range checks see the stored value.

use migrations::{Db, on_db};
use sqlx::FromRow;

use super::{
    Catalog, CatalogError, RawCard, RawCatalog, RawDeck, RawDeckCard, RawRecipe, RawRecipeInput,
};

/// Why the game data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the game data: {0}")]
    Db(#[from] sqlx::Error),
    #[error("invalid game data: {0}")]
    Invalid(#[from] CatalogError),
}

/// Reads every game data table and validates the rows into a [`Catalog`].
pub async fn load(db: &Db) -> Result<Catalog, LoadError> {
    Ok(Catalog::from_raw(load_raw(db).await?)?)
}

/// Reads the game data rows without validating them.
pub async fn load_raw(db: &Db) -> Result<RawCatalog, sqlx::Error> {
    let cards_sql = "SELECT id, name, kind, cost, attack, health, guard, charge, effect, effect_amount, \
                     effect_target, rarity, text FROM card_definitions ORDER BY id";
    let cards: Vec<CardRow> = on_db!(db, |pool| sqlx::query_as(cards_sql).fetch_all(pool).await)?;
    let decks_sql = "SELECT id, name, description FROM starter_decks ORDER BY id";
    let decks: Vec<DeckRow> = on_db!(db, |pool| sqlx::query_as(decks_sql).fetch_all(pool).await)?;
    let deck_cards_sql =
        "SELECT deck_id, card_id, copies FROM starter_deck_cards ORDER BY deck_id, card_id";
    let deck_cards: Vec<DeckCardRow> = on_db!(db, |pool| sqlx::query_as(deck_cards_sql)
        .fetch_all(pool)
        .await)?;
    let recipes_sql = "SELECT id, card_id, copies FROM recipes ORDER BY id";
    let recipes: Vec<RecipeRow> =
        on_db!(db, |pool| sqlx::query_as(recipes_sql).fetch_all(pool).await)?;
    let inputs_sql =
        "SELECT recipe_id, resource, amount FROM recipe_inputs ORDER BY recipe_id, resource";
    let recipe_inputs: Vec<RecipeInputRow> =
        on_db!(db, |pool| sqlx::query_as(inputs_sql).fetch_all(pool).await)?;

    Ok(RawCatalog {
        cards: cards
            .into_iter()
            .map(|c| RawCard {
                id: c.id,
                name: c.name,
                kind: c.kind,
                cost: c.cost.into(),
                attack: c.attack.into(),
                health: c.health.into(),
                guard: c.guard,
                charge: c.charge,
                effect: c.effect,
                effect_amount: c.effect_amount.map(i64::from),
                effect_target: c.effect_target,
                rarity: c.rarity,
                text: c.text,
            })
            .collect(),
        decks: decks
            .into_iter()
            .map(|d| RawDeck {
                id: d.id,
                name: d.name,
                description: d.description,
            })
            .collect(),
        deck_cards: deck_cards
            .into_iter()
            .map(|d| RawDeckCard {
                deck_id: d.deck_id,
                card_id: d.card_id,
                copies: d.copies.into(),
            })
            .collect(),
        recipes: recipes
            .into_iter()
            .map(|r| RawRecipe {
                id: r.id,
                card_id: r.card_id,
                copies: r.copies.into(),
            })
            .collect(),
        recipe_inputs: recipe_inputs
            .into_iter()
            .map(|i| RawRecipeInput {
                recipe_id: i.recipe_id,
                resource: i.resource,
                amount: i.amount.into(),
            })
            .collect(),
    })
}

#[derive(FromRow)]
struct CardRow {
    id: String,
    name: String,
    kind: String,
    cost: i32,
    attack: i32,
    health: i32,
    guard: bool,
    charge: bool,
    effect: Option<String>,
    effect_amount: Option<i32>,
    effect_target: Option<String>,
    rarity: String,
    text: String,
}

#[derive(FromRow)]
struct DeckRow {
    id: String,
    name: String,
    description: String,
}

#[derive(FromRow)]
struct DeckCardRow {
    deck_id: String,
    card_id: String,
    copies: i32,
}

#[derive(FromRow)]
struct RecipeRow {
    id: String,
    card_id: String,
    copies: i32,
}

#[derive(FromRow)]
struct RecipeInputRow {
    recipe_id: String,
    resource: String,
    amount: i32,
}
