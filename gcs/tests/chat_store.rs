//! The chat history store on real Postgres and on SQLite: appending and paging newest first,
//! walking every page by `before_id` without gaps or repeats, the page cap, channel isolation,
//! symmetric direct-message keys and retention.

use gcs::chat_store::{Channel, ChatStore, DEFAULT_PAGE, MAX_PAGE, StoredMessage, channel_key};
use migrations::Db;
use uuid::Uuid;

/// Appends `n` messages `"<prefix> <i>"` to `channel` from `sender`, sent at `t0 + i`; returns
/// their ids in order.
async fn fill(store: &ChatStore, channel: &str, sender: Uuid, prefix: &str, n: usize, t0: i64) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let at = t0 + i64::try_from(i).expect("small test counts");
        ids.push(store.append(channel, sender, "alice", &format!("{prefix} {i}"), at).await.expect("append"));
    }
    ids
}

fn ids(page: &[StoredMessage]) -> Vec<i64> {
    page.iter().map(|m| m.id).collect()
}

async fn append_then_page_newest_first(db: Db) {
    let store = ChatStore::new(db);
    let sender = Uuid::new_v4();
    let (empty, more) = store.page("global", None, 10).await.expect("page");
    assert!(empty.is_empty() && !more);

    let written = fill(&store, "global", sender, "hello", 3, 1_000).await;
    assert!(written.windows(2).all(|w| w[0] < w[1]), "ids increase: {written:?}");
    let (page, more) = store.page("global", None, 10).await.expect("page");
    assert!(!more);
    assert_eq!(ids(&page), written.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(
        page[0],
        StoredMessage {
            id: written[2],
            channel: "global".to_owned(),
            sender_id: sender,
            sender_name: "alice".to_owned(),
            body: "hello 2".to_owned(),
            sent_at_ms: 1_002,
        }
    );
    // Unicode and quotes survive as written.
    let id = store.append("global", sender, "Ålice", "« it's » 🂡", 2_000).await.expect("append");
    let (page, _) = store.page("global", None, 1).await.expect("page");
    assert_eq!((page[0].id, page[0].sender_name.as_str(), page[0].body.as_str()), (id, "Ålice", "« it's » 🂡"));
}

async fn paging_by_before_id_has_no_gaps_or_repeats(db: Db) {
    let store = ChatStore::new(db);
    // Another channel's messages in between, so ids within the room are not contiguous.
    let mut written = Vec::new();
    for i in 0..23 {
        written.extend(fill(&store, "room:lobby", Uuid::new_v4(), "m", 1, i).await);
        fill(&store, "global", Uuid::new_v4(), "g", 2, i).await;
    }

    for page_size in [1u16, 5, 7, 23, 50] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let (page, more) = store.page("room:lobby", before, page_size).await.expect("page");
            assert!(page.len() <= usize::from(page_size));
            seen.extend(ids(&page));
            if !more {
                break;
            }
            assert_eq!(page.len(), usize::from(page_size), "only the last page is short");
            before = page.last().map(|m| m.id);
        }
        assert_eq!(seen, written.iter().rev().copied().collect::<Vec<_>>(), "page size {page_size}");
    }
    // 0 and negative `before_id` (the protocol's "newest page") start from the top.
    for before in [Some(0), Some(-5), None] {
        let (page, more) = store.page("room:lobby", before, 3).await.expect("page");
        assert_eq!(ids(&page), vec![written[22], written[21], written[20]]);
        assert!(more);
    }
    // A `before_id` between two messages of the channel pages from the next lower one.
    let (page, _) = store.page("room:lobby", Some(written[10] + 1), 2).await.expect("page");
    assert_eq!(ids(&page), vec![written[10], written[9]]);
    let (page, more) = store.page("room:lobby", Some(written[0]), 10).await.expect("page");
    assert!(page.is_empty() && !more);
}

async fn page_size_is_capped(db: Db) {
    let store = ChatStore::new(db);
    let n = usize::from(MAX_PAGE) + 5;
    let written = fill(&store, "global", Uuid::new_v4(), "m", n, 0).await;
    let (page, more) = store.page("global", None, u16::MAX).await.expect("page");
    assert_eq!(page.len(), usize::from(MAX_PAGE));
    assert!(more);
    assert_eq!(page[0].id, written[n - 1]);
    let (page, more) = store.page("global", None, 0).await.expect("page");
    assert_eq!((page.len(), more), (usize::from(DEFAULT_PAGE), true));
    let (page, more) = store.page("global", Some(written[5]), MAX_PAGE).await.expect("page");
    assert_eq!((page.len(), more), (5, false));
}

async fn channels_are_isolated(db: Db) {
    let store = ChatStore::new(db);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let party = Uuid::new_v4();
    let channels = [
        channel_key(Channel::Global),
        channel_key(Channel::Room("lobby")),
        channel_key(Channel::Room("Lobby")),
        channel_key(Channel::Direct(a, b)),
        channel_key(Channel::Direct(a, c)),
        channel_key(Channel::Party(party)),
    ];
    let mut written = Vec::new();
    for (i, key) in channels.iter().enumerate() {
        written.push(fill(&store, key, a, key, i + 1, 0).await);
    }
    for (key, mine) in channels.iter().zip(&written) {
        let (page, more) = store.page(key, None, 100).await.expect("page");
        assert!(!more);
        assert_eq!(ids(&page), mine.iter().rev().copied().collect::<Vec<_>>(), "{key}");
        assert!(page.iter().all(|m| &m.channel == key && m.body.starts_with(key.as_str())), "{key}");
    }
    // The direct conversation is one channel, whoever writes.
    let ab = channel_key(Channel::Direct(a, b));
    let ba = channel_key(Channel::Direct(b, a));
    let id = store.append(&ba, b, "bob", "reply", 10).await.expect("append");
    let (page, _) = store.page(&ab, None, 1).await.expect("page");
    assert_eq!((page[0].id, page[0].sender_id), (id, b));
}

async fn retention_deletes_old_messages_in_batches(db: Db) {
    let store = ChatStore::new(db);
    let sender = Uuid::new_v4();
    // More than one retention batch of old messages, then a few recent ones.
    let old = usize::try_from(gcs::chat_store::RETENTION_BATCH).expect("small batch") + 7;
    fill(&store, "global", sender, "old", old, 0).await;
    let recent = fill(&store, "global", sender, "new", 3, 1_000_000).await;
    let kept_dm = fill(&store, "dm:x", sender, "new", 1, 2_000_000).await;

    assert_eq!(store.delete_older_than(1_000_000).await.expect("retention"), u64::try_from(old).expect("fits"));
    let (page, more) = store.page("global", None, 100).await.expect("page");
    assert!(!more);
    assert_eq!(ids(&page), recent.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(ids(&store.page("dm:x", None, 100).await.expect("page").0), kept_dm);
    assert_eq!(store.delete_older_than(1_000_000).await.expect("retention"), 0);
    // Ids keep increasing after deletions.
    let next = store.append("global", sender, "alice", "after", 3_000_000).await.expect("append");
    assert!(next > *recent.last().expect("three recent"));
}

migrations::both_backends!(
    append_then_page_newest_first,
    paging_by_before_id_has_no_gaps_or_repeats,
    page_size_is_capped,
    channels_are_isolated,
    retention_deletes_old_messages_in_batches,
);

#[test]
fn direct_keys_are_symmetric_and_channel_keys_are_distinct() {
    let a = Uuid::parse_str("00000000-0000-4000-8000-00000000000a").expect("uuid");
    let b = Uuid::parse_str("f0000000-0000-4000-8000-000000000001").expect("uuid");
    let check = |channel: Channel<'_>, expected: &str| assert_eq!(channel_key(channel), expected, "{channel:?}");
    check(Channel::Global, "global");
    check(Channel::Room("lobby"), "room:lobby");
    check(Channel::Direct(a, b), "dm:00000000-0000-4000-8000-00000000000a:f0000000-0000-4000-8000-000000000001");
    check(Channel::Direct(b, a), "dm:00000000-0000-4000-8000-00000000000a:f0000000-0000-4000-8000-000000000001");
    check(Channel::Party(b), "party:f0000000-0000-4000-8000-000000000001");
    for _ in 0..100 {
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(channel_key(Channel::Direct(x, y)), channel_key(Channel::Direct(y, x)));
        assert_ne!(channel_key(Channel::Direct(x, y)), channel_key(Channel::Direct(x, x)));
    }
}
