-- Game data (read by the instance server's catalog loader, served by the card catalog): card
-- definitions, starter decks and crafting recipes, seeded here. The loader validates every value
-- at start (stat ranges, deck sizes, references), so the columns carry only the constraints that
-- keep rows addressable; ranges live in one place, instance-server/src/catalog/mod.rs.
-- Later balance changes arrive as new migrations that UPDATE these rows.

CREATE TABLE card_definitions (
    -- Stable text id, used on the wire (HandCard.card_id) and in inventories and decks.
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    -- 'unit' or 'spell'.
    kind            TEXT NOT NULL,
    cost            INTEGER NOT NULL,
    -- Units only; 0 for spells.
    attack          INTEGER NOT NULL DEFAULT 0,
    health          INTEGER NOT NULL DEFAULT 0,
    -- Keywords: guard (must be attacked first), charge (may attack the turn it is played).
    guard           INTEGER NOT NULL DEFAULT 0,
    charge          INTEGER NOT NULL DEFAULT 0,
    -- The spell's effect, or the unit's on-play effect: 'damage', 'heal', 'draw' or NULL.
    effect          TEXT,
    effect_amount   INTEGER,
    -- Who the effect may aim at: 'any', 'unit', 'enemy', 'friendly' (chosen by the player),
    -- 'enemy_hero', 'friendly_hero', 'both_heroes' (implicit) or 'none' (draw).
    effect_target   TEXT,
    -- 'common', 'rare', 'epic' or 'legendary', for crafting and display.
    rarity          TEXT NOT NULL,
    -- Rules text shown to players.
    text            TEXT NOT NULL DEFAULT ''
);

CREATE TABLE starter_decks (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT ''
);

CREATE TABLE starter_deck_cards (
    deck_id         TEXT NOT NULL REFERENCES starter_decks(id) ON DELETE CASCADE,
    card_id         TEXT NOT NULL REFERENCES card_definitions(id),
    copies          INTEGER NOT NULL,
    PRIMARY KEY (deck_id, card_id)
);

-- A recipe turns resources (summed over recipe_inputs) into `copies` of one card.
CREATE TABLE recipes (
    id              TEXT PRIMARY KEY,
    card_id         TEXT NOT NULL REFERENCES card_definitions(id),
    copies          INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE recipe_inputs (
    recipe_id       TEXT NOT NULL REFERENCES recipes(id) ON DELETE CASCADE,
    -- A resource name, e.g. 'gold', 'ore', 'timber', 'essence'.
    resource        TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    PRIMARY KEY (recipe_id, resource)
);

INSERT INTO card_definitions (id, name, kind, cost, attack, health, guard, charge, effect, effect_amount, effect_target, rarity, text) VALUES
    ('tavern_rat', 'Tavern Rat', 'unit', 1, 1, 1, 0, 1, NULL, NULL, NULL, 'common', 'Charge.'),
    ('squire', 'Squire', 'unit', 1, 1, 2, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('apprentice', 'Apprentice', 'unit', 2, 1, 1, 0, 0, 'draw', 1, 'none', 'common', 'On play: draw a card.'),
    ('timber_wolf', 'Timber Wolf', 'unit', 2, 2, 1, 0, 1, NULL, NULL, NULL, 'common', 'Charge.'),
    ('footman', 'Footman', 'unit', 2, 2, 3, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('shield_bearer', 'Shield Bearer', 'unit', 2, 1, 4, 1, 0, NULL, NULL, NULL, 'common', 'Guard.'),
    ('field_medic', 'Field Medic', 'unit', 2, 2, 2, 0, 0, 'heal', 3, 'friendly', 'common', 'On play: restore 3 health to a friendly character.'),
    ('spearman', 'Spearman', 'unit', 3, 3, 3, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('stone_sentry', 'Stone Sentry', 'unit', 3, 2, 5, 1, 0, NULL, NULL, NULL, 'common', 'Guard.'),
    ('border_raider', 'Border Raider', 'unit', 3, 3, 2, 0, 1, NULL, NULL, NULL, 'common', 'Charge.'),
    ('hedge_wizard', 'Hedge Wizard', 'unit', 3, 2, 3, 0, 0, 'damage', 2, 'any', 'rare', 'On play: deal 2 damage.'),
    ('knight', 'Knight', 'unit', 4, 4, 4, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('ogre_brute', 'Ogre Brute', 'unit', 4, 5, 3, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('gatekeeper', 'Gatekeeper', 'unit', 4, 3, 6, 1, 0, NULL, NULL, NULL, 'rare', 'Guard.'),
    ('cavalry_rider', 'Cavalry Rider', 'unit', 4, 4, 2, 0, 1, NULL, NULL, NULL, 'rare', 'Charge.'),
    ('battle_priest', 'Battle Priest', 'unit', 4, 3, 4, 0, 0, 'heal', 4, 'friendly_hero', 'rare', 'On play: restore 4 health to your hero.'),
    ('court_scholar', 'Court Scholar', 'unit', 5, 3, 4, 0, 0, 'draw', 2, 'none', 'rare', 'On play: draw 2 cards.'),
    ('mountain_troll', 'Mountain Troll', 'unit', 5, 5, 6, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('shadow_assassin', 'Shadow Assassin', 'unit', 5, 5, 2, 0, 1, NULL, NULL, NULL, 'rare', 'Charge.'),
    ('iron_paladin', 'Iron Paladin', 'unit', 5, 4, 5, 1, 0, NULL, NULL, NULL, 'rare', 'Guard.'),
    ('bombardier', 'Bombardier', 'unit', 5, 4, 3, 0, 0, 'damage', 3, 'enemy_hero', 'rare', 'On play: deal 3 damage to the enemy hero.'),
    ('hill_giant', 'Hill Giant', 'unit', 6, 6, 7, 0, 0, NULL, NULL, NULL, 'common', ''),
    ('war_chief', 'War Chief', 'unit', 6, 5, 5, 0, 1, NULL, NULL, NULL, 'epic', 'Charge.'),
    ('stone_golem', 'Stone Golem', 'unit', 7, 6, 9, 1, 0, NULL, NULL, NULL, 'epic', 'Guard.'),
    ('elder_dragon', 'Elder Dragon', 'unit', 8, 8, 8, 0, 0, 'damage', 4, 'enemy', 'legendary', 'On play: deal 4 damage to an enemy.'),
    ('ancient_titan', 'Ancient Titan', 'unit', 10, 10, 10, 1, 0, NULL, NULL, NULL, 'legendary', 'Guard.'),
    ('spark', 'Spark', 'spell', 1, 0, 0, 0, 0, 'damage', 2, 'any', 'common', 'Deal 2 damage.'),
    ('bandage', 'Bandage', 'spell', 1, 0, 0, 0, 0, 'heal', 4, 'any', 'common', 'Restore 4 health.'),
    ('study', 'Study', 'spell', 1, 0, 0, 0, 0, 'draw', 1, 'none', 'common', 'Draw a card.'),
    ('smite', 'Smite', 'spell', 2, 0, 0, 0, 0, 'damage', 3, 'unit', 'common', 'Deal 3 damage to a unit.'),
    ('volley', 'Volley', 'spell', 2, 0, 0, 0, 0, 'damage', 3, 'enemy_hero', 'common', 'Deal 3 damage to the enemy hero.'),
    ('lightning_bolt', 'Lightning Bolt', 'spell', 3, 0, 0, 0, 0, 'damage', 4, 'enemy', 'common', 'Deal 4 damage to an enemy.'),
    ('arcane_insight', 'Arcane Insight', 'spell', 3, 0, 0, 0, 0, 'draw', 2, 'none', 'rare', 'Draw 2 cards.'),
    ('healing_light', 'Healing Light', 'spell', 3, 0, 0, 0, 0, 'heal', 8, 'friendly', 'common', 'Restore 8 health to a friendly character.'),
    ('fireball', 'Fireball', 'spell', 4, 0, 0, 0, 0, 'damage', 6, 'any', 'rare', 'Deal 6 damage.'),
    ('second_wind', 'Second Wind', 'spell', 4, 0, 0, 0, 0, 'heal', 10, 'friendly_hero', 'rare', 'Restore 10 health to your hero.'),
    ('cataclysm', 'Cataclysm', 'spell', 5, 0, 0, 0, 0, 'damage', 5, 'both_heroes', 'epic', 'Deal 5 damage to both heroes.'),
    ('tome_of_ages', 'Tome of Ages', 'spell', 5, 0, 0, 0, 0, 'draw', 3, 'none', 'epic', 'Draw 3 cards.'),
    ('pyroblast', 'Pyroblast', 'spell', 8, 0, 0, 0, 0, 'damage', 10, 'any', 'legendary', 'Deal 10 damage.');

INSERT INTO starter_decks (id, name, description) VALUES
    ('iron_vanguard', 'Iron Vanguard', 'Guards and healing: hold the line, then win late.'),
    ('ember_raiders', 'Ember Raiders', 'Charge and burn: strike fast before the enemy sets up.'),
    ('arcane_circle', 'Arcane Circle', 'Card draw and big spells: outlast, then overwhelm.');

INSERT INTO starter_deck_cards (deck_id, card_id, copies) VALUES
    ('iron_vanguard', 'squire', 2),
    ('iron_vanguard', 'shield_bearer', 2),
    ('iron_vanguard', 'field_medic', 2),
    ('iron_vanguard', 'footman', 2),
    ('iron_vanguard', 'stone_sentry', 2),
    ('iron_vanguard', 'gatekeeper', 2),
    ('iron_vanguard', 'battle_priest', 1),
    ('iron_vanguard', 'iron_paladin', 2),
    ('iron_vanguard', 'mountain_troll', 1),
    ('iron_vanguard', 'stone_golem', 1),
    ('iron_vanguard', 'bandage', 1),
    ('iron_vanguard', 'healing_light', 1),
    ('iron_vanguard', 'smite', 1),
    ('ember_raiders', 'tavern_rat', 2),
    ('ember_raiders', 'timber_wolf', 2),
    ('ember_raiders', 'spark', 2),
    ('ember_raiders', 'border_raider', 2),
    ('ember_raiders', 'hedge_wizard', 2),
    ('ember_raiders', 'lightning_bolt', 2),
    ('ember_raiders', 'cavalry_rider', 2),
    ('ember_raiders', 'ogre_brute', 1),
    ('ember_raiders', 'fireball', 2),
    ('ember_raiders', 'shadow_assassin', 1),
    ('ember_raiders', 'war_chief', 1),
    ('ember_raiders', 'volley', 1),
    ('arcane_circle', 'apprentice', 2),
    ('arcane_circle', 'study', 2),
    ('arcane_circle', 'cataclysm', 1),
    ('arcane_circle', 'spearman', 2),
    ('arcane_circle', 'arcane_insight', 2),
    ('arcane_circle', 'knight', 2),
    ('arcane_circle', 'court_scholar', 1),
    ('arcane_circle', 'fireball', 1),
    ('arcane_circle', 'hill_giant', 1),
    ('arcane_circle', 'tome_of_ages', 1),
    ('arcane_circle', 'bombardier', 1),
    ('arcane_circle', 'second_wind', 1),
    ('arcane_circle', 'elder_dragon', 1),
    ('arcane_circle', 'pyroblast', 1),
    ('arcane_circle', 'smite', 1);

INSERT INTO recipes (id, card_id, copies) VALUES
    ('craft_knight', 'knight', 1),
    ('craft_gatekeeper', 'gatekeeper', 1),
    ('craft_fireball', 'fireball', 1),
    ('craft_court_scholar', 'court_scholar', 1),
    ('craft_stone_golem', 'stone_golem', 1),
    ('craft_elder_dragon', 'elder_dragon', 1),
    ('craft_spark_pair', 'spark', 2);

INSERT INTO recipe_inputs (recipe_id, resource, amount) VALUES
    ('craft_knight', 'gold', 2),
    ('craft_knight', 'ore', 3),
    ('craft_gatekeeper', 'ore', 3),
    ('craft_gatekeeper', 'timber', 3),
    ('craft_fireball', 'essence', 4),
    ('craft_fireball', 'gold', 2),
    ('craft_court_scholar', 'essence', 3),
    ('craft_court_scholar', 'gold', 3),
    ('craft_stone_golem', 'essence', 2),
    ('craft_stone_golem', 'gold', 4),
    ('craft_stone_golem', 'ore', 6),
    ('craft_elder_dragon', 'essence', 10),
    ('craft_elder_dragon', 'gold', 10),
    ('craft_elder_dragon', 'ore', 5),
    ('craft_spark_pair', 'essence', 2),
    ('craft_spark_pair', 'timber', 1);
