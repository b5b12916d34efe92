//! The sans-IO session core on a virtual clock: timeouts, grace periods, the missed-push buffer,
//! goodbye, takeover and revocation cut-offs, driven call by call with no sockets and no sleeps.

use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use gcs::session::{Action, Handled, SessionConfig, SessionCore};
use migrations::testing::TestDb;
use protocol::tavern::{ClientBodyT, ClientMessageT, HelloT, PingT, PongT, ServerBodyT, ServerMessageT, WelcomeT};
use protocol::{ErrorCode, PROTOCOL_VERSION, build};
use rand::SeedableRng;
use rand::rngs::StdRng;
use token_service::{InProcessRevocations, Keyring, Revocation, TokenConfig, Tokens};
use transport::LinkId;
use uuid::Uuid;

/// A fixed clock reading; the core only ever sees times passed in.
const T0: i64 = 1_700_000_000_000;

struct Harness {
    core: SessionCore,
    tokens: Tokens,
    db: TestDb,
}

impl Harness {
    async fn new(config: SessionConfig) -> Harness {
        let db = TestDb::sqlite().await;
        let tokens =
            Tokens::new(Keyring::generate(), TokenConfig::default(), db.db.clone(), Arc::new(InProcessRevocations::new()));
        let core = SessionCore::new(config, tokens.session_verifier(), Box::new(StdRng::seed_from_u64(7)), T0);
        Harness { core, tokens, db }
    }

    fn token(&self, user: Uuid, session: Uuid, at: i64) -> Result<String> {
        Ok(self.tokens.mint_session(user, "ada", session, at)?.token)
    }

    /// Opens `link` and says hello with `token`; returns the welcome.
    fn login(&mut self, link: LinkId, token: &str, now: i64) -> Result<WelcomeT> {
        self.core.link_opened(link, now);
        let (actions, _) = self.core.message(link, hello(Some(token), None), now);
        only_welcome(&actions, link)
    }

    fn resume(&mut self, link: LinkId, resume_token: &str, now: i64) -> Vec<Action> {
        self.core.link_opened(link, now);
        self.core.message(link, hello(None, Some(resume_token)), now).0
    }
}

fn hello(token: Option<&str>, resume: Option<&str>) -> ClientMessageT {
    let hello = build!(HelloT {
        protocol_version: PROTOCOL_VERSION,
        token: token.map(str::to_owned),
        resume_token: resume.map(str::to_owned),
    });
    ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello)))
}

fn push(n: i64) -> ServerMessageT {
    ServerMessageT::push(ServerBodyT::Pong(Box::new(build!(PongT { client_time_ms: n }))))
}

fn only_welcome(actions: &[Action], link: LinkId) -> Result<WelcomeT> {
    for action in actions {
        if let Action::Send { link: l, message } = action
            && *l == link
            && let ServerBodyT::Welcome(w) = &message.body
        {
            return Ok((**w).clone());
        }
    }
    bail!("no welcome in {actions:?}")
}

/// The closing error and close sent to `link`, as (error code, close code).
fn refusal(actions: &[Action], link: LinkId) -> Option<(u16, u16)> {
    let error = actions.iter().find_map(|a| match a {
        Action::Send { link: l, message } if *l == link => message.body.as_error().filter(|e| e.closes_link).map(|e| e.code),
        _ => None,
    });
    let close = actions.iter().find_map(|a| match a {
        Action::Close { link: l, code } if *l == link => Some(*code),
        _ => None,
    });
    Some((error?, close?))
}

fn closed_with(actions: &[Action], link: LinkId) -> Option<u16> {
    actions.iter().find_map(|a| match a {
        Action::Close { link: l, code } if *l == link => Some(*code),
        _ => None,
    })
}

fn ended(actions: &[Action], user: Uuid) -> bool {
    actions.iter().any(|a| matches!(a, Action::SessionEnded { user_id, .. } if *user_id == user))
}

#[tokio::test]
async fn silent_links_and_links_without_hello_are_closed_on_time() -> Result<()> {
    let config = SessionConfig { dead_link_timeout_ms: 3_000, hello_timeout_ms: 2_000, ..SessionConfig::default() };
    let mut h = Harness::new(config).await;
    let (quiet, mute) = (LinkId::new(0, 1), LinkId::new(0, 2));
    h.login(quiet, &h.token(Uuid::new_v4(), Uuid::new_v4(), T0)?, T0)?;
    h.core.link_opened(mute, T0);
    assert!(h.core.tick(T0 + 1_999).is_empty(), "nothing is due yet");
    let actions = h.core.tick(T0 + 2_000);
    assert_eq!(refusal(&actions, mute), Some((ErrorCode::HelloRequired.code(), ErrorCode::HelloRequired.code())));
    assert_eq!(closed_with(&actions, quiet), None);
    // A ping keeps the link alive; silence after it does not.
    let (actions, _) = h.core.message(quiet, ClientMessageT::request(2, ClientBodyT::Ping(Box::new(PingT::default()))), T0 + 2_500);
    assert!(matches!(&actions[..], [Action::Send { message, .. }] if message.body.as_pong().is_some()), "{actions:?}");
    assert!(h.core.tick(T0 + 5_499).is_empty());
    assert_eq!(closed_with(&h.core.tick(T0 + 5_500), quiet), Some(0));
    assert_eq!(h.core.stats().detached_sessions, 1, "a dead link detaches its session");
    h.db.drop_db().await;
    Ok(())
}

#[tokio::test]
async fn a_detached_session_ends_when_its_grace_period_runs_out() -> Result<()> {
    let mut h = Harness::new(SessionConfig { resume_grace_ms: 30_000, ..SessionConfig::default() }).await;
    let user = Uuid::new_v4();
    let welcome = h.login(LinkId::new(0, 1), &h.token(user, Uuid::new_v4(), T0)?, T0)?;
    h.core.link_closed(LinkId::new(0, 1), T0 + 1_000);
    assert!(!ended(&h.core.tick(T0 + 30_999), user));
    assert!(ended(&h.core.tick(T0 + 31_000), user));
    let link = LinkId::new(1, 9);
    let actions = h.resume(link, &welcome.resume_token, T0 + 31_001);
    let code = ErrorCode::ResumeTokenInvalid.code();
    assert_eq!(refusal(&actions, link), Some((code, code)));
    h.db.drop_db().await;
    Ok(())
}

#[tokio::test]
async fn an_overflowing_missed_push_buffer_ends_the_session() -> Result<()> {
    let mut h = Harness::new(SessionConfig { missed_push_capacity: 3, ..SessionConfig::default() }).await;
    let user = Uuid::new_v4();
    let welcome = h.login(LinkId::new(0, 1), &h.token(user, Uuid::new_v4(), T0)?, T0)?;
    h.core.link_closed(LinkId::new(0, 1), T0);
    for n in 0..3 {
        assert!(h.core.push(user, push(n)).is_empty(), "kept for the resume");
    }
    assert!(ended(&h.core.push(user, push(3)), user), "one more than the buffer holds ends the session");
    let link = LinkId::new(0, 2);
    let code = ErrorCode::ResumeTokenInvalid.code();
    assert_eq!(refusal(&h.resume(link, &welcome.resume_token, T0 + 10), link), Some((code, code)));
    h.db.drop_db().await;
    Ok(())
}

#[tokio::test]
async fn resume_takes_over_a_link_not_yet_known_dead() -> Result<()> {
    let mut h = Harness::new(SessionConfig::default()).await;
    let user = Uuid::new_v4();
    let (old, new) = (LinkId::new(0, 1), LinkId::new(1, 1));
    let welcome = h.login(old, &h.token(user, Uuid::new_v4(), T0)?, T0)?;
    let actions = h.resume(new, &welcome.resume_token, T0 + 100);
    let resumed = only_welcome(&actions, new)?;
    assert!(resumed.resumed);
    assert_eq!(resumed.missed_pushes, 0);
    assert_eq!(closed_with(&actions, old), Some(ErrorCode::SessionReplaced.code()));
    assert!(!ended(&actions, user), "a resume is not a new session: nobody sees offline");
    let pushed = h.core.push(user, push(1));
    assert!(matches!(&pushed[..], [Action::Send { link, .. }] if *link == new), "{pushed:?}");
    h.db.drop_db().await;
    Ok(())
}

#[tokio::test]
async fn goodbye_ends_the_session_at_once() -> Result<()> {
    let mut h = Harness::new(SessionConfig::default()).await;
    let user = Uuid::new_v4();
    let link = LinkId::new(0, 1);
    let welcome = h.login(link, &h.token(user, Uuid::new_v4(), T0)?, T0)?;
    let (actions, handled) = h.core.message(link, ClientMessageT::request(5, ClientBodyT::Goodbye(Box::default())), T0 + 1);
    assert_eq!(handled, Handled::Done);
    assert!(ended(&actions, user));
    assert_eq!(closed_with(&actions, link), Some(0));
    let link = LinkId::new(0, 2);
    let code = ErrorCode::ResumeTokenInvalid.code();
    assert_eq!(refusal(&h.resume(link, &welcome.resume_token, T0 + 2), link), Some((code, code)));
    h.db.drop_db().await;
    Ok(())
}

#[tokio::test]
async fn a_user_revocation_spares_sessions_issued_after_its_cutoff() -> Result<()> {
    let mut h = Harness::new(SessionConfig::default()).await;
    let (old_user, new_user) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = (LinkId::new(0, 1), LinkId::new(0, 2));
    h.login(a, &h.token(old_user, Uuid::new_v4(), T0)?, T0)?;
    h.login(b, &h.token(new_user, Uuid::new_v4(), T0 + 10)?, T0 + 10)?;
    let spared = h.core.revoke(&Revocation::User { user_id: new_user, issued_before_ms: T0 + 10, until_ms: T0 + 60_000 }, T0 + 20);
    assert!(spared.is_empty(), "a token minted at the cutoff survives: {spared:?}");
    let actions = h.core.revoke(&Revocation::User { user_id: old_user, issued_before_ms: T0 + 1, until_ms: T0 + 60_000 }, T0 + 20);
    let code = ErrorCode::TokenRevoked.code();
    assert_eq!(refusal(&actions, a), Some((code, code)));
    assert!(ended(&actions, old_user));
    h.db.drop_db().await;
    Ok(())
}

#[tokio::test]
async fn authenticated_requests_outside_the_core_are_handed_back() -> Result<()> {
    let mut h = Harness::new(SessionConfig::default()).await;
    let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
    let link = LinkId::new(0, 1);
    h.login(link, &h.token(user, session, T0)?, T0)?;
    let body = ClientBodyT::FriendsPresenceRequest(Box::default());
    let (actions, handled) = h.core.message(link, ClientMessageT::request(4, body.clone()), T0 + 1);
    assert!(actions.is_empty());
    match handled {
        Handled::Request { link: l, user_id, session_id, cid, body: b } => {
            assert_eq!((l, user_id, session_id, cid, b), (link, user, session, 4, body));
        }
        Handled::Done => bail!("the request was swallowed"),
    }
    let (actions, _) = h.core.message(link, hello(Some("x"), None), T0 + 2);
    let error = actions.first().and_then(|a| match a {
        Action::Send { message, .. } => message.body.as_error(),
        _ => None,
    });
    let error = error.context("a second hello is answered")?;
    assert_eq!((error.code, error.closes_link), (ErrorCode::UnexpectedMessage.code(), false));
    h.db.drop_db().await;
    Ok(())
}
