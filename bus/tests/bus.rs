//! The bus on both backends through the same test bodies: delivery between nodes, isolation of
//! topics and prefixes, unsubscribing, lag reports, and (Redis only, since only Redis has a
//! connection to lose) resubscription after the pub/sub connection is killed.

#[macro_use]
mod common;

use bus::{Bus, BusEvent, Subscription};
use bytes::Bytes;
use common::{WAIT, raw_connection, redis_url, unique_prefix, within};

/// Where test "nodes" come from: clones of one in-process bus, or separate Redis connections
/// sharing a prefix.
enum Cluster {
    InProcess(Bus),
    Redis { prefix: String },
}

impl Cluster {
    fn in_process() -> Cluster {
        Cluster::InProcess(Bus::in_process())
    }

    fn redis() -> Cluster {
        Cluster::Redis { prefix: unique_prefix() }
    }

    /// Another deployment of the same kind, which must not see this one's traffic.
    fn other(&self) -> Cluster {
        match self {
            Cluster::InProcess(_) => Cluster::in_process(),
            Cluster::Redis { .. } => Cluster::redis(),
        }
    }

    async fn node(&self) -> anyhow::Result<Bus> {
        match self {
            Cluster::InProcess(bus) => Ok(bus.clone()),
            Cluster::Redis { prefix } => Ok(within("a redis bus", Bus::redis(&redis_url(), prefix)).await??),
        }
    }
}


on_both_backends!(delivers_between_nodes, isolates_topics_and_prefixes, unsubscribes_on_drop, reports_lag);

async fn next(sub: &mut Subscription) -> anyhow::Result<BusEvent> {
    within("a bus event", sub.recv()).await?.ok_or_else(|| anyhow::anyhow!("subscription closed"))
}

/// Checks that the next event of `sub` is `payload` on `topic`.
async fn check_message(sub: &mut Subscription, topic: &str, payload: &str) -> anyhow::Result<()> {
    let got = next(sub).await?;
    let want = BusEvent::Message { topic: topic.into(), payload: Bytes::copy_from_slice(payload.as_bytes()) };
    anyhow::ensure!(got == want, "expected {want:?}, got {got:?}");
    Ok(())
}

async fn publish(bus: &Bus, topic: &str, payload: &str) -> anyhow::Result<()> {
    Ok(within("publish", bus.publish(topic, Bytes::copy_from_slice(payload.as_bytes()))).await??)
}

async fn delivers_between_nodes(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node().await?;
    let b = cluster.node().await?;
    a.ready()?;
    b.ready()?;
    let mut direct = a.subscribe(["node.a"]).await;
    // A topic named twice is subscribed once, so each message arrives once.
    let mut shared = a.subscribe(["presence", "chat.global", "presence"]).await;
    assert_eq!(shared.topics().len(), 2);

    publish(&b, "node.a", "to a").await?;
    publish(&b, "presence", "p1").await?;
    publish(&b, "chat.global", "c1").await?;
    publish(&b, "presence", "p2").await?;

    check_message(&mut direct, "node.a", "to a").await?;
    check_message(&mut shared, "presence", "p1").await?;
    check_message(&mut shared, "chat.global", "c1").await?;
    check_message(&mut shared, "presence", "p2").await?;
    // Nothing else is waiting: the duplicate topic did not double anything.
    publish(&b, "chat.global", "end").await?;
    check_message(&mut shared, "chat.global", "end").await?;
    Ok(())
}

async fn isolates_topics_and_prefixes(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node().await?;
    let b = cluster.node().await?;
    let other_cluster = cluster.other();
    let other = other_cluster.node().await?;
    let mut on_a = a.subscribe(["node.a"]).await;
    let mut on_b = b.subscribe(["node.b"]).await;
    let mut elsewhere = other.subscribe(["node.a"]).await;

    publish(&a, "node.b", "for b").await?;
    publish(&b, "node.a", "for a").await?;
    publish(&other, "node.a", "elsewhere").await?;

    // Each sees only its own topic in its own deployment: the first message is the one meant for it.
    check_message(&mut on_a, "node.a", "for a").await?;
    check_message(&mut on_b, "node.b", "for b").await?;
    check_message(&mut elsewhere, "node.a", "elsewhere").await?;
    // And nothing more was queued behind those.
    publish(&b, "node.a", "end").await?;
    check_message(&mut on_a, "node.a", "end").await?;
    Ok(())
}

async fn unsubscribes_on_drop(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node().await?;
    let b = cluster.node().await?;
    let first = a.subscribe(["chat.global"]).await;
    let mut second = a.subscribe(["chat.global"]).await;
    // Dropping one of two subscriptions of a topic leaves the other receiving.
    drop(first);
    publish(&b, "chat.global", "one").await?;
    check_message(&mut second, "chat.global", "one").await?;
    // Dropping the last one leaves the channel (on Redis); subscribing again joins it again.
    drop(second);
    let mut third = a.subscribe(["chat.global"]).await;
    publish(&b, "chat.global", "two").await?;
    check_message(&mut third, "chat.global", "two").await?;
    Ok(())
}

async fn reports_lag(cluster: Cluster) -> anyhow::Result<()> {
    let a = cluster.node().await?;
    let b = cluster.node().await?;
    let mut small = a.subscribe_with_capacity(["chat.global"], 4).await;
    // Delivered in the same pass as `small`: once it has everything, so has `small`.
    let mut control = a.subscribe_with_capacity(["chat.global"], 64).await;
    for i in 0..20 {
        publish(&b, "chat.global", &format!("m{i}")).await?;
    }
    for i in 0..20 {
        check_message(&mut control, "chat.global", &format!("m{i}")).await?;
    }
    let got = next(&mut small).await?;
    anyhow::ensure!(got == BusEvent::Lagged { missed: 16 }, "expected a lag of 16, got {got:?}");
    for i in 16..20 {
        check_message(&mut small, "chat.global", &format!("m{i}")).await?;
    }
    anyhow::ensure!(small.try_recv().is_none(), "nothing should be left");
    Ok(())
}

#[tokio::test]
async fn redis_resubscribes_after_the_connection_is_killed() -> anyhow::Result<()> {
    let cluster = Cluster::redis();
    let a = cluster.node().await?;
    let b = cluster.node().await?;
    let mut sub = a.subscribe(["node.a", "presence"]).await;
    let addr = a.pubsub_local_addr().ok_or_else(|| anyhow::anyhow!("a tcp bus knows its pub/sub address"))?;

    // Kill exactly this node's pub/sub connection: other processes share the test Redis.
    let mut raw = raw_connection().await?;
    let killed: i64 = within(
        "client kill",
        ::redis::cmd("CLIENT").arg("KILL").arg("ADDR").arg(addr.to_string()).query_async(&mut raw),
    )
    .await??;
    anyhow::ensure!(killed == 1, "expected to kill one connection at {addr}, killed {killed}");

    let got = next(&mut sub).await?;
    anyhow::ensure!(got == BusEvent::Resubscribed, "expected Resubscribed, got {got:?}");
    a.ready()?;
    anyhow::ensure!(a.pubsub_local_addr() != Some(addr), "a new connection has a new address");
    publish(&b, "node.a", "after").await?;
    publish(&b, "presence", "p").await?;
    check_message(&mut sub, "node.a", "after").await?;
    check_message(&mut sub, "presence", "p").await?;
    Ok(())
}

#[tokio::test]
async fn redis_unreachable_is_an_error() -> anyhow::Result<()> {
    // Nothing listens on port 1; the constructor must fail rather than hang or retry forever.
    let result = tokio::time::timeout(WAIT, Bus::redis("redis://127.0.0.1:1", &unique_prefix())).await?;
    anyhow::ensure!(
        matches!(result, Err(bus::BusError::Redis(_) | bus::BusError::Timeout(..))),
        "expected a redis error, got {:?}",
        result.err()
    );
    Ok(())
}

#[tokio::test]
async fn in_process_bus_is_always_ready() -> anyhow::Result<()> {
    let bus = Bus::in_process();
    bus.ready()?;
    anyhow::ensure!(bus.pubsub_local_addr().is_none(), "no connection in process");
    // Publishing with no subscriber is not an error.
    publish(&bus, "nobody", "x").await
}
