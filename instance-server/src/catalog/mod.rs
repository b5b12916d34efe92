//! The game data: card definitions, starter decks and recipes, validated once into a [`Catalog`]
//! that the rules engine, the bot and the deck rules read.
//!
//! The data lives in the database (seeded by migration 0003) and is loaded by [`store::load`];
//! tests and the bench build the same data in code with [`Catalog::standard`]. Both paths go
//! through [`Catalog::from_raw`], so a value that passes here is valid whatever its source, and
//! the engine never has to re-check a card.
//!
//! Cards are sorted by id inside a catalog, so a [`CardIdx`] means the same card in two catalogs
//! built from the same data (the standard catalog and the one loaded from the database).

pub mod store;

mod standard;

use std::collections::{BTreeMap, HashMap, HashSet};

/// Cards in every deck, starter or built.
pub const DECK_SIZE: usize = 20;
/// Copies of one card a deck may hold.
pub const MAX_COPIES: u8 = 2;
/// Highest mana cost (the mana cap).
pub const MAX_COST: u8 = 10;
/// Highest printed attack of a unit.
pub const MAX_ATTACK: i16 = 12;
/// Highest printed health of a unit (lowest is 1: a unit with 0 health would die on arrival).
pub const MAX_HEALTH: i16 = 12;
/// Highest damage or healing of one effect.
pub const MAX_EFFECT_AMOUNT: u8 = 10;
/// Most cards one draw effect draws.
pub const MAX_DRAW: u8 = 3;
/// Longest id (cards, decks, recipes, resources); ids travel on the wire in every hand card.
pub const MAX_ID_LEN: usize = 32;
/// Longest card or deck name.
pub const MAX_NAME_LEN: usize = 48;
/// Longest rules text or description.
pub const MAX_TEXT_LEN: usize = 200;

/// A card's position in its catalog: a cheap, `Copy` handle the engine stores instead of the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardIdx(u16);

impl CardIdx {
    /// The index into [`Catalog::cards`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What a card is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CardKind {
    /// Goes onto the board and fights.
    Unit {
        attack: i16,
        health: i16,
        guard: bool,
        charge: bool,
    },
    /// Resolves its effect and goes to the graveyard.
    Spell,
}

/// What an effect does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EffectKind {
    /// Deals `amount` damage to the target.
    Damage,
    /// Restores up to `amount` health to the target, never above its maximum.
    Heal,
    /// The card's owner draws `amount` cards.
    Draw,
}

/// Who an effect may aim at. The first four are chosen by the player with the command's target;
/// the hero rules aim on their own; `None` takes no target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetRule {
    /// No target (draw effects).
    None,
    /// Any unit or either hero.
    Any,
    /// Any unit, on either board.
    Unit,
    /// An enemy unit or the enemy hero.
    Enemy,
    /// A friendly unit or the own hero.
    Friendly,
    /// The enemy hero, implicitly.
    EnemyHero,
    /// The own hero, implicitly.
    FriendlyHero,
    /// Both heroes, implicitly: the enemy's first, then the own (a way for both to fall at once).
    BothHeroes,
}

impl TargetRule {
    /// True when the command must name the target.
    pub fn is_chosen(self) -> bool {
        matches!(
            self,
            TargetRule::Any | TargetRule::Unit | TargetRule::Enemy | TargetRule::Friendly
        )
    }
}

/// A spell's effect, or a unit's effect when it is played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Effect {
    pub kind: EffectKind,
    /// Damage, healing or cards drawn.
    pub amount: u8,
    pub target: TargetRule,
}

/// How rare a card is, for crafting costs and display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rarity {
    Common,
    Rare,
    Epic,
    Legendary,
}

/// One card definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardDef {
    /// Stable id, used on the wire and in inventories and decks.
    pub id: String,
    pub name: String,
    pub cost: u8,
    pub kind: CardKind,
    /// A spell always has one; a unit may (it fires when the unit is played).
    pub effect: Option<Effect>,
    pub rarity: Rarity,
    /// Rules text shown to players.
    pub text: String,
}

impl CardDef {
    /// True for unit cards.
    pub fn is_unit(&self) -> bool {
        matches!(self.kind, CardKind::Unit { .. })
    }

    /// Printed (attack, health) of a unit; (0, 0) for a spell, as hand cards show it.
    pub fn stats(&self) -> (i16, i16) {
        match self.kind {
            CardKind::Unit { attack, health, .. } => (attack, health),
            CardKind::Spell => (0, 0),
        }
    }
}

/// A deck as data: an id, a name and (card id, copies) entries. The input of
/// [`Catalog::new`] and the stored form of a starter deck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeckList {
    pub id: String,
    pub name: String,
    pub description: String,
    pub cards: Vec<(String, u8)>,
}

/// A starter deck: its list and the checked [`Deck`] built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StarterDeck {
    pub list: DeckList,
    deck: Deck,
}

impl StarterDeck {
    /// The deck, ready for [`crate::rules::GameSetup`].
    pub fn deck(&self) -> &Deck {
        &self.deck
    }
}

/// A legal deck of [`DECK_SIZE`] cards of one catalog, in list order (the game shuffles it).
/// Only a [`Catalog`] makes one, so holding a `Deck` means the deck rules were checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Deck {
    cards: Vec<CardIdx>,
    /// The [`Catalog::fingerprint`] of the catalog that checked it, so a deck is never played
    /// with indices into a different catalog.
    catalog: u64,
}

impl Deck {
    /// The cards, one entry per copy.
    pub fn cards(&self) -> &[CardIdx] {
        &self.cards
    }

    /// The fingerprint of the catalog this deck belongs to.
    pub fn catalog_fingerprint(&self) -> u64 {
        self.catalog
    }
}

/// A recipe as data, the input of [`Catalog::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeSpec {
    pub id: String,
    /// The card id it makes.
    pub card: String,
    pub copies: u8,
    /// (resource, amount) pairs.
    pub inputs: Vec<(String, u32)>,
}

/// A crafting recipe: resources in, copies of a card out (used by the crafting service later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub id: String,
    pub card: CardIdx,
    pub copies: u8,
    /// Resource name → amount, sorted by name.
    pub inputs: BTreeMap<String, u32>,
}

/// Why game data was rejected. Each message names the row and the value that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog has no cards")]
    Empty,
    #[error("the catalog has {0} cards, more than 65535")]
    TooManyCards(usize),
    #[error("{what} id {id:?} is invalid: expected 1 to {MAX_ID_LEN} characters of a-z, 0-9 and _")]
    InvalidId { what: &'static str, id: String },
    #[error("duplicate {what} id {id:?}")]
    Duplicate { what: &'static str, id: String },
    #[error("card {card:?}: {field} {value} is out of range {min}..={max}")]
    OutOfRange {
        card: String,
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("card {card:?}: {field} {value:?} is not one of {expected}")]
    UnknownValue {
        card: String,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("card {card:?}: {reason}")]
    InvalidCard { card: String, reason: String },
    #[error("{owner} names unknown card {card:?}")]
    UnknownCard { owner: String, card: String },
    #[error("deck {deck:?} has {size} cards, expected {DECK_SIZE}")]
    DeckSize { deck: String, size: usize },
    #[error("deck {deck:?} has {copies} copies of {card:?}, allowed 1..={MAX_COPIES}")]
    Copies {
        deck: String,
        card: String,
        copies: i64,
    },
    #[error("deck {deck:?}: {reason}")]
    InvalidDeck { deck: String, reason: String },
    #[error("recipe {recipe:?}: {reason}")]
    InvalidRecipe { recipe: String, reason: String },
}

/// One `card_definitions` row as stored, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCard {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub cost: i64,
    pub attack: i64,
    pub health: i64,
    pub guard: bool,
    pub charge: bool,
    pub effect: Option<String>,
    pub effect_amount: Option<i64>,
    pub effect_target: Option<String>,
    pub rarity: String,
    pub text: String,
}

/// One `starter_decks` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDeck {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// One `starter_deck_cards` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDeckCard {
    pub deck_id: String,
    pub card_id: String,
    pub copies: i64,
}

/// One `recipes` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecipe {
    pub id: String,
    pub card_id: String,
    pub copies: i64,
}

/// One `recipe_inputs` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecipeInput {
    pub recipe_id: String,
    pub resource: String,
    pub amount: i64,
}

/// Every game data row, as read from the tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawCatalog {
    pub cards: Vec<RawCard>,
    pub decks: Vec<RawDeck>,
    pub deck_cards: Vec<RawDeckCard>,
    pub recipes: Vec<RawRecipe>,
    pub recipe_inputs: Vec<RawRecipeInput>,
}

/// The validated game data. Immutable; share it behind an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    /// Sorted by id; a [`CardIdx`] indexes this.
    cards: Vec<CardDef>,
    by_id: HashMap<String, CardIdx>,
    starter_decks: Vec<StarterDeck>,
    recipes: Vec<Recipe>,
    fingerprint: u64,
}

impl Catalog {
    /// Validates typed card definitions, starter deck lists and recipes into a catalog.
    pub fn new(
        mut cards: Vec<CardDef>,
        decks: Vec<DeckList>,
        recipes: Vec<RecipeSpec>,
    ) -> Result<Catalog, CatalogError> {
        if cards.is_empty() {
            return Err(CatalogError::Empty);
        }
        if cards.len() > usize::from(u16::MAX) {
            return Err(CatalogError::TooManyCards(cards.len()));
        }
        cards.sort_by(|a, b| a.id.cmp(&b.id));
        let mut by_id = HashMap::with_capacity(cards.len());
        for (i, card) in cards.iter().enumerate() {
            check_card(card)?;
            // Bounded by the length check above.
            let idx = CardIdx(u16::try_from(i).map_err(|_| CatalogError::TooManyCards(i))?);
            if by_id.insert(card.id.clone(), idx).is_some() {
                return Err(CatalogError::Duplicate {
                    what: "card",
                    id: card.id.clone(),
                });
            }
        }
        let fingerprint = fingerprint(&cards);
        let mut catalog = Catalog {
            cards,
            by_id,
            starter_decks: Vec::new(),
            recipes: Vec::new(),
            fingerprint,
        };

        let mut deck_ids = HashSet::new();
        for mut list in decks {
            // Canonical order, so equal data makes equal catalogs whatever order rows came in.
            list.cards.sort();
            check_id("starter deck", &list.id)?;
            if !deck_ids.insert(list.id.clone()) {
                return Err(CatalogError::Duplicate {
                    what: "starter deck",
                    id: list.id,
                });
            }
            check_text(&list.id, "deck name", &list.name, 1, MAX_NAME_LEN)
                .and_then(|()| {
                    check_text(
                        &list.id,
                        "deck description",
                        &list.description,
                        0,
                        MAX_TEXT_LEN,
                    )
                })
                .map_err(|e| match e {
                    CatalogError::InvalidCard { reason, .. } => CatalogError::InvalidDeck {
                        deck: list.id.clone(),
                        reason,
                    },
                    other => other,
                })?;
            let entries: Vec<(&str, i64)> = list
                .cards
                .iter()
                .map(|(c, n)| (c.as_str(), i64::from(*n)))
                .collect();
            let deck =
                catalog.check_deck(&list.id, &entries, &format!("starter deck {:?}", list.id))?;
            catalog.starter_decks.push(StarterDeck { list, deck });
        }

        let mut recipe_ids = HashSet::new();
        for RecipeSpec {
            id,
            card,
            copies,
            inputs,
        } in recipes
        {
            check_id("recipe", &id)?;
            if !recipe_ids.insert(id.clone()) {
                return Err(CatalogError::Duplicate { what: "recipe", id });
            }
            let card = catalog
                .lookup(&card)
                .ok_or_else(|| CatalogError::UnknownCard {
                    owner: format!("recipe {id:?}"),
                    card: card.clone(),
                })?;
            if copies == 0 || copies > MAX_COPIES {
                return Err(CatalogError::InvalidRecipe {
                    recipe: id,
                    reason: format!("makes {copies} copies, allowed 1..={MAX_COPIES}"),
                });
            }
            if inputs.is_empty() {
                return Err(CatalogError::InvalidRecipe {
                    recipe: id,
                    reason: "has no inputs".to_owned(),
                });
            }
            let mut map = BTreeMap::new();
            for (resource, amount) in inputs {
                check_id("resource", &resource)?;
                if amount == 0 {
                    return Err(CatalogError::InvalidRecipe {
                        recipe: id,
                        reason: format!("needs 0 {resource}"),
                    });
                }
                if map.insert(resource.clone(), amount).is_some() {
                    return Err(CatalogError::InvalidRecipe {
                        recipe: id,
                        reason: format!("lists resource {resource:?} twice"),
                    });
                }
            }
            catalog.recipes.push(Recipe {
                id,
                card,
                copies,
                inputs: map,
            });
        }
        catalog.recipes.sort_by(|a, b| a.id.cmp(&b.id));
        catalog
            .starter_decks
            .sort_by(|a, b| a.list.id.cmp(&b.list.id));
        Ok(catalog)
    }

    /// Parses and validates rows as read from the game data tables.
    pub fn from_raw(raw: RawCatalog) -> Result<Catalog, CatalogError> {
        let cards = raw
            .cards
            .into_iter()
            .map(parse_card)
            .collect::<Result<Vec<_>, _>>()?;

        let mut decks: Vec<DeckList> = raw
            .decks
            .into_iter()
            .map(|d| DeckList {
                id: d.id,
                name: d.name,
                description: d.description,
                cards: Vec::new(),
            })
            .collect();
        for row in raw.deck_cards {
            let Some(deck) = decks.iter_mut().find(|d| d.id == row.deck_id) else {
                return Err(CatalogError::InvalidDeck {
                    deck: row.deck_id,
                    reason: "has cards but no starter_decks row".to_owned(),
                });
            };
            let copies = u8::try_from(row.copies)
                .ok()
                .filter(|n| (1..=MAX_COPIES).contains(n))
                .ok_or_else(|| CatalogError::Copies {
                    deck: row.deck_id.clone(),
                    card: row.card_id.clone(),
                    copies: row.copies,
                })?;
            deck.cards.push((row.card_id, copies));
        }

        let mut recipes: Vec<RecipeSpec> = Vec::with_capacity(raw.recipes.len());
        for r in raw.recipes {
            let copies = u8::try_from(r.copies).map_err(|_| CatalogError::InvalidRecipe {
                recipe: r.id.clone(),
                reason: format!("makes {} copies, allowed 1..={MAX_COPIES}", r.copies),
            })?;
            recipes.push(RecipeSpec {
                id: r.id,
                card: r.card_id,
                copies,
                inputs: Vec::new(),
            });
        }
        for input in raw.recipe_inputs {
            let Some(recipe) = recipes.iter_mut().find(|r| r.id == input.recipe_id) else {
                return Err(CatalogError::InvalidRecipe {
                    recipe: input.recipe_id,
                    reason: "has inputs but no recipes row".to_owned(),
                });
            };
            let amount = u32::try_from(input.amount).map_err(|_| CatalogError::InvalidRecipe {
                recipe: input.recipe_id.clone(),
                reason: format!("needs {} {}", input.amount, input.resource),
            })?;
            recipe.inputs.push((input.resource, amount));
        }
        Catalog::new(cards, decks, recipes)
    }

    /// The game data that migration 0003 seeds, built without a database.
    pub fn standard() -> Catalog {
        // The standard data is checked by this crate's tests (and compared with the seeded
        // database on both backends), so failing here is a bug in the source, not bad input.
        #[allow(clippy::expect_used)]
        Catalog::from_raw(standard::raw()).expect("the standard game data is valid")
    }

    /// Every card, sorted by id; a [`CardIdx`] indexes this.
    pub fn cards(&self) -> &[CardDef] {
        &self.cards
    }

    /// The card at `idx`.
    ///
    /// # Panics
    /// When `idx` comes from another catalog and is out of range; indices made by this catalog,
    /// and decks it checked, are always in range.
    pub fn card(&self, idx: CardIdx) -> &CardDef {
        &self.cards[idx.index()]
    }

    /// The index of the card with this id.
    pub fn lookup(&self, id: &str) -> Option<CardIdx> {
        self.by_id.get(id).copied()
    }

    /// The starter decks, sorted by id.
    pub fn starter_decks(&self) -> &[StarterDeck] {
        &self.starter_decks
    }

    /// The starter deck with this id.
    pub fn starter_deck(&self, id: &str) -> Option<&StarterDeck> {
        self.starter_decks.iter().find(|d| d.list.id == id)
    }

    /// The recipes, sorted by id.
    pub fn recipes(&self) -> &[Recipe] {
        &self.recipes
    }

    /// A hash of the card definitions: two catalogs with the same cards have the same
    /// fingerprint, so their indices and decks are interchangeable.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Checks a player's deck (card id, copies) against the deck rules: known cards,
    /// [`DECK_SIZE`] cards in all, at most [`MAX_COPIES`] of each.
    pub fn build_deck<S: AsRef<str>>(
        &self,
        name: &str,
        cards: &[(S, u8)],
    ) -> Result<Deck, CatalogError> {
        let entries: Vec<(&str, i64)> = cards
            .iter()
            .map(|(c, n)| (c.as_ref(), i64::from(*n)))
            .collect();
        self.check_deck(name, &entries, &format!("deck {name:?}"))
    }

    fn check_deck(
        &self,
        deck: &str,
        entries: &[(&str, i64)],
        owner: &str,
    ) -> Result<Deck, CatalogError> {
        let mut copies: BTreeMap<&str, i64> = BTreeMap::new();
        for &(card, n) in entries {
            *copies.entry(card).or_default() += n;
        }
        let mut cards = Vec::with_capacity(DECK_SIZE);
        for (&card, &n) in &copies {
            let idx = self.lookup(card).ok_or_else(|| CatalogError::UnknownCard {
                owner: owner.to_owned(),
                card: card.to_owned(),
            })?;
            if !(1..=i64::from(MAX_COPIES)).contains(&n) {
                return Err(CatalogError::Copies {
                    deck: deck.to_owned(),
                    card: card.to_owned(),
                    copies: n,
                });
            }
            for _ in 0..n {
                cards.push(idx);
            }
        }
        if cards.len() != DECK_SIZE {
            return Err(CatalogError::DeckSize {
                deck: deck.to_owned(),
                size: cards.len(),
            });
        }
        Ok(Deck {
            cards,
            catalog: self.fingerprint,
        })
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), CatalogError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidId {
            what,
            id: id.to_owned(),
        })
    }
}

fn check_text(
    card: &str,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), CatalogError> {
    let len = value.chars().count();
    if len < min || len > max || value.chars().any(char::is_control) {
        return Err(CatalogError::InvalidCard {
            card: card.to_owned(),
            reason: format!("{field} {value:?} must be {min} to {max} printable characters"),
        });
    }
    Ok(())
}

fn range(
    card: &str,
    field: &'static str,
    value: i64,
    min: i64,
    max: i64,
) -> Result<i64, CatalogError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(CatalogError::OutOfRange {
            card: card.to_owned(),
            field,
            value,
            min,
            max,
        })
    }
}

/// Checks the rules a typed card must follow (ranges, keyword and effect combinations).
fn check_card(card: &CardDef) -> Result<(), CatalogError> {
    let id = card.id.as_str();
    check_id("card", id)?;
    check_text(id, "name", &card.name, 1, MAX_NAME_LEN)?;
    check_text(id, "text", &card.text, 0, MAX_TEXT_LEN)?;
    range(id, "cost", i64::from(card.cost), 0, i64::from(MAX_COST))?;
    let invalid = |reason: &str| {
        Err(CatalogError::InvalidCard {
            card: id.to_owned(),
            reason: reason.to_owned(),
        })
    };
    match card.kind {
        CardKind::Unit { attack, health, .. } => {
            range(id, "attack", i64::from(attack), 0, i64::from(MAX_ATTACK))?;
            range(id, "health", i64::from(health), 1, i64::from(MAX_HEALTH))?;
        }
        CardKind::Spell => {
            if card.effect.is_none() {
                return invalid("a spell needs an effect");
            }
        }
    }
    if let Some(effect) = card.effect {
        match effect.kind {
            EffectKind::Damage | EffectKind::Heal => {
                range(
                    id,
                    "effect_amount",
                    i64::from(effect.amount),
                    1,
                    i64::from(MAX_EFFECT_AMOUNT),
                )?;
                if effect.target == TargetRule::None {
                    return invalid(
                        "a damage or heal effect needs a target rule other than 'none'",
                    );
                }
            }
            EffectKind::Draw => {
                range(
                    id,
                    "effect_amount",
                    i64::from(effect.amount),
                    1,
                    i64::from(MAX_DRAW),
                )?;
                if effect.target != TargetRule::None {
                    return invalid("a draw effect takes effect_target 'none'");
                }
            }
        }
    }
    Ok(())
}

/// Turns one stored row into a typed card, rejecting values the types cannot hold.
fn parse_card(row: RawCard) -> Result<CardDef, CatalogError> {
    let id = row.id.as_str();
    check_id("card", id)?;
    let unknown =
        |field: &'static str, value: &str, expected: &'static str| CatalogError::UnknownValue {
            card: id.to_owned(),
            field,
            value: value.to_owned(),
            expected,
        };
    let invalid = |reason: &str| CatalogError::InvalidCard {
        card: id.to_owned(),
        reason: reason.to_owned(),
    };
    let cost = range(id, "cost", row.cost, 0, i64::from(MAX_COST))?;
    let kind = match row.kind.as_str() {
        "unit" => CardKind::Unit {
            attack: range(id, "attack", row.attack, 0, i64::from(MAX_ATTACK))? as i16,
            health: range(id, "health", row.health, 1, i64::from(MAX_HEALTH))? as i16,
            guard: row.guard,
            charge: row.charge,
        },
        "spell" => {
            if row.attack != 0 || row.health != 0 || row.guard || row.charge {
                return Err(invalid("a spell has no attack, health or keywords"));
            }
            CardKind::Spell
        }
        other => return Err(unknown("kind", other, "'unit', 'spell'")),
    };
    let effect = match (&row.effect, row.effect_amount, &row.effect_target) {
        (None, None, None) => None,
        (Some(kind), Some(amount), Some(target)) => {
            let kind = match kind.as_str() {
                "damage" => EffectKind::Damage,
                "heal" => EffectKind::Heal,
                "draw" => EffectKind::Draw,
                other => return Err(unknown("effect", other, "'damage', 'heal', 'draw'")),
            };
            let target = match target.as_str() {
                "none" => TargetRule::None,
                "any" => TargetRule::Any,
                "unit" => TargetRule::Unit,
                "enemy" => TargetRule::Enemy,
                "friendly" => TargetRule::Friendly,
                "enemy_hero" => TargetRule::EnemyHero,
                "friendly_hero" => TargetRule::FriendlyHero,
                "both_heroes" => TargetRule::BothHeroes,
                other => {
                    return Err(unknown(
                        "effect_target",
                        other,
                        "'none', 'any', 'unit', 'enemy', 'friendly', 'enemy_hero', 'friendly_hero', 'both_heroes'",
                    ));
                }
            };
            let amount = range(id, "effect_amount", amount, 1, i64::from(MAX_EFFECT_AMOUNT))? as u8;
            Some(Effect {
                kind,
                amount,
                target,
            })
        }
        _ => {
            return Err(invalid(
                "effect, effect_amount and effect_target are set together or not at all",
            ));
        }
    };
    let rarity = match row.rarity.as_str() {
        "common" => Rarity::Common,
        "rare" => Rarity::Rare,
        "epic" => Rarity::Epic,
        "legendary" => Rarity::Legendary,
        other => {
            return Err(unknown(
                "rarity",
                other,
                "'common', 'rare', 'epic', 'legendary'",
            ));
        }
    };
    Ok(CardDef {
        id: row.id,
        name: row.name,
        cost: cost as u8,
        kind,
        effect,
        rarity,
        text: row.text,
    })
}

/// FNV-1a over everything the engine reads from a card, in index order.
fn fingerprint(cards: &[CardDef]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for card in cards {
        eat(card.id.as_bytes());
        eat(&[0, card.cost]);
        match card.kind {
            CardKind::Unit {
                attack,
                health,
                guard,
                charge,
            } => {
                eat(&attack.to_le_bytes());
                eat(&health.to_le_bytes());
                eat(&[u8::from(guard), u8::from(charge)]);
            }
            CardKind::Spell => eat(&[0xff]),
        }
        if let Some(e) = card.effect {
            eat(&[e.kind as u8, e.amount, e.target as u8]);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_data_is_valid_and_big_enough() {
        let catalog = Catalog::standard();
        assert!(
            catalog.cards().len() >= 30,
            "{} cards",
            catalog.cards().len()
        );
        assert!(catalog.starter_decks().len() >= 2);
        for deck in catalog.starter_decks() {
            assert_eq!(deck.deck().cards().len(), DECK_SIZE, "{}", deck.list.id);
        }
        assert!(!catalog.recipes().is_empty());
        let spells: Vec<_> = catalog
            .cards()
            .iter()
            .filter_map(|c| c.effect.filter(|_| !c.is_unit()))
            .collect();
        for kind in [EffectKind::Damage, EffectKind::Heal, EffectKind::Draw] {
            assert!(spells.iter().any(|e| e.kind == kind), "no {kind:?} spell");
        }
        let units = catalog.cards().iter().filter_map(|c| match c.kind {
            CardKind::Unit { guard, charge, .. } => Some((guard, charge)),
            CardKind::Spell => None,
        });
        let (guards, charges) = units.fold((0, 0), |(g, c), (gu, ch)| {
            (g + usize::from(gu), c + usize::from(ch))
        });
        assert!(guards > 0 && charges > 0);
    }

    /// A standard row with one field changed, for the rejection table below.
    fn raw_with(change: impl FnOnce(&mut RawCatalog)) -> Result<Catalog, CatalogError> {
        let mut raw = standard::raw();
        change(&mut raw);
        Catalog::from_raw(raw)
    }

    fn card_mut<'a>(raw: &'a mut RawCatalog, id: &str) -> &'a mut RawCard {
        raw.cards
            .iter_mut()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no card {id}"))
    }

    #[test]
    fn bad_rows_are_rejected_with_the_row_named() {
        type Change = Box<dyn FnOnce(&mut RawCatalog)>;
        let cases: Vec<(&str, Change, &str)> = vec![
            (
                "attack out of range",
                Box::new(|r| card_mut(r, "knight").attack = 99),
                "card \"knight\": attack 99 is out of range 0..=12",
            ),
            (
                "zero health unit",
                Box::new(|r| card_mut(r, "knight").health = 0),
                "card \"knight\": health 0 is out of range 1..=12",
            ),
            (
                "cost over the cap",
                Box::new(|r| card_mut(r, "knight").cost = 11),
                "cost 11 is out of range 0..=10",
            ),
            (
                "unknown kind",
                Box::new(|r| card_mut(r, "knight").kind = "hero".into()),
                "kind \"hero\" is not one of",
            ),
            (
                "unknown effect",
                Box::new(|r| card_mut(r, "spark").effect = Some("explode".into())),
                "effect \"explode\"",
            ),
            (
                "spell without effect",
                Box::new(|r| {
                    let c = card_mut(r, "spark");
                    c.effect = None;
                    c.effect_amount = None;
                    c.effect_target = None;
                }),
                "card \"spark\": a spell needs an effect",
            ),
            (
                "half an effect",
                Box::new(|r| card_mut(r, "spark").effect_amount = None),
                "set together",
            ),
            (
                "draw with a target",
                Box::new(|r| card_mut(r, "study").effect_target = Some("any".into())),
                "a draw effect takes",
            ),
            (
                "draw too many",
                Box::new(|r| card_mut(r, "study").effect_amount = Some(5)),
                "effect_amount 5 is out of range 1..=3",
            ),
            (
                "spell with stats",
                Box::new(|r| card_mut(r, "spark").attack = 2),
                "a spell has no attack",
            ),
            (
                "bad id",
                Box::new(|r| card_mut(r, "spark").id = "Spark!".into()),
                "card id \"Spark!\" is invalid",
            ),
            (
                "duplicate card",
                Box::new(|r| {
                    let dup = r.cards[0].clone();
                    r.cards.push(dup);
                }),
                "duplicate card id",
            ),
            (
                "unknown rarity",
                Box::new(|r| card_mut(r, "spark").rarity = "mythic".into()),
                "rarity \"mythic\"",
            ),
            (
                "deck too small",
                Box::new(|r| {
                    r.deck_cards
                        .retain(|d| !(d.deck_id == "iron_vanguard" && d.card_id == "smite"));
                }),
                "deck \"iron_vanguard\" has 19 cards, expected 20",
            ),
            (
                "too many copies",
                Box::new(|r| {
                    if let Some(d) = r
                        .deck_cards
                        .iter_mut()
                        .find(|d| d.deck_id == "iron_vanguard" && d.card_id == "smite")
                    {
                        d.copies = 3;
                    }
                }),
                "3 copies of \"smite\"",
            ),
            (
                "deck names unknown card",
                Box::new(|r| {
                    if let Some(d) = r
                        .deck_cards
                        .iter_mut()
                        .find(|d| d.deck_id == "iron_vanguard" && d.card_id == "smite")
                    {
                        d.card_id = "nope".into();
                    }
                }),
                "starter deck \"iron_vanguard\" names unknown card \"nope\"",
            ),
            (
                "recipe names unknown card",
                Box::new(|r| r.recipes[0].card_id = "nope".into()),
                "names unknown card \"nope\"",
            ),
            (
                "recipe with zero input",
                Box::new(|r| r.recipe_inputs[0].amount = 0),
                "needs 0",
            ),
            (
                "no cards",
                Box::new(|r| *r = RawCatalog::default()),
                "the catalog has no cards",
            ),
        ];
        for (name, change, expected) in cases {
            match raw_with(change) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => assert!(e.to_string().contains(expected), "{name}: {e}"),
            }
        }
    }

    #[test]
    fn player_decks_follow_the_deck_rules() {
        let catalog = Catalog::standard();
        let ok: Vec<(&str, u8)> = catalog
            .cards()
            .iter()
            .take(10)
            .map(|c| (c.id.as_str(), 2))
            .collect();
        assert_eq!(
            catalog.build_deck("mine", &ok).map(|d| d.cards().len()),
            Ok(DECK_SIZE)
        );
        let short = &ok[..9];
        assert!(matches!(
            catalog.build_deck("mine", short),
            Err(CatalogError::DeckSize { size: 18, .. })
        ));
        let mut triple: Vec<(&str, u8)> = ok[..9].to_vec();
        triple[0].1 = 3;
        triple[1].1 = 1;
        assert!(matches!(
            catalog.build_deck("mine", &triple),
            Err(CatalogError::Copies { copies: 3, .. })
        ));
        let mut unknown = ok.clone();
        unknown[0].0 = "nope";
        assert!(matches!(
            catalog.build_deck("mine", &unknown),
            Err(CatalogError::UnknownCard { .. })
        ));
    }
}
