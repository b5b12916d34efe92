//! The standard game data that migration 0003 seeds, built in code: the catalog for tests, the
//! bench and tools that run without a database.
//!
//! This mirrors `migrations/*/0003_game_data.sql` row for row; the catalog store tests load the
//! seeded database on both backends and fail if the two ever differ, so edit both together.

use super::{RawCard, RawCatalog, RawDeck, RawDeckCard, RawRecipe, RawRecipeInput};

/// (id, name, kind, cost, attack, health, guard, charge, effect, amount, target, rarity, text)
type CardRow = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    i64,
    i64,
    bool,
    bool,
    Option<&'static str>,
    Option<i64>,
    Option<&'static str>,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const CARDS: &[CardRow] = &[
    ("tavern_rat", "Tavern Rat", "unit", 1, 1, 1, false, true, None, None, None, "common", "Charge."),
    ("squire", "Squire", "unit", 1, 1, 2, false, false, None, None, None, "common", ""),
    ("apprentice", "Apprentice", "unit", 2, 1, 1, false, false, Some("draw"), Some(1), Some("none"), "common", "On play: draw a card."),
    ("timber_wolf", "Timber Wolf", "unit", 2, 2, 1, false, true, None, None, None, "common", "Charge."),
    ("footman", "Footman", "unit", 2, 2, 3, false, false, None, None, None, "common", ""),
    ("shield_bearer", "Shield Bearer", "unit", 2, 1, 4, true, false, None, None, None, "common", "Guard."),
    ("field_medic", "Field Medic", "unit", 2, 2, 2, false, false, Some("heal"), Some(3), Some("friendly"), "common", "On play: restore 3 health to a friendly character."),
    ("spearman", "Spearman", "unit", 3, 3, 3, false, false, None, None, None, "common", ""),
    ("stone_sentry", "Stone Sentry", "unit", 3, 2, 5, true, false, None, None, None, "common", "Guard."),
    ("border_raider", "Border Raider", "unit", 3, 3, 2, false, true, None, None, None, "common", "Charge."),
    ("hedge_wizard", "Hedge Wizard", "unit", 3, 2, 3, false, false, Some("damage"), Some(2), Some("any"), "rare", "On play: deal 2 damage."),
    ("knight", "Knight", "unit", 4, 4, 4, false, false, None, None, None, "common", ""),
    ("ogre_brute", "Ogre Brute", "unit", 4, 5, 3, false, false, None, None, None, "common", ""),
    ("gatekeeper", "Gatekeeper", "unit", 4, 3, 6, true, false, None, None, None, "rare", "Guard."),
    ("cavalry_rider", "Cavalry Rider", "unit", 4, 4, 2, false, true, None, None, None, "rare", "Charge."),
    ("battle_priest", "Battle Priest", "unit", 4, 3, 4, false, false, Some("heal"), Some(4), Some("friendly_hero"), "rare", "On play: restore 4 health to your hero."),
    ("court_scholar", "Court Scholar", "unit", 5, 3, 4, false, false, Some("draw"), Some(2), Some("none"), "rare", "On play: draw 2 cards."),
    ("mountain_troll", "Mountain Troll", "unit", 5, 5, 6, false, false, None, None, None, "common", ""),
    ("shadow_assassin", "Shadow Assassin", "unit", 5, 5, 2, false, true, None, None, None, "rare", "Charge."),
    ("iron_paladin", "Iron Paladin", "unit", 5, 4, 5, true, false, None, None, None, "rare", "Guard."),
    ("bombardier", "Bombardier", "unit", 5, 4, 3, false, false, Some("damage"), Some(3), Some("enemy_hero"), "rare", "On play: deal 3 damage to the enemy hero."),
    ("hill_giant", "Hill Giant", "unit", 6, 6, 7, false, false, None, None, None, "common", ""),
    ("war_chief", "War Chief", "unit", 6, 5, 5, false, true, None, None, None, "epic", "Charge."),
    ("stone_golem", "Stone Golem", "unit", 7, 6, 9, true, false, None, None, None, "epic", "Guard."),
    ("elder_dragon", "Elder Dragon", "unit", 8, 8, 8, false, false, Some("damage"), Some(4), Some("enemy"), "legendary", "On play: deal 4 damage to an enemy."),
    ("ancient_titan", "Ancient Titan", "unit", 10, 10, 10, true, false, None, None, None, "legendary", "Guard."),
    ("spark", "Spark", "spell", 1, 0, 0, false, false, Some("damage"), Some(2), Some("any"), "common", "Deal 2 damage."),
    ("bandage", "Bandage", "spell", 1, 0, 0, false, false, Some("heal"), Some(4), Some("any"), "common", "Restore 4 health."),
    ("study", "Study", "spell", 1, 0, 0, false, false, Some("draw"), Some(1), Some("none"), "common", "Draw a card."),
    ("smite", "Smite", "spell", 2, 0, 0, false, false, Some("damage"), Some(3), Some("unit"), "common", "Deal 3 damage to a unit."),
    ("volley", "Volley", "spell", 2, 0, 0, false, false, Some("damage"), Some(3), Some("enemy_hero"), "common", "Deal 3 damage to the enemy hero."),
    ("lightning_bolt", "Lightning Bolt", "spell", 3, 0, 0, false, false, Some("damage"), Some(4), Some("enemy"), "common", "Deal 4 damage to an enemy."),
    ("arcane_insight", "Arcane Insight", "spell", 3, 0, 0, false, false, Some("draw"), Some(2), Some("none"), "rare", "Draw 2 cards."),
    ("healing_light", "Healing Light", "spell", 3, 0, 0, false, false, Some("heal"), Some(8), Some("friendly"), "common", "Restore 8 health to a friendly character."),
    ("fireball", "Fireball", "spell", 4, 0, 0, false, false, Some("damage"), Some(6), Some("any"), "rare", "Deal 6 damage."),
    ("second_wind", "Second Wind", "spell", 4, 0, 0, false, false, Some("heal"), Some(10), Some("friendly_hero"), "rare", "Restore 10 health to your hero."),
    ("cataclysm", "Cataclysm", "spell", 5, 0, 0, false, false, Some("damage"), Some(5), Some("both_heroes"), "epic", "Deal 5 damage to both heroes."),
    ("tome_of_ages", "Tome of Ages", "spell", 5, 0, 0, false, false, Some("draw"), Some(3), Some("none"), "epic", "Draw 3 cards."),
    ("pyroblast", "Pyroblast", "spell", 8, 0, 0, false, false, Some("damage"), Some(10), Some("any"), "legendary", "Deal 10 damage."),
];

/// (id, name, description, [(card id, copies)])
type DeckRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, i64)],
);

#[rustfmt::skip]
const DECKS: &[DeckRow] = &[
    (
        "iron_vanguard",
        "Iron Vanguard",
        "Guards and healing: hold the line, then win late.",
        &[("squire", 2), ("shield_bearer", 2), ("field_medic", 2), ("footman", 2), ("stone_sentry", 2), ("gatekeeper", 2), ("battle_priest", 1), ("iron_paladin", 2), ("mountain_troll", 1), ("stone_golem", 1), ("bandage", 1), ("healing_light", 1), ("smite", 1)],
    ),
    (
        "ember_raiders",
        "Ember Raiders",
        "Charge and burn: strike fast before the enemy sets up.",
        &[("tavern_rat", 2), ("timber_wolf", 2), ("spark", 2), ("border_raider", 2), ("hedge_wizard", 2), ("lightning_bolt", 2), ("cavalry_rider", 2), ("ogre_brute", 1), ("fireball", 2), ("shadow_assassin", 1), ("war_chief", 1), ("volley", 1)],
    ),
    (
        "arcane_circle",
        "Arcane Circle",
        "Card draw and big spells: outlast, then overwhelm.",
        &[("apprentice", 2), ("study", 2), ("cataclysm", 1), ("spearman", 2), ("arcane_insight", 2), ("knight", 2), ("court_scholar", 1), ("fireball", 1), ("hill_giant", 1), ("tome_of_ages", 1), ("bombardier", 1), ("second_wind", 1), ("elder_dragon", 1), ("pyroblast", 1), ("smite", 1)],
    ),
];

/// (id, card id, copies, [(resource, amount)])
type RecipeRow = (
    &'static str,
    &'static str,
    i64,
    &'static [(&'static str, i64)],
);

#[rustfmt::skip]
const RECIPES: &[RecipeRow] = &[
    ("craft_knight", "knight", 1, &[("gold", 2), ("ore", 3)]),
    ("craft_gatekeeper", "gatekeeper", 1, &[("ore", 3), ("timber", 3)]),
    ("craft_fireball", "fireball", 1, &[("essence", 4), ("gold", 2)]),
    ("craft_court_scholar", "court_scholar", 1, &[("essence", 3), ("gold", 3)]),
    ("craft_stone_golem", "stone_golem", 1, &[("essence", 2), ("gold", 4), ("ore", 6)]),
    ("craft_elder_dragon", "elder_dragon", 1, &[("essence", 10), ("gold", 10), ("ore", 5)]),
    ("craft_spark_pair", "spark", 2, &[("essence", 2), ("timber", 1)]),
];

/// The rows of the standard data, as the store would read them.
pub(super) fn raw() -> RawCatalog {
    let cards = CARDS
        .iter()
        .map(
            |&(
                id,
                name,
                kind,
                cost,
                attack,
                health,
                guard,
                charge,
                effect,
                amount,
                target,
                rarity,
                text,
            )| RawCard {
                id: id.to_owned(),
                name: name.to_owned(),
                kind: kind.to_owned(),
                cost,
                attack,
                health,
                guard,
                charge,
                effect: effect.map(str::to_owned),
                effect_amount: amount,
                effect_target: target.map(str::to_owned),
                rarity: rarity.to_owned(),
                text: text.to_owned(),
            },
        )
        .collect();
    let decks = DECKS
        .iter()
        .map(|&(id, name, description, _)| RawDeck {
            id: id.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
        })
        .collect();
    let deck_cards = DECKS
        .iter()
        .flat_map(|&(deck_id, _, _, cards)| {
            cards.iter().map(move |&(card_id, copies)| RawDeckCard {
                deck_id: deck_id.to_owned(),
                card_id: card_id.to_owned(),
                copies,
            })
        })
        .collect();
    let recipes = RECIPES
        .iter()
        .map(|&(id, card_id, copies, _)| RawRecipe {
            id: id.to_owned(),
            card_id: card_id.to_owned(),
            copies,
        })
        .collect();
    let recipe_inputs = RECIPES
        .iter()
        .flat_map(|&(recipe_id, _, _, inputs)| {
            inputs
                .iter()
                .map(move |&(resource, amount)| RawRecipeInput {
                    recipe_id: recipe_id.to_owned(),
                    resource: resource.to_owned(),
                    amount,
                })
        })
        .collect();
    RawCatalog {
        cards,
        decks,
        deck_cards,
        recipes,
        recipe_inputs,
    }
}
