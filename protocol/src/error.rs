//! The stable error codes every Tavern process speaks, on the wire and in REST bodies.
//!
//! A code's number, its snake_case name and its meaning never change once released; new codes
//! are appended inside their group. Clients match on the number, humans read the message.

/// Declares the enum and its tables in one place so the number, name, message and HTTP status of a
/// code can never drift apart.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal, $status:literal, $msg:literal; )*) => {
        /// A stable numeric error code. Groups: 1xxx general, 2xxx auth and tokens, 3xxx accounts
        /// and friends, 4xxx chat and presence, 5xxx queue and matches, 6xxx game rules, 7xxx items.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant = $num, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code for a number read off the wire, if it is one we know.
            pub fn from_u16(n: u16) -> Option<Self> {
                match n {
                    $( $num => Some(ErrorCode::$variant), )*
                    _ => None,
                }
            }

            /// The stable snake_case name (the `error` field of REST error bodies).
            pub fn name(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// A default human-readable message.
            pub fn message(self) -> &'static str {
                match self { $( ErrorCode::$variant => $msg, )* }
            }

            /// The HTTP status a REST endpoint answers with for this code.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }
        }
    };
}

error_codes! {
    /// Something went wrong on the server; the detail is in the server log.
    Internal = 1000, "internal", 500, "internal server error";
    /// The request could not be parsed (malformed JSON, bad FlatBuffer, wrong field types).
    Malformed = 1001, "malformed", 400, "the request could not be parsed";
    /// A body or frame is larger than the limit.
    TooLarge = 1002, "too_large", 413, "the request or frame is too large";
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion = 1003, "unsupported_version", 400, "unsupported protocol version";
    /// Too many requests from this address, user or link.
    RateLimited = 1004, "rate_limited", 429, "too many requests, slow down";
    /// No such route or resource.
    NotFound = 1005, "not_found", 404, "not found";
    /// A field is well-formed but its value is not acceptable.
    InvalidField = 1006, "invalid_field", 422, "a field has an invalid value";
    /// The body is not JSON (wrong or missing content type).
    UnsupportedMediaType = 1007, "unsupported_media_type", 415, "expected a JSON body";
    /// A dependency (database, bus) is down; retry later.
    Unavailable = 1008, "unavailable", 503, "service temporarily unavailable";
    /// The method is not allowed on this route.
    MethodNotAllowed = 1009, "method_not_allowed", 405, "method not allowed";
    /// The first message on a link must be Hello.
    HelloRequired = 1010, "hello_required", 400, "the first message must be hello";
    /// A message arrived that is not valid in the link's current state.
    UnexpectedMessage = 1011, "unexpected_message", 400, "message not expected now";
    /// The server is shutting down.
    ShuttingDown = 1012, "shutting_down", 503, "server is shutting down";
    /// The peer could not keep up with what it was sent.
    SlowConsumer = 1013, "slow_consumer", 503, "link closed: outgoing queue overflowed";
    /// The message type is not one this server knows (typically a newer client).
    UnknownMessage = 1014, "unknown_message", 400, "unknown message type";

    /// No credentials were presented.
    Unauthenticated = 2000, "unauthenticated", 401, "authentication required";
    /// The token is malformed or its signature does not verify.
    TokenInvalid = 2001, "token_invalid", 401, "invalid token";
    /// The token has expired.
    TokenExpired = 2002, "token_expired", 401, "token expired";
    /// The token (or its session) was revoked.
    TokenRevoked = 2003, "token_revoked", 401, "token revoked";
    /// The token names a signing key this server does not hold.
    UnknownKey = 2004, "unknown_key", 401, "token signed with an unknown key";
    /// Wrong username or password.
    InvalidCredentials = 2005, "invalid_credentials", 401, "invalid username or password";
    /// Too many failed logins; the account or address is locked for a while.
    LockedOut = 2006, "locked_out", 429, "too many failed logins, try again later";
    /// The username is already registered.
    UsernameTaken = 2007, "username_taken", 409, "username already taken";
    /// The refresh token is unknown or expired.
    RefreshTokenInvalid = 2008, "refresh_token_invalid", 401, "invalid refresh token";
    /// A spent refresh token was presented again; its whole family is revoked.
    RefreshTokenReused = 2009, "refresh_token_reused", 401, "refresh token reuse detected, session revoked";
    /// The join token is malformed, forged or expired.
    JoinTokenInvalid = 2010, "join_token_invalid", 401, "invalid join token";
    /// The join token was already used.
    JoinTokenReplayed = 2011, "join_token_replayed", 401, "join token already used";
    /// The join token is for another match or instance.
    JoinTokenWrongMatch = 2012, "join_token_wrong_match", 403, "join token is for another match";
    /// Authenticated, but not allowed to do this.
    Forbidden = 2013, "forbidden", 403, "not allowed";
    /// The password does not meet the rules.
    WeakPassword = 2014, "weak_password", 422, "password must be 8 to 128 characters";
    /// The username does not meet the rules.
    InvalidUsername = 2015, "invalid_username", 422, "username must be 3 to 24 letters, digits, '_' or '-'";
    /// The user logged in elsewhere; this link was replaced.
    SessionReplaced = 2016, "session_replaced", 409, "session taken over by a newer login";
    /// The resume token is unknown or its session has ended.
    ResumeTokenInvalid = 2017, "resume_token_invalid", 401, "invalid or expired resume token";
    /// The account is banned.
    Banned = 2018, "banned", 403, "account banned";

    /// No such user.
    UserNotFound = 3000, "user_not_found", 404, "user not found";
    /// The users are already friends.
    AlreadyFriends = 3001, "already_friends", 409, "already friends";
    /// A friend request between these users is already pending.
    FriendRequestPending = 3002, "friend_request_pending", 409, "friend request already pending";
    /// There is no pending friend request to act on.
    NoFriendRequest = 3003, "no_friend_request", 404, "no pending friend request";
    /// One user has blocked the other.
    Blocked = 3004, "blocked", 403, "blocked";
    /// The action targets the caller themself.
    SelfTarget = 3005, "self_target", 422, "cannot do that to yourself";
    /// The users are not friends.
    NotFriends = 3006, "not_friends", 404, "not friends";
    /// The friend list is full.
    FriendLimit = 3007, "friend_limit", 409, "friend list is full";

    /// The chat message is empty or too long.
    MessageTooLong = 4000, "message_too_long", 422, "chat message is empty or too long";
    /// No such chat room.
    RoomNotFound = 4001, "room_not_found", 404, "chat room not found";
    /// The user is not a member of that room.
    NotInRoom = 4002, "not_in_room", 403, "not in that room";
    /// The room is full or the user is in too many rooms.
    RoomLimit = 4003, "room_limit", 409, "room limit reached";

    /// The user already has a ticket in the queue.
    AlreadyQueued = 5000, "already_queued", 409, "already in the queue";
    /// The user has no ticket in the queue.
    NotQueued = 5001, "not_queued", 404, "not in the queue";
    /// No instance capacity right now; the ticket stays queued.
    NoCapacity = 5002, "no_capacity", 503, "no game server available, still queued";
    /// No such match.
    MatchNotFound = 5003, "match_not_found", 404, "match not found";
    /// The game mode or region is unknown.
    UnknownMode = 5004, "unknown_mode", 422, "unknown game mode or region";
    /// The ticket expired before a match was found.
    TicketExpired = 5005, "ticket_expired", 408, "queue ticket expired";
    /// The user is in a match and cannot do this now.
    InMatch = 5006, "in_match", 409, "already in a match";

    /// It is not this player's turn.
    NotYourTurn = 6000, "not_your_turn", 409, "not your turn";
    /// Not enough mana for that card.
    NotEnoughMana = 6001, "not_enough_mana", 409, "not enough mana";
    /// The card is not in the player's hand.
    CardNotInHand = 6002, "card_not_in_hand", 409, "card not in hand";
    /// The target is not valid for this action.
    InvalidTarget = 6003, "invalid_target", 409, "invalid target";
    /// The unit cannot attack now (summoning sickness or already attacked).
    CannotAttack = 6004, "cannot_attack", 409, "unit cannot attack now";
    /// An enemy guard must be attacked first.
    GuardInTheWay = 6005, "guard_in_the_way", 409, "an enemy guard must be attacked first";
    /// The board is full.
    BoardFull = 6006, "board_full", 409, "board is full";
    /// The game is over.
    GameOver = 6007, "game_over", 409, "game is over";
    /// The unit does not exist or is not the player's.
    NotYourUnit = 6008, "not_your_unit", 409, "not your unit";

    /// The item or card is unknown.
    UnknownItem = 7000, "unknown_item", 404, "unknown card or item";
    /// Not enough resources or copies.
    InsufficientResources = 7001, "insufficient_resources", 409, "not enough resources";
    /// The deck does not follow the deck rules.
    InvalidDeck = 7002, "invalid_deck", 422, "invalid deck";
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_names_round_trip_and_are_unique() {
        let mut names = HashSet::new();
        let mut nums = HashSet::new();
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c.code()), Some(c));
            assert!(names.insert(c.name()), "duplicate name {}", c.name());
            assert!(nums.insert(c.code()), "duplicate number {}", c.code());
            assert!(c.name().chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'));
            assert!(!c.message().is_empty() && !c.message().ends_with('.'));
            assert!((400..600).contains(&c.http_status()));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(65535), None);
    }

    #[test]
    fn released_codes_keep_their_numbers() {
        // A change here breaks every deployed client: add codes, never renumber.
        let pinned = [
            (ErrorCode::Internal, 1000),
            (ErrorCode::Malformed, 1001),
            (ErrorCode::TokenExpired, 2002),
            (ErrorCode::RefreshTokenReused, 2009),
            (ErrorCode::JoinTokenReplayed, 2011),
            (ErrorCode::UserNotFound, 3000),
            (ErrorCode::NotYourTurn, 6000),
        ];
        for (c, n) in pinned {
            assert_eq!(c.code(), n, "{c}");
        }
    }
}
