//! The vocabulary of the matching core: ticket and user ids, the mode and region registry,
//! tickets and their members, and the errors of configuration and enqueue.

use std::fmt;

use uuid::Uuid;

/// A user, as the login service knows them (`users.id`).
pub type UserId = Uuid;

/// One queue entry: a solo player or a whole party. The service mints these (unique per shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(pub u64);

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A game mode, by its index in the [`Registry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModeId(u16);

impl ModeId {
    /// The position of this mode in the registry.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A region, by its index in the [`Registry`] (at most [`MAX_REGIONS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(u8);

impl RegionId {
    /// The position of this region in the registry.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// How many regions a registry may hold: a [`RegionSet`] is one 64-bit mask.
pub const MAX_REGIONS: usize = 64;

/// The largest team a mode may have. A match holds at most `2 × MAX_TEAM_SIZE` tickets, and team
/// balancing tries every split of them (2^(2·size−1) at most), so this keeps a formation cheap;
/// card games need no bigger teams.
pub const MAX_TEAM_SIZE: u8 = 6;

/// The regions a ticket accepts: a set, not a preference order (a match is placed in one of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionSet(u64);

impl RegionSet {
    /// No region.
    pub const EMPTY: RegionSet = RegionSet(0);

    /// The set with only `region`.
    pub fn one(region: RegionId) -> RegionSet {
        RegionSet(1u64 << region.0)
    }

    /// This set plus `region`.
    #[must_use]
    pub fn with(self, region: RegionId) -> RegionSet {
        RegionSet(self.0 | (1u64 << region.0))
    }

    pub fn contains(self, region: RegionId) -> bool {
        self.0 & (1u64 << region.0) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The regions in registry order.
    pub fn iter(self) -> impl Iterator<Item = RegionId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            // `trailing_zeros` of a non-zero u64 is below 64, so it fits a u8.
            let i = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            Some(RegionId(i))
        })
    }

    /// The raw mask (bit `i` = region `i`).
    pub fn bits(self) -> u64 {
        self.0
    }
}

impl FromIterator<RegionId> for RegionSet {
    fn from_iter<I: IntoIterator<Item = RegionId>>(iter: I) -> Self {
        iter.into_iter().fold(RegionSet::EMPTY, RegionSet::with)
    }
}

/// A game mode: two teams of `team_size` players ("duel" is 1, "duo" is 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeSpec {
    pub name: String,
    pub team_size: u8,
}

/// The modes and regions a matcher knows, so tickets carry small ids and the service maps names
/// at its edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    modes: Vec<ModeSpec>,
    regions: Vec<String>,
}

impl Registry {
    /// A registry of these modes and regions; names must be unique and non-empty.
    pub fn new(modes: Vec<ModeSpec>, regions: Vec<String>) -> Result<Registry, ConfigError> {
        if modes.is_empty() {
            return Err(ConfigError::NoModes);
        }
        if modes.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooManyModes(modes.len()));
        }
        if regions.is_empty() {
            return Err(ConfigError::NoRegions);
        }
        if regions.len() > MAX_REGIONS {
            return Err(ConfigError::TooManyRegions(regions.len()));
        }
        for (i, m) in modes.iter().enumerate() {
            if m.name.is_empty() || modes[..i].iter().any(|o| o.name == m.name) {
                return Err(ConfigError::BadName(m.name.clone()));
            }
            if m.team_size == 0 || m.team_size > MAX_TEAM_SIZE {
                return Err(ConfigError::TeamSize { mode: m.name.clone(), team_size: m.team_size });
            }
        }
        for (i, r) in regions.iter().enumerate() {
            if r.is_empty() || regions[..i].contains(r) {
                return Err(ConfigError::BadName(r.clone()));
            }
        }
        Ok(Registry { modes, regions })
    }

    /// The mode called `name`.
    pub fn mode(&self, name: &str) -> Option<ModeId> {
        // The constructor caps the count at u16::MAX, so the index fits.
        self.modes.iter().position(|m| m.name == name).map(|i| ModeId(i as u16))
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Option<RegionId> {
        // The constructor caps the count at 64, so the index fits.
        self.regions.iter().position(|r| r == name).map(|i| RegionId(i as u8))
    }

    /// The spec of a mode of this registry, `None` for an id from elsewhere.
    pub fn mode_spec(&self, mode: ModeId) -> Option<&ModeSpec> {
        self.modes.get(mode.index())
    }

    /// The name of a region of this registry, `None` for an id from elsewhere.
    pub fn region_name(&self, region: RegionId) -> Option<&str> {
        self.regions.get(region.index()).map(String::as_str)
    }

    /// Every mode, in id order.
    pub fn modes(&self) -> impl Iterator<Item = (ModeId, &ModeSpec)> {
        self.modes.iter().enumerate().map(|(i, m)| (ModeId(i as u16), m))
    }

    /// Every region, in id order.
    pub fn regions(&self) -> impl Iterator<Item = (RegionId, &str)> {
        self.regions.iter().enumerate().map(|(i, r)| (RegionId(i as u8), r.as_str()))
    }

    pub fn mode_count(&self) -> usize {
        self.modes.len()
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Every region of the registry as one set.
    pub fn all_regions(&self) -> RegionSet {
        self.regions().map(|(id, _)| id).collect()
    }
}

impl Default for Registry {
    /// "duel" (1v1) and "duo" (2v2) in one region, "local": the embedded default.
    fn default() -> Self {
        Registry {
            modes: vec![
                ModeSpec { name: "duel".into(), team_size: 1 },
                ModeSpec { name: "duo".into(), team_size: 2 },
            ],
            regions: vec!["local".into()],
        }
    }
}

/// One player of a ticket with the Glicko-2 rating read at enqueue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Member {
    pub user_id: UserId,
    pub rating: f64,
    pub deviation: f64,
}

/// A request to be matched: one player or a party that must end up on one team.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticket {
    pub id: TicketId,
    pub members: Vec<Member>,
    pub mode: ModeId,
    pub regions: RegionSet,
    /// Unix ms. Waiting time, and so the rating window, counts from here; a ticket put back after
    /// a failed allocation keeps its original time.
    pub enqueued_at_ms: i64,
}

impl Ticket {
    /// The rating the window compares: the mean of the members' ratings.
    pub fn rating(&self) -> f64 {
        if self.members.is_empty() {
            return 0.0;
        }
        self.members.iter().map(|m| m.rating).sum::<f64>() / self.members.len() as f64
    }

    /// The sum of the members' ratings, which team balancing compares.
    pub fn rating_sum(&self) -> f64 {
        self.members.iter().map(|m| m.rating).sum()
    }

    pub fn players(&self) -> usize {
        self.members.len()
    }
}

/// A matcher configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("the registry has no mode")]
    NoModes,
    #[error("the registry has {0} modes, at most 65535")]
    TooManyModes(usize),
    #[error("the registry has no region")]
    NoRegions,
    #[error("the registry has {0} regions, at most 64")]
    TooManyRegions(usize),
    #[error("mode or region name {0:?} is empty or repeated")]
    BadName(String),
    #[error("mode {mode:?} has team size {team_size}, expected 1 to 6")]
    TeamSize { mode: String, team_size: u8 },
    #[error("window curve: {0}")]
    Curve(String),
    #[error("ticket lifetime {0} ms must be positive")]
    TicketTtl(i64),
    #[error("{name} is {value}, expected at least {min}")]
    TooSmall { name: &'static str, value: i64, min: i64 },
}

/// Why a ticket was refused at enqueue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnqueueError {
    #[error("ticket {0} is already queued")]
    DuplicateTicket(TicketId),
    #[error("user {0} is already queued")]
    UserAlreadyQueued(UserId),
    #[error("user {0} appears twice in one ticket")]
    DuplicateMember(UserId),
    #[error("mode id {0} is not in the registry")]
    UnknownMode(usize),
    #[error("ticket accepts no region")]
    NoRegion,
    #[error("region mask {0:#x} names a region that is not in the registry")]
    UnknownRegion(u64),
    #[error("ticket has no members")]
    EmptyParty,
    #[error("party of {size} does not fit a team of {team_size}")]
    PartyTooLarge { size: usize, team_size: u8 },
    #[error("the matcher holds as many tickets as it can index")]
    Full,
    #[error("rating {rating} / deviation {deviation} of user {user_id} is not usable")]
    BadRating { user_id: UserId, rating: f64, deviation: f64 },
}
