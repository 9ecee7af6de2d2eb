//! The cluster over a real redis-server that the tests start on a free loopback port, kill and
//! restart: broadcasts, rooms, queries, direct messages and presence across nodes; Redis down
//! (entries held, then delivered once and in order, or dropped and reported past the bound);
//! Redis back empty; a node killed; three nodes and 300 clients while a node restarts.

mod support;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{eventually, fast, roomy, within, Detached, Node, Proxy, Redis};
use truflux::{Code, HistoryLimit, Message, PeerId, Presence, RoomConfig, ServerConfig};
use truflux_redis::{ClusterEvent, EntryKind};

fn raw(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Sends `marker` from `node` to everyone and waits until `members` have it; with ordering per
/// sending node, everything `node` sent before has arrived then.
async fn settle(node: &Node, marker: &str, members: &[&support::Member]) {
    node.server.everyone().broadcast_raw(1, raw(marker)).unwrap();
    for member in members {
        member.until(marker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_node_and_leaves_out_the_excluded_peers() {
    let redis = Redis::start().await;
    let (a, b) = (
        Node::start(&redis.url(), fast()).await,
        Node::start(&redis.url(), fast()).await,
    );
    let (a1, a2) = (a.member().await, a.member().await);
    let (b1, b2) = (b.member().await, b.member().await);
    a.server
        .everyone()
        .except(&a2.peer)
        .except(b2.peer.id())
        .broadcast_raw(1, raw("not a2, not b2"))
        .unwrap();
    a.server
        .broadcast(
            Message {
                id: 1,
                payload: raw("all but b1"),
            },
            &[b1.peer.id()],
        )
        .unwrap();
    settle(&a, "end", &[&a1, &a2, &b1, &b2]).await;
    assert_eq!(a1.texts(), ["not a2, not b2", "all but b1", "end"]);
    assert_eq!(a2.texts(), ["all but b1", "end"]);
    assert_eq!(b1.texts(), ["not a2, not b2", "end"]);
    assert_eq!(b2.texts(), ["all but b1", "end"]);
    let stats = a.adapter.stats();
    assert_eq!((stats.dropped, stats.held), (0, 0));
    assert!(b.adapter.stats().received >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_broadcasts_leave_out_peers_and_rooms_on_every_node() {
    let redis = Redis::start().await;
    let (a, b) = (
        Node::start(&redis.url(), fast()).await,
        Node::start(&redis.url(), fast()).await,
    );
    let (x_on_a, xz_on_a) = (a.member().await, a.member().await);
    let (x_on_b, xz_on_b, z_on_b) = (b.member().await, b.member().await, b.member().await);
    for (member, room) in [(&x_on_a, "x"), (&xz_on_a, "x"), (&xz_on_a, "z"), (&x_on_b, "x")] {
        member.peer.join(room).await.unwrap();
    }
    for (member, room) in [(&xz_on_b, "x"), (&xz_on_b, "z"), (&z_on_b, "z")] {
        member.peer.join(room).await.unwrap();
    }
    // Queries see B's memberships once B wrote them: the broadcasts below do not depend on it.
    b.server
        .to("x")
        .except("z")
        .broadcast_raw(1, raw("x but z"))
        .unwrap();
    b.server
        .to(["x", "z"])
        .except(&x_on_b.peer)
        .broadcast_raw(1, raw("x z but one"))
        .unwrap();
    b.server.to("z").broadcast_raw(1, raw("z")).unwrap();
    let all = [&x_on_a, &xz_on_a, &x_on_b, &xz_on_b, &z_on_b];
    settle(&b, "end", &all).await;
    assert_eq!(x_on_a.texts(), ["x but z", "x z but one", "end"]);
    assert_eq!(
        xz_on_a.texts(),
        ["x z but one", "z", "end"],
        "in x and z: once each"
    );
    assert_eq!(x_on_b.texts(), ["x but z", "end"]);
    assert_eq!(xz_on_b.texts(), ["x z but one", "z", "end"]);
    assert_eq!(z_on_b.texts(), ["x z but one", "z", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_keeps_history_remembers_broadcasts_from_other_nodes() {
    let redis = Redis::start().await;
    let history = HistoryLimit::default().messages(2);
    let config = || ServerConfig::default().rooms(RoomConfig::default().history(Some(history)));
    let a = Node::start_with(&redis.url(), fast(), config()).await;
    let b = Node::start_with(&redis.url(), fast(), config()).await;
    let keeper = a.member().await;
    keeper.peer.join("news").await.unwrap();
    for text in ["one", "two", "three"] {
        b.server.to("news").broadcast_raw(1, raw(text)).unwrap();
    }
    keeper.until("three").await;
    let late = a.member().await;
    late.peer.join("news").await.unwrap();
    b.server.to("news").broadcast_raw(1, raw("four")).unwrap();
    assert_eq!(late.until("four").await, ["two", "three", "four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_members_and_connections_are_answered_for_the_whole_cluster() {
    let redis = Redis::start().await;
    let url = redis.url();
    let (a, b, c) = (
        Node::start(&url, fast()).await,
        Node::start(&url, fast()).await,
        Node::start(&url, fast()).await,
    );
    let alice = a.member().await;
    let bob = b.member().await;
    let (_c1, _c2) = (c.member().await, c.member().await);
    alice.peer.set_label("alice".to_owned());
    alice.peer.join("lobby").await.unwrap();
    alice.peer.join("a-only").await.unwrap();
    bob.peer.join("lobby").await.unwrap();
    // Queries read what the nodes have written: a change elsewhere shows within a round trip.
    eventually("c to see every room and member", || async {
        c.server.rooms().await.ok().as_deref() == Some(&["a-only".to_owned(), "lobby".to_owned()][..])
            && c.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2)
    })
    .await;
    let members = c.server.room_members("lobby").await.unwrap();
    let mut seen: Vec<(PeerId, Option<String>)> = members.into_iter().map(|m| (m.id, m.label)).collect();
    seen.sort();
    let mut expected = vec![(alice.peer.id(), Some("alice".to_owned())), (bob.peer.id(), None)];
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(a.server.cluster_connections().await.unwrap(), 4);
    assert_eq!(c.server.cluster_connections().await.unwrap(), 4);
    assert!(alice.peer.leave("a-only"));
    eventually("b to see a-only go", || async {
        b.server.rooms().await.ok().as_deref() == Some(&["lobby".to_owned()][..])
    })
    .await;
    bob.client.peer().close(Code::NORMAL, "bye").await;
    eventually("bob to leave the lobby everywhere", || async {
        c.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(1)
    })
    .await;
    eventually("3 connections", || async {
        a.server.cluster_connections().await.ok() == Some(3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_reaches_a_peer_on_another_node_and_says_when_no_node_has_it() {
    let redis = Redis::start().await;
    let (a, b) = (
        Node::start(&redis.url(), fast()).await,
        Node::start(&redis.url(), fast()).await,
    );
    let on_b = b.member().await;
    let on_a = a.member().await;
    let message = |text: &str| Message {
        id: 1,
        payload: raw(text),
    };
    assert!(a.server.send_to(on_b.peer.id(), message("to b")).await.unwrap());
    assert!(a.server.send_to(on_a.peer.id(), message("local")).await.unwrap());
    assert!(!a.server.send_to(PeerId(12345), message("nobody")).await.unwrap());
    on_b.until("to b").await;
    on_a.until("local").await;
    assert_eq!(on_b.texts(), ["to b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_one_node_is_told_on_the_others_even_when_a_node_closes() {
    let redis = Redis::start().await;
    let (a, b) = (
        Node::start(&redis.url(), fast()).await,
        Node::start(&redis.url(), fast()).await,
    );
    let alice = a.member().await;
    let carol = a.member().await;
    alice.peer.set_label("alice".to_owned());
    alice.peer.join("lobby").await.unwrap();
    carol.peer.join("lobby").await.unwrap();
    assert!(alice.peer.leave("lobby"));
    alice.peer.join("lobby").await.unwrap();
    alice.client.peer().close(Code::NORMAL, "bye").await;
    let describe = |changes: Vec<Presence>| -> Vec<(bool, PeerId)> {
        changes
            .into_iter()
            .map(|change| match change {
                Presence::Joined { member, .. } => (true, member.id),
                Presence::Left { member, .. } => (false, member.id),
                _ => unreachable!(),
            })
            .collect()
    };
    let (alice_id, carol_id) = (alice.peer.id(), carol.peer.id());
    let expected = [
        (true, alice_id),
        (true, carol_id),
        (false, alice_id),
        (true, alice_id),
        (false, alice_id),
    ];
    eventually("b to see a's presence", || async {
        b.presence().len() >= expected.len()
    })
    .await;
    assert_eq!(describe(b.presence()), expected);
    assert!(
        matches!(&b.presence()[0], Presence::Joined { member, room } if room == "lobby" && member.label.as_deref() == Some("alice"))
    );
    // A closes: its members leave on B at once (no TTL to wait for).
    a.server.close(Code::GOING_AWAY, "bye").await;
    eventually("carol to leave on b", || async {
        describe(b.presence()).last() == Some(&(false, carol_id))
    })
    .await;
    assert_eq!(b.server.room_members("lobby").await.unwrap(), []);
    assert_eq!(b.server.cluster_connections().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_local_delivery_goes_on_and_held_broadcasts_arrive_once_in_order_after() {
    let mut redis = Redis::start_persistent().await;
    // Longer than the outage: nodes do not take each other for gone meanwhile.
    let config = || fast().node_ttl(Duration::from_secs(10));
    let (a, b) = (
        Node::start(&redis.url(), config()).await,
        Node::start(&redis.url(), config()).await,
    );
    let (a1, b1) = (a.member().await, b.member().await);
    settle(&a, "before", &[&a1, &b1]).await;
    redis.kill().await;
    let down = Instant::now();
    let sent: Vec<String> = (0..20).map(|i| format!("during {i}")).collect();
    for text in &sent {
        a.server.everyone().broadcast_raw(1, raw(text)).unwrap();
    }
    b.server.everyone().broadcast_raw(1, raw("from b")).unwrap();
    // Local delivery goes on.
    a1.until("during 19").await;
    b1.until("from b").await;
    eventually("a to notice and hold", || async {
        a.adapter.stats().held == 20 && a.saw(|e| matches!(e, ClusterEvent::Disconnected { .. }))
    })
    .await;
    // Redis stays down for a few seconds: the adapters keep trying with backoff meanwhile.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    redis.restart().await;
    let mut expected = vec!["before".to_owned()];
    expected.extend(sent.iter().cloned());
    expected.push("end".to_owned());
    settle(&a, "end", &[&b1]).await;
    assert_eq!(
        b1.texts(),
        [&["before".to_owned(), "from b".to_owned()][..], &expected[1..]].concat()
    );
    a1.until("from b").await;
    assert_eq!(a1.texts().iter().filter(|t| *t == "from b").count(), 1);
    eventually("both to report the way back", || async {
        a.saw(|e| matches!(e, ClusterEvent::Reconnected { held, .. } if *held >= 20))
            && b.saw(|e| {
                matches!(
                    e,
                    ClusterEvent::Resubscribed {
                        redis_restarted: true
                    }
                )
            })
    })
    .await;
    let (sa, sb) = (a.adapter.stats(), b.adapter.stats());
    assert_eq!((sa.held, sa.dropped, sa.lost), (0, 0, 0));
    assert_eq!((sb.dropped, sb.lost), (0, 0));
    assert!(
        sb.duplicates >= 1,
        "the stream came back from disk and was read again: {sb:?}"
    );
    assert!(sa.reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_entries_are_dropped_and_reported_and_the_rest_delivered() {
    let mut redis = Redis::start().await;
    let a = Node::start(&redis.url(), fast().max_held(5).node_ttl(Duration::from_secs(10))).await;
    let b = Node::start(&redis.url(), fast().node_ttl(Duration::from_secs(10))).await;
    let (a1, b1) = (a.member().await, b.member().await);
    settle(&a, "before", &[&a1, &b1]).await;
    redis.kill().await;
    for i in 0..8 {
        a.server
            .everyone()
            .broadcast_raw(1, raw(&format!("m{i}")))
            .unwrap();
    }
    a1.until("m7").await;
    let dropped: Vec<u64> = a
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ClusterEvent::Dropped {
                kind: EntryKind::Broadcast,
                total,
            } => Some(total),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [1, 2, 3], "each entry past the bound is reported");
    assert_eq!((a.adapter.stats().dropped, a.adapter.stats().held), (3, 5));
    redis.restart().await;
    // The held entries go first: "end" must not meet a full outbox.
    within("a flush", a.adapter.flushed()).await;
    settle(&a, "end", &[&b1]).await;
    assert_eq!(b1.texts(), ["before", "m0", "m1", "m2", "m3", "m4", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_presence_and_rooms_on_the_others_within_its_ttl() {
    let redis = Redis::start().await;
    let config = fast();
    let bound = config.node_ttl + config.heartbeat_interval * 2 + Duration::from_millis(500);
    let query_timeout = config.query_timeout;
    let a = Node::start(&redis.url(), config.clone()).await;
    let mut doomed = Detached::start(&redis.url(), config).await;
    let victim = doomed.member().await;
    let survivor = a.member().await;
    victim.peer.join("lobby").await.unwrap();
    survivor.peer.join("lobby").await.unwrap();
    eventually("a to see the victim join", || async {
        a.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2)
    })
    .await;
    doomed.kill();
    let killed = Instant::now();
    let victim_id = victim.peer.id();
    // Asked while the dead node still looks alive: it never answers, and the count is bounded
    // by the query timeout (or, if the node was removed first, exact).
    let count = async {
        let asked = Instant::now();
        (a.server.cluster_connections().await, asked.elapsed())
    };
    let left = eventually("the victim to leave on a", || async {
        a.presence().iter().any(
            |p| matches!(p, Presence::Left { member, room } if member.id == victim_id && room == "lobby"),
        )
    });
    let ((count, asked_for), ()) = tokio::join!(count, async {
        left.await;
        let took = killed.elapsed();
        assert!(took <= bound, "took {took:?}, documented bound {bound:?}");
    });
    assert!(
        matches!(count, Ok(1) | Err(truflux::Error::RequestTimeout(_))),
        "{count:?}"
    );
    assert!(
        asked_for <= query_timeout + Duration::from_secs(1),
        "{asked_for:?}"
    );
    assert_eq!(
        a.server
            .room_members("lobby")
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [survivor.peer.id()]
    );
    assert!(a.saw(|e| matches!(e, ClusterEvent::NodeDown { members: 1, .. })));
    assert_eq!(a.server.cluster_connections().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_is_taken_for_gone_then_registers_again_and_catches_up() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(redis.port).await;
    let a = Node::start(&redis.url(), fast()).await;
    let b = Node::start(&proxy.url(), fast()).await;
    let (on_a, on_b) = (a.member().await, b.member().await);
    on_a.peer.join("lobby").await.unwrap();
    on_b.peer.join("lobby").await.unwrap();
    settle(&a, "before", &[&on_a, &on_b]).await;
    eventually("a to see both members", || async {
        a.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2)
    })
    .await;
    let b_id = on_b.peer.id();
    let left = |p: &Presence| matches!(p, Presence::Left { member, .. } if member.id == b_id);
    let joined = |p: &Presence| matches!(p, Presence::Joined { member, .. } if member.id == b_id);
    proxy.cut();
    eventually("a to take b for gone", || async {
        a.saw(|e| matches!(e, ClusterEvent::NodeDown { members: 1, .. })) && a.presence().iter().any(left)
    })
    .await;
    a.server
        .to("lobby")
        .broadcast_raw(1, raw("while b was away"))
        .unwrap();
    b.server.to("lobby").broadcast_raw(1, raw("held by b")).unwrap();
    eventually("b to hold its broadcast", || async {
        b.adapter.stats().held >= 1
    })
    .await;
    proxy.restore();
    // Redis stayed up: b reads on from its last entry, and its held broadcast goes out.
    on_b.until("while b was away").await;
    on_a.until("held by b").await;
    eventually("b to register again and its member to be back on a", || async {
        b.saw(|e| {
            matches!(
                e,
                ClusterEvent::Registered {
                    was_taken_for_gone: true
                }
            )
        }) && a.presence().last().is_some_and(joined)
            && a.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2)
    })
    .await;
    settle(&b, "after", &[&on_a, &on_b]).await;
    assert_eq!(on_a.texts(), ["before", "while b was away", "held by b", "after"]);
    assert_eq!(on_b.texts(), ["before", "held by b", "while b was away", "after"]);
    let (sa, sb) = (a.adapter.stats(), b.adapter.stats());
    assert_eq!(
        (sa.lost, sa.dropped, sb.lost, sb.dropped),
        (0, 0, 0, 0),
        "{sa:?} {sb:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_written_again_after_its_node_was_taken_for_gone_is_still_applied_once() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(redis.port).await;
    let a = Node::start(&redis.url(), fast()).await;
    let c = Node::start(&redis.url(), fast()).await;
    let b = Node::start(&proxy.url(), fast().command_timeout(Duration::from_millis(300))).await;
    let (on_a, on_c, on_b) = (a.member().await, c.member().await, b.member().await);
    on_b.peer.join("lobby").await.unwrap();
    settle(&b, "before", &[&on_a, &on_c]).await;
    // Redis applies B's next write but B never hears so: the entry stays held, to be written
    // again.
    proxy.mute(true);
    b.server.everyone().broadcast_raw(1, raw("once")).unwrap();
    on_a.until("once").await;
    on_c.until("once").await;
    assert!(b.adapter.stats().held >= 1);
    // B is cut off until one of A and C removes it and both have read that it is gone.
    proxy.cut();
    proxy.mute(false);
    let b_left = |node: &Node| {
        let id = on_b.peer.id();
        node.presence()
            .iter()
            .any(|p| matches!(p, Presence::Left { member, .. } if member.id == id))
    };
    eventually("A and C to see B's member leave", || async {
        b_left(&a) && b_left(&c)
    })
    .await;
    proxy.restore();
    settle(&b, "after", &[&on_a, &on_c]).await;
    assert_eq!(on_a.texts(), ["before", "once", "after"]);
    assert_eq!(on_c.texts(), ["before", "once", "after"]);
    assert!(a.adapter.stats().duplicates >= 1 && c.adapter.stats().duplicates >= 1);
    assert!(b.saw(|e| matches!(
        e,
        ClusterEvent::Registered {
            was_taken_for_gone: true
        }
    )));
}

/// Whether `node`'s application last heard that `peer` is in a room (or never heard of it).
fn thinks_present(node: &Node, peer: PeerId) -> bool {
    let last = node.presence().into_iter().rev().find(|p| match p {
        Presence::Joined { member, .. } | Presence::Left { member, .. } => member.id == peer,
        _ => false,
    });
    !matches!(last, Some(Presence::Left { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_was_down_longer_than_node_ttl_every_member_is_back_in_its_rooms() {
    let mut redis = Redis::start_persistent().await;
    let (a, b) = (
        Node::start(&redis.url(), fast()).await,
        Node::start(&redis.url(), fast()).await,
    );
    let (on_a, on_b) = (a.member().await, b.member().await);
    on_a.peer.join("lobby").await.unwrap();
    on_b.peer.join("lobby").await.unwrap();
    for node in [&a, &b] {
        eventually("both members in the lobby", || async {
            node.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2)
        })
        .await;
    }
    redis.kill().await;
    a.server.to("lobby").broadcast_raw(1, raw("during")).unwrap();
    // The outage itself: every liveness key expires meanwhile (node_ttl is 500 ms).
    tokio::time::sleep(fast().node_ttl * 3).await;
    redis.restart().await;
    on_b.until("during").await;
    // A node may take the other for gone before it refreshed; then that one registers again
    // and announces its members. Either way, everything converges.
    eventually("every member back in the lobby, everywhere", || async {
        let mut ok = thinks_present(&a, on_b.peer.id()) && thinks_present(&b, on_a.peer.id());
        for node in [&a, &b] {
            ok &= node.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2);
        }
        ok
    })
    .await;
    settle(&b, "end", &[&on_a, &on_b]).await;
    assert_eq!(on_b.texts(), ["during", "end"]);
    assert_eq!(on_a.texts(), ["during", "end"]);
    // Counts come from each node's registration, which a node taken for gone renews on its
    // next heartbeat: they converge too.
    eventually("the cluster counts both peers", || async {
        a.server.cluster_connections().await.ok() == Some(2)
    })
    .await;
    let (sa, sb) = (a.adapter.stats(), b.adapter.stats());
    assert_eq!(
        (sa.lost, sa.dropped, sb.lost, sb.dropped),
        (0, 0, 0, 0),
        "{sa:?} {sb:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_gets_every_node_registered_again_and_rooms_work() {
    let mut redis = Redis::start().await;
    let (a, b) = (
        Node::start(&redis.url(), fast()).await,
        Node::start(&redis.url(), fast()).await,
    );
    let (x_on_a, y_on_b) = (a.member().await, b.member().await);
    x_on_a.peer.join("x").await.unwrap();
    y_on_b.peer.join("y").await.unwrap();
    let both = ["x".to_owned(), "y".to_owned()];
    eventually("rooms everywhere", || async {
        b.server.rooms().await.ok().as_deref() == Some(&both[..])
    })
    .await;
    redis.kill().await;
    redis.restart().await;
    eventually("rooms registered again", || async {
        a.server.rooms().await.ok().as_deref() == Some(&both[..])
            && b.server.rooms().await.ok().as_deref() == Some(&both[..])
    })
    .await;
    assert_eq!(a.server.room_members("y").await.unwrap()[0].id, y_on_b.peer.id());
    eventually("both to say so", || async {
        [&a, &b].iter().all(|n| {
            n.saw(|e| {
                matches!(
                    e,
                    ClusterEvent::Registered {
                        was_taken_for_gone: false
                    }
                )
            })
        })
    })
    .await;
    a.server.to("y").broadcast_raw(1, raw("to y")).unwrap();
    b.server.to("x").broadcast_raw(1, raw("to x")).unwrap();
    y_on_b.until("to y").await;
    x_on_a.until("to x").await;
    assert_eq!(a.server.cluster_connections().await.unwrap(), 2);
}

/// What `docs/CLUSTER.md` gives as the least an ACL user needs.
const ACL: &str = "~chat:* +ping +info +eval +xadd +xread +xrevrange +set +sadd +srem +smembers \
                   +hset +hdel +hgetall +exists +del";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_limited_to_the_prefix_and_the_documented_commands_is_enough() {
    let redis = Redis::start().await;
    let mut setuser = vec!["ACL", "SETUSER", "chat", "on", ">s3cret-pass"];
    setuser.extend(ACL.split_whitespace());
    assert_eq!(redis.command(&setuser).await, "+OK");
    let wrong = format!("redis://chat:wrong-pass@127.0.0.1:{}/", redis.port);
    let refused = truflux_redis::RedisAdapter::connect(&wrong).await.unwrap_err();
    assert!(!refused.to_string().contains("wrong-pass"), "{refused}");
    // The refused login is in ACL LOG: from here on, it must stay empty.
    assert_eq!(redis.command(&["ACL", "LOG", "RESET"]).await, "+OK");
    let url = format!("redis://chat:s3cret-pass@127.0.0.1:{}/", redis.port);
    let config = || fast().prefix("chat");
    let (a, b) = (
        Node::start(&url, config()).await,
        Node::start(&url, config()).await,
    );
    let (on_a, on_b) = (a.member().await, b.member().await);
    on_a.peer.join("lobby").await.unwrap();
    on_b.peer.join("lobby").await.unwrap();
    eventually("both members in the cluster's lobby", || async {
        a.server.room_members("lobby").await.map(|m| m.len()).ok() == Some(2)
    })
    .await;
    a.server
        .to("lobby")
        .broadcast_raw(1, raw("to the lobby"))
        .unwrap();
    on_b.until("to the lobby").await;
    assert_eq!(b.server.rooms().await.unwrap(), ["lobby"]);
    assert_eq!(b.server.cluster_connections().await.unwrap(), 2);
    let direct = Message {
        id: 1,
        payload: raw("direct"),
    };
    assert!(b.server.send_to(on_a.peer.id(), direct).await.unwrap());
    on_a.until("direct").await;
    a.server.close(Code::GOING_AWAY, "bye").await;
    eventually("a's member to leave on b", || async {
        b.presence()
            .iter()
            .any(|p| matches!(p, Presence::Left { member, .. } if member.id == on_a.peer.id()))
    })
    .await;
    for node in [&a, &b] {
        assert!(
            !node.saw(|e| matches!(
                e,
                ClusterEvent::Disconnected { .. } | ClusterEvent::Malformed { .. }
            )),
            "{:?}",
            node.events()
        );
    }
    // Every command the nodes sent (heartbeats and scripts included) was allowed.
    assert_eq!(redis.command(&["ACL", "LOG"]).await, "*0", "refusals in ACL LOG");
}

/// What a message in the large test says: who sent it, its number, and its target.
fn stamp(sender: u8, seq: u32, kind: u8) -> Bytes {
    let mut payload = vec![sender, kind];
    payload.extend_from_slice(&seq.to_be_bytes());
    Bytes::from(payload)
}

/// Whether a client in `room` (0, 1 or 2) is a recipient of a message of `kind`.
fn wanted(kind: u8, room: usize) -> bool {
    match kind {
        0 => true,      // everyone
        1 => room == 0, // to r0
        2 => room == 1, // to [r1, r2] except r2
        _ => room != 0, // everyone except r0
    }
}

async fn send_all(node: &Node, sender: u8, seqs: Range<u32>) {
    for seq in seqs {
        let kind = (seq % 4) as u8;
        let payload = stamp(sender, seq, kind);
        let server = &node.server;
        let sent = match kind {
            0 => server.everyone().broadcast_raw(1, payload),
            1 => server.to("r0").broadcast_raw(1, payload),
            2 => server.to(["r1", "r2"]).except("r2").broadcast_raw(1, payload),
            _ => server.everyone().except("r0").broadcast_raw(1, payload),
        };
        sent.unwrap();
        if seq % 25 == 24 {
            // Paced by Redis: the outbox never reaches its bound.
            within("a flush", node.adapter.flushed()).await;
        }
    }
}

/// A and B send messages `seqs` each, at once.
async fn send_both(a: &Node, b: &Node, seqs: Range<u32>) {
    tokio::join!(send_all(a, 0, seqs.clone()), send_all(b, 1, seqs));
}

/// `count` clients over `nodes` in turn, each in one of the rooms r0, r1, r2:
/// (node index, room index, client).
async fn spread(nodes: &[&Node], count: usize) -> Vec<(usize, usize, support::Member)> {
    let mut members = Vec::with_capacity(count);
    for i in 0..count {
        let (node, room) = (i % nodes.len(), (i / nodes.len()) % 3);
        let member = nodes[node].member().await;
        member.peer.join(&format!("r{room}")).await.unwrap();
        members.push((node, room, member));
    }
    members
}

/// Waits until `node` sees `count` memberships of r0, r1 and r2 in the cluster.
async fn registered(node: &Node, count: usize) {
    eventually(&format!("{count} memberships registered"), || async {
        let mut total = 0;
        for room in ["r0", "r1", "r2"] {
            total += node.server.room_members(room).await.map_or(0, |m| m.len());
        }
        total == count
    })
    .await;
}

/// Checks what one client received: exactly once, in each sender's order, and (if it stayed
/// connected) everything meant for it.
fn check(received: &[Bytes], room: usize, complete: bool, per_sender: u32, who: &str) {
    let mut by_sender: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
    for payload in received.iter().filter(|p| p.len() == 6) {
        let seq = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
        by_sender.entry(payload[0]).or_default().push(seq);
    }
    for (sender, seqs) in &by_sender {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{who}: sender {sender} out of order or twice"
        );
        if complete {
            let expected: Vec<u32> = (0..per_sender).filter(|s| wanted((s % 4) as u8, room)).collect();
            assert_eq!(seqs, &expected, "{who}: from sender {sender}");
        }
    }
    if complete {
        assert_eq!(by_sender.len(), 2, "{who}: from both senders");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_300_clients_1000_messages_while_a_node_stops_and_starts_again() {
    let redis = Redis::start().await;
    let url = redis.url();
    let config = fast().node_ttl(Duration::from_secs(2));
    let a = Node::start_with(&url, config.clone(), roomy()).await;
    let b = Node::start_with(&url, config.clone(), roomy()).await;
    let c = Node::start_with(&url, config.clone(), roomy()).await;
    let members = spread(&[&a, &b, &c], 300).await;
    registered(&a, 300).await;
    // 500 messages from A and 500 from B: a third before C stops, a third while it is down,
    // a third while a new C starts and its clients connect and join.
    let per_sender = 500;
    send_both(&a, &b, 0..166).await;
    c.server.close(Code::GOING_AWAY, "restart").await;
    registered(&a, 200).await;
    send_both(&a, &b, 166..333).await;
    let restart = async {
        let again = Node::start_with(&url, config.clone(), roomy()).await;
        let late = spread(&[&again], 100).await;
        (again, late)
    };
    let ((again, late), ()) = tokio::join!(restart, send_both(&a, &b, 333..per_sender));
    for (node, marker) in [(&a, "end a"), (&b, "end b")] {
        node.server.everyone().broadcast_raw(1, raw(marker)).unwrap();
    }
    let stayed = members.iter().filter(|(node, _, _)| *node != 2);
    for (_, _, member) in stayed.chain(&late) {
        member.until("end a").await;
        member.until("end b").await;
    }
    let mut messages = 0;
    for (node, room, member) in &members {
        let received = member.received();
        messages += received.len();
        let who = format!("member on node {node}");
        check(&received, *room, *node != 2, per_sender, &who);
    }
    for (_, room, member) in &late {
        check(
            &member.received(),
            *room,
            false,
            per_sender,
            "member of the new node",
        );
    }
    for node in [&a, &b, &again] {
        let stats = node.adapter.stats();
        let failures = (stats.dropped, stats.lost, stats.malformed);
        assert_eq!(failures, (0, 0, 0), "{stats:?}");
    }
    assert!(messages > 100_000, "{messages} deliveries");
    // Encoded once per node: one stream entry per broadcast, whatever the number of peers.
    let published = a.adapter.stats().published + b.adapter.stats().published;
    assert!(
        published < 2 * u64::from(per_sender) + 1_000,
        "{published} entries for 1,000 broadcasts"
    );
}
