//! The local process spawner with a stand-in instance binary (`tests/fixtures/fake-instance.sh`):
//! a warm pool that fills itself, a match handed to a ready process, a process that fails or
//! never says ready, and the cap on live processes.

use std::time::Duration;

use matchmaker::allocation::spawner::{ProcessSpawner, SpawnerConfig};
use matchmaker::allocation::{AllocError, Allocator, MatchSpec};
use uuid::Uuid;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-instance.sh");

fn spawner(behaviour: &str, first_port: u16, warm: usize, max: usize) -> ProcessSpawner {
    ProcessSpawner::start(SpawnerConfig {
        program: "/bin/sh".into(),
        args: vec![SCRIPT.into(), "{port}".into(), "{instance_id}".into(), behaviour.into()],
        first_port,
        warm,
        max_processes: max,
        ready_timeout_ms: 1_000,
        exit_grace_ms: 500,
        ..SpawnerConfig::default()
    })
}

fn spec() -> MatchSpec {
    MatchSpec {
        match_id: Uuid::new_v4(),
        mode: "duel".into(),
        region: "local".into(),
        teams: [vec![Uuid::new_v4()], vec![Uuid::new_v4()]],
        created_at_ms: 0,
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_warm_process_takes_the_match_and_the_pool_refills() {
    let s = spawner("ok", 47_200, 1, 3);
    wait_for("a warm process", || s.idle() == 1).await;
    let a = s.allocate(&spec()).await.expect("allocated from the warm pool");
    assert_eq!(a.address.host, "127.0.0.1");
    assert_eq!(a.address.udp_port, 47_200);
    assert_eq!(a.address.ws_url.as_deref(), Some("ws://127.0.0.1:47200/ws"), "read from the ready line");
    assert_eq!(s.busy(), 1);
    wait_for("the warm pool to refill", || s.idle() == 1).await;
    let spec2 = spec();
    let b = s.allocate(&spec2).await.expect("second allocation");
    assert_ne!(a.instance_id, b.instance_id);
    assert_ne!(a.address.udp_port, b.address.udp_port);
    // Three processes live (two busy, one warm): the cap is reached.
    wait_for("the third process", || s.idle() == 1).await;
    s.allocate(&spec()).await.expect("the warm one");
    assert_eq!(s.allocate(&spec()).await, Err(AllocError::NoCapacity));
    // A released instance frees its slot once its process is gone (killed after the grace).
    s.release(spec2.match_id, &b.instance_id).await;
    wait_for("a freed slot", || s.busy() == 2 && s.idle() == 1).await;
}

#[tokio::test]
async fn a_process_that_fails_or_never_gets_ready_is_a_failed_allocation() {
    for (behaviour, port) in [("fail", 47_300), ("silent", 47_310)] {
        let s = spawner(behaviour, port, 0, 2);
        match s.allocate(&spec()).await {
            Err(AllocError::Failed(reason)) => assert!(!reason.is_empty()),
            other => panic!("{behaviour}: expected a failed allocation, got {other:?}"),
        }
        assert_eq!((s.idle(), s.busy()), (0, 0), "{behaviour}: nothing left behind");
    }
    let missing = ProcessSpawner::start(SpawnerConfig {
        program: "/nonexistent/instance-server".into(),
        warm: 0,
        ..SpawnerConfig::default()
    });
    assert!(matches!(missing.allocate(&spec()).await, Err(AllocError::Failed(_))));
}
