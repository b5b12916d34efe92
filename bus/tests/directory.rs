//! The user → node directory on both backends through the same test bodies: claim, lookup and
//! release between nodes, batch lookups, a dead node losing its users within the TTL, clean close,
//! and configuration errors; plus Redis-only checks of the keep-alive repairing lost keys.

#[macro_use]
mod common;

use std::time::Duration;

use bus::{BusError, DEFAULT_TTL, Directory, InProcessStore};
use common::{eventually, raw_connection, redis_url, unique_prefix, within};
use uuid::Uuid;

/// Where test nodes come from: one in-process store, or one Redis prefix.
enum Cluster {
    InProcess(InProcessStore),
    Redis { prefix: String },
}

impl Cluster {
    fn in_process() -> Cluster {
        Cluster::InProcess(InProcessStore::default())
    }

    fn redis() -> Cluster {
        Cluster::Redis { prefix: unique_prefix() }
    }

    async fn try_node(&self, id: &str, ttl: Duration) -> Result<Directory, BusError> {
        match self {
            Cluster::InProcess(store) => Directory::in_process_on(store, id, ttl),
            Cluster::Redis { prefix } => Directory::redis(&redis_url(), prefix, id, ttl).await,
        }
    }

    async fn node(&self, id: &str, ttl: Duration) -> anyhow::Result<Directory> {
        Ok(within("a directory node", self.try_node(id, ttl)).await??)
    }
}


on_both_backends!(
    claims_and_releases_between_nodes,
    looks_up_many_in_order,
    dead_node_loses_its_users_within_the_ttl,
    close_releases_at_once,
    rejects_bad_configuration,
);

/// Checks that `dir` sees `user` on `want`.
async fn check_owner(dir: &Directory, user: Uuid, want: Option<&str>) -> anyhow::Result<()> {
    let got = within("lookup", dir.lookup(user)).await??;
    anyhow::ensure!(got.as_deref() == want, "user {user}: expected {want:?}, got {got:?}");
    Ok(())
}

async fn claims_and_releases_between_nodes(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node("a", DEFAULT_TTL).await?;
    let b = cluster.node("b", DEFAULT_TTL).await?;
    let user = Uuid::new_v4();
    check_owner(&a, user, None).await?;

    assert_eq!(within("claim", a.claim(user)).await??, None, "nobody held the user");
    check_owner(&b, user, Some("a")).await?;
    assert_eq!(a.held(), 1);
    // Claiming again on the same node names no other node.
    assert_eq!(within("claim", a.claim(user)).await??, None);
    // A login on another node takes over and learns where the old link is.
    assert_eq!(within("claim", b.claim(user)).await??.as_deref(), Some("a"));
    check_owner(&a, user, Some("b")).await?;

    // The old node's release (its link closing late) must not remove the new owner.
    assert!(!within("release", a.release(user)).await??, "a no longer owns the user");
    check_owner(&a, user, Some("b")).await?;
    assert!(within("release", b.release(user)).await??, "b owns the user");
    check_owner(&a, user, None).await?;
    assert_eq!(b.held(), 0);
    assert!(!within("release", b.release(user)).await??, "releasing twice does nothing");
    Ok(())
}

async fn looks_up_many_in_order(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node("a", DEFAULT_TTL).await?;
    let b = cluster.node("b", DEFAULT_TTL).await?;
    // More than one MGET batch (500), with unknown users mixed in.
    let mut users = Vec::new();
    let mut want = Vec::new();
    for i in 0..1200 {
        let user = Uuid::new_v4();
        match i % 3 {
            0 => {
                within("claim", a.claim(user)).await??;
                want.push(Some("a".to_owned()));
            }
            1 => {
                within("claim", b.claim(user)).await??;
                want.push(Some("b".to_owned()));
            }
            _ => want.push(None),
        }
        users.push(user);
    }
    let got = within("lookup_many", a.lookup_many(&users)).await??;
    anyhow::ensure!(got == want, "lookup_many answered out of order or wrong");
    anyhow::ensure!(within("lookup_many", a.lookup_many(&[])).await??.is_empty());
    Ok(())
}

async fn dead_node_loses_its_users_within_the_ttl(cluster: Cluster) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(1);
    let a = cluster.node("a", ttl).await?;
    let b = cluster.node("b", ttl).await?;
    let (u1, u2, u3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    within("claim", a.claim(u1)).await??;
    within("claim", a.claim(u2)).await??;
    within("claim", b.claim(u3)).await??;

    // Well past two TTLs, the keep-alive has kept everything.
    tokio::time::sleep(ttl * 5 / 2).await;
    check_owner(&b, u1, Some("a")).await?;
    check_owner(&b, u3, Some("b")).await?;
    assert_eq!(within("nodes_alive", b.nodes_alive()).await??, ["a", "b"]);

    // The process of `a` dies: nothing releases its users, they expire.
    drop(a);
    eventually("a's users expiring", ttl * 3, || async {
        let owners = within("lookup_many", b.lookup_many(&[u1, u2])).await??;
        Ok(owners.iter().all(Option::is_none).then_some(()))
    })
    .await?;
    check_owner(&b, u3, Some("b")).await?;
    eventually("a leaving the live nodes", ttl * 3, || async {
        let alive = within("nodes_alive", b.nodes_alive()).await??;
        Ok((alive == ["b"]).then_some(()))
    })
    .await?;
    Ok(())
}

async fn close_releases_at_once(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node("a", DEFAULT_TTL).await?;
    let b = cluster.node("b", DEFAULT_TTL).await?;
    let (mine, taken) = (Uuid::new_v4(), Uuid::new_v4());
    within("claim", a.claim(mine)).await??;
    within("claim", a.claim(taken)).await??;
    within("claim", b.claim(taken)).await??;

    within("close", a.close()).await??;
    check_owner(&b, mine, None).await?;
    // Close releases only what the node still owns.
    check_owner(&b, taken, Some("b")).await?;
    assert_eq!(within("nodes_alive", b.nodes_alive()).await??, ["b"]);
    let after = within("claim", a.claim(Uuid::new_v4())).await?;
    anyhow::ensure!(matches!(after, Err(BusError::Closed(ref n)) if n == "a"), "claim after close: {after:?}");
    Ok(())
}

async fn rejects_bad_configuration(cluster: Cluster) -> anyhow::Result<()> {
    for (id, ttl) in [
        ("", DEFAULT_TTL),
        ("has space", DEFAULT_TTL),
        ("star*", DEFAULT_TTL),
        ("a", Duration::from_millis(10)),
    ] {
        let got = within("a directory node", cluster.try_node(id, ttl)).await?;
        anyhow::ensure!(matches!(got, Err(BusError::Config(_))), "node {id:?} ttl {ttl:?}: expected a config error");
    }
    Ok(())
}

#[tokio::test]
async fn in_process_node_ids_are_unique_while_alive() -> anyhow::Result<()> {
    let store = InProcessStore::default();
    let a = Directory::in_process_on(&store, "a", DEFAULT_TTL)?;
    anyhow::ensure!(matches!(Directory::in_process_on(&store, "a", DEFAULT_TTL), Err(BusError::Config(_))));
    drop(a);
    // A restarted node may take its id back.
    Directory::in_process_on(&store, "a", DEFAULT_TTL)?;
    let local = Directory::in_process();
    assert_eq!(local.node_id(), bus::LOCAL_NODE);
    Ok(())
}

#[tokio::test]
async fn redis_keep_alive_restores_lost_keys_but_not_released_users() -> anyhow::Result<()> {
    let ttl = Duration::from_secs(1);
    let prefix = unique_prefix();
    let a = within("a directory node", Directory::redis(&redis_url(), &prefix, "a", ttl)).await??;
    let (kept, released) = (Uuid::new_v4(), Uuid::new_v4());
    within("claim", a.claim(kept)).await??;
    within("claim", a.claim(released)).await??;
    within("release", a.release(released)).await??;

    // The key vanishes behind the node's back (a flush, or Redis away for longer than the TTL).
    let mut raw = raw_connection().await?;
    let deleted: i64 =
        within("del", ::redis::cmd("DEL").arg(format!("{prefix}user.{kept}")).query_async(&mut raw)).await??;
    assert_eq!(deleted, 1);
    check_owner(&a, kept, None).await?;
    eventually("the keep-alive restoring the key", ttl * 2, || async {
        Ok((within("lookup", a.lookup(kept)).await??.as_deref() == Some("a")).then_some(()))
    })
    .await?;
    check_owner(&a, released, None).await?;

    // And the key carries the TTL, so it will go if the node dies.
    let pttl: i64 =
        within("pttl", ::redis::cmd("PTTL").arg(format!("{prefix}user.{kept}")).query_async(&mut raw)).await??;
    anyhow::ensure!(pttl > 0 && pttl <= 1000, "user key ttl {pttl} ms");
    Ok(())
}

#[tokio::test]
async fn redis_unreachable_is_an_error() -> anyhow::Result<()> {
    let result = within(
        "a directory node",
        Directory::redis("redis://127.0.0.1:1", &unique_prefix(), "a", DEFAULT_TTL),
    )
    .await?;
    anyhow::ensure!(matches!(result, Err(BusError::Redis(_) | BusError::Timeout(..))), "expected a redis error");
    Ok(())
}
