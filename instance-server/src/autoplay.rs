//! A bot that plays one seat of a match over the wire: snapshots in, game commands out, chosen
//! by [`Bot`]. Sans-IO: the caller moves the messages (the end-to-end tests, the bench, demos).
//!
//! The seat mapping is the player's own: "you" is seat A and the opponent seat B, whatever the
//! server calls them, since only the user ids travel on the wire.

use std::sync::Arc;

use protocol::tavern::{GameCommandT, GameSnapshotT};

use crate::bot::Bot;
use crate::catalog::Catalog;
use crate::rules::{Command, PlayerView};
use crate::wire::{self, MatchPlayers, SnapshotError};

/// See the module documentation.
pub struct AutoPlayer {
    players: MatchPlayers,
    view: PlayerView,
    bot: Bot,
    catalog: Arc<Catalog>,
}

impl AutoPlayer {
    /// A player for the seat `snapshot` was sent to; `seed` makes its choices reproducible.
    pub fn new(snapshot: &GameSnapshotT, catalog: Arc<Catalog>, seed: u64) -> Result<AutoPlayer, SnapshotError> {
        let players = MatchPlayers {
            match_id: snapshot.match_id.clone(),
            seats: [
                (snapshot.you.player.user_id.clone(), snapshot.you.player.username.clone()),
                (snapshot.opponent.player.user_id.clone(), snapshot.opponent.player.username.clone()),
            ],
        };
        let view = wire::view_from_snapshot(snapshot, &catalog, &players)?;
        Ok(AutoPlayer { players, view, bot: Bot::new(seed), catalog })
    }

    /// Takes a fresh snapshot as the view.
    pub fn update(&mut self, snapshot: &GameSnapshotT) -> Result<(), SnapshotError> {
        self.view = wire::view_from_snapshot(snapshot, &self.catalog, &self.players)?;
        Ok(())
    }

    pub fn view(&self) -> &PlayerView {
        &self.view
    }

    /// The game is over (as of the last snapshot).
    pub fn over(&self) -> bool {
        self.view.result.is_some()
    }

    pub fn my_turn(&self) -> bool {
        !self.over() && self.view.my_turn()
    }

    /// The command to send now: the bot's choice on our turn (ending the turn when it has none),
    /// nothing otherwise.
    pub fn next_command(&mut self) -> Option<GameCommandT> {
        if !self.my_turn() {
            return None;
        }
        let command = self.bot.choose(&self.view, &self.catalog).unwrap_or(Command::EndTurn);
        Some(wire::command_to_wire(&command, &self.players))
    }
}

/// How a bot's game over the wire ended for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Won,
    Lost,
    Draw,
}

/// Why [`play`] stopped before the end of the game.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    #[error("link: {0}")]
    Link(#[from] transport::ClientError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("the server answered {0}")]
    Refused(String),
    #[error("the game did not end within {0} steps")]
    TooLong(usize),
}

/// Steps (a command or a wait for the opponent) a game may take before [`play`] gives up.
const MAX_STEPS: usize = 10_000;

/// Joins a match on `link` with `join_token` and plays it to the end with a bot, pausing `pace`
/// between steps and backing off when the server says it is rate limited. `timeout` bounds each
/// wait for the server.
pub async fn play(
    link: &mut transport::Client,
    join_token: &str,
    catalog: Arc<Catalog>,
    seed: u64,
    pace: std::time::Duration,
    timeout: std::time::Duration,
) -> Result<Outcome, PlayError> {
    use protocol::tavern::{ClientBodyT, JoinMatchT, ServerBodyT, SnapshotRequestT};
    let mut cid = 0u32;
    let join = protocol::build!(JoinMatchT { protocol_version: protocol::PROTOCOL_VERSION, join_token: join_token.to_owned() });
    let snapshot = ask(link, &mut cid, ClientBodyT::JoinMatch(Box::new(join)), timeout).await?;
    let ServerBodyT::GameSnapshot(snapshot) = snapshot.body else { return Err(PlayError::Refused(format!("{:?}", snapshot.body))) };
    let mut player = AutoPlayer::new(&snapshot, catalog, seed)?;
    for _ in 0..MAX_STEPS {
        if let Some(result) = player.view().result {
            return Ok(match result.winner {
                None => Outcome::Draw,
                Some(seat) if seat == player.view().viewer => Outcome::Won,
                Some(_) => Outcome::Lost,
            });
        }
        if let Some(command) = player.next_command() {
            let answer = ask(link, &mut cid, ClientBodyT::GameCommand(Box::new(command)), timeout).await?;
            if !matches!(answer.body, ServerBodyT::Ack(_)) {
                return Err(PlayError::Refused(format!("{:?}", answer.body)));
            }
        } else {
            // The opponent's turn: their events come as pushes.
            link.recv(timeout).await?;
        }
        tokio::time::sleep(pace).await;
        let request = ClientBodyT::SnapshotRequest(Box::new(protocol::build!(SnapshotRequestT {})));
        let fresh = ask(link, &mut cid, request, timeout).await?;
        let ServerBodyT::GameSnapshot(fresh) = fresh.body else { return Err(PlayError::Refused(format!("{:?}", fresh.body))) };
        player.update(&fresh)?;
    }
    Err(PlayError::TooLong(MAX_STEPS))
}

/// Sends a request and waits for its answer; a rate-limit notice (which answers nothing: the
/// request was dropped) makes it wait a second and send again, a few times at most.
async fn ask(
    link: &mut transport::Client,
    cid: &mut u32,
    body: protocol::tavern::ClientBodyT,
    timeout: std::time::Duration,
) -> Result<protocol::tavern::ServerMessageT, PlayError> {
    use protocol::ErrorCode;
    use protocol::tavern::ServerBodyT;
    for _ in 0..5 {
        *cid += 1;
        link.send_request(*cid, body.clone())?;
        let mut limited = false;
        for _ in 0..MAX_STEPS {
            let message = link.recv(timeout).await?;
            if message.cid == *cid {
                return Ok(message);
            }
            if let ServerBodyT::Error(e) = &message.body
                && message.cid == 0
                && e.error_code() == Some(ErrorCode::RateLimited)
            {
                limited = true;
                break;
            }
        }
        if !limited {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Err(PlayError::Refused("no answer, or rate limited again and again".into()))
}
