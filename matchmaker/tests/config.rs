//! The matchmaker's configuration: defaults, a TOML file choosing an allocator, and the one-line
//! errors of values that cannot work.

use matchmaker::service::{AllocationConfig, MatchmakerConfig};
use service_runtime::config::{Sources, load};

fn check(file: &str, sets: &[&str], expected: Result<(), &str>) -> Option<MatchmakerConfig> {
    let sources = Sources {
        file: Some(("matchmaker.toml".into(), file.into())),
        env: Vec::new(),
        sets: sets.iter().map(|s| (*s).to_owned()).collect(),
    };
    let loaded = load::<MatchmakerConfig>(&sources).map_err(|e| e.to_string());
    let checked = loaded.clone().and_then(|c| c.validate());
    match (checked, expected) {
        (Ok(()), Ok(())) => loaded.ok(),
        (Err(line), Err(fragment)) => {
            assert!(line.contains(fragment), "{line:?} lacks {fragment:?}");
            assert!(!line.contains('\n'));
            None
        }
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn a_file_chooses_the_allocator_and_flags_override_it() {
    let file = r#"
        service_token = "0123456789abcdef"
        tick_ms = 50
        [allocation]
        kind = "static_pool"
        instances = [{ instance_id = "a", address = { host = "10.0.0.1", udp_port = 7500 } }]
    "#;
    let c = check(file, &["bind=127.0.0.1:7401"], Ok(())).expect("valid");
    assert_eq!((c.tick_ms, c.bind.port(), c.admin_bind.port()), (50, 7401, 9104));
    match c.allocation {
        AllocationConfig::StaticPool { instances } => assert_eq!(instances[0].address.udp_port, 7500),
        other => panic!("expected a static pool, got {other:?}"),
    }
    let spawn = "service_token = \"0123456789abcdef\"\n[allocation]\nkind = \"process\"\nprogram = \"/opt/instance-server\"\nwarm = 4";
    match check(spawn, &[], Ok(())).expect("valid").allocation {
        AllocationConfig::Process(p) => assert_eq!((p.warm, p.first_port), (4, 7500)),
        other => panic!("expected the spawner, got {other:?}"),
    }
}

#[test]
fn values_that_cannot_work_are_one_clear_line() {
    check("", &[], Err("service_token"));
    let ok = "service_token = \"0123456789abcdef\"\n";
    check(ok, &["tick_ms=0"], Err("tick_ms"));
    check(ok, &["join_token_ttl_s=120"], Err("join_token_ttl_s"));
    check(&format!("{ok}modes = []"), &[], Err("modes"));
    check(&format!("{ok}[window]\nstart = 500.0\nend = 100.0"), &[], Err("window"));
    check(&format!("{ok}[allocation]\nkind = \"teleport\""), &[], Err("teleport"));
    check(&format!("{ok}tick_mss = 5"), &[], Err("tick_mss"));
}
