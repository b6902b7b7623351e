//! Reads without consuming: `bus.read` and `bus.read_key` (a page of a
//! topic, or of one key, from a seq), and `bus.follow` (what is stored,
//! then each new message as it is committed, with neither gaps nor
//! repeats, through any bus on the store).

use futures_lite::StreamExt;

use crate::prelude::*;

/// Seq and payload of each record.
fn seen(records: &[Record]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| {
            let payload = String::from_utf8_lossy(r.message().payload()).into_owned();
            (r.seq(), payload)
        })
        .collect()
}

/// Every record of `topic`, read page by page with `page` at a time.
async fn read_all(bus: &Bus, topic: &str, key: Option<&str>, page: usize) -> Vec<Record> {
    let mut all: Vec<Record> = Vec::new();
    loop {
        let from = all.last().map_or(1, |r| r.seq() + 1);
        let got = match key {
            Some(key) => bus.read_key(topic, key, from, page).await,
            None => bus.read(topic, from, page).await,
        }
        .expect("read");
        assert!(got.len() <= page, "a page holds at most its limit");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// `count` messages from `follow`, each within the time limit.
async fn follow_n(follow: &mut Follow, count: usize) -> Vec<Record> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        got.push(within(follow.recv()).await.expect("follow"));
    }
    got
}

/// A read returns a topic's messages from a seq, in order, with their
/// seqs and contents, and consumes nothing: a group sees every message
/// after it, and the stats do not move.
pub async fn read_returns_a_topic_from_a_seq_without_consuming<F: Factory>(f: &F) {
    let env = Env::new(f, "read_page").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.extend(env.publish_n("t", i, 1).await);
        // Another topic's messages in between: the topic's seqs have gaps.
        env.publish_n("u", i, 1).await;
    }
    let before = env.bus.stats("t").await.unwrap();

    let all = env.bus.read("t", 1, 100).await.unwrap();
    let expected: Vec<(u64, String)> = seqs.iter().copied().zip(names("t", 0..10)).collect();
    assert_eq!(seen(&all), expected);
    assert_eq!(all[3].message().id(), "t-3");
    assert!(all.iter().all(|r| r.undecodable().is_none()));

    // From a seq (inclusive), at most `limit`; paging gives the same.
    let page = env.bus.read("t", seqs[4], 3).await.unwrap();
    assert_eq!(seen(&page), expected[4..7].to_vec());
    let between = env.bus.read("t", seqs[4] + 1, 1).await.unwrap();
    assert_eq!(
        seen(&between),
        expected[5..6].to_vec(),
        "from a seq in a gap"
    );
    assert_eq!(seen(&read_all(&env.bus, "t", None, 4).await), expected);
    assert!(env.bus.read("t", seqs[9] + 1, 10).await.unwrap().is_empty());
    assert!(env.bus.read("t", 1, 0).await.unwrap().is_empty(), "limit 0");
    assert!(env.bus.read("never", 1, 10).await.unwrap().is_empty());

    assert_eq!(env.bus.stats("t").await.unwrap(), before, "nothing changed");
    assert_eq!(receive_all(&sub, 10).await, names("t", 0..10));
    none(&sub).await;
}

/// `read_key` returns one key's messages in order (an event store's stream
/// load), page by page, and nothing for a key the topic does not hold.
pub async fn read_key_returns_one_keys_messages_in_order<F: Factory>(f: &F) {
    let env = Env::new(f, "read_key").await;
    let mut expected: Vec<(u64, String)> = Vec::new();
    for i in 0..30 {
        let key = format!("k{}", i % 3);
        let message = Message::new(format!("t-{i}")).with_key(key.clone());
        let seq = env.bus.publish("t", message).await.unwrap().seq();
        if key == "k1" {
            expected.push((seq, format!("t-{i}")));
        }
    }
    env.bus.publish("t", Message::new("no key")).await.unwrap();
    let one = env.bus.read_key("t", "k1", 1, 100).await.unwrap();
    assert_eq!(seen(&one), expected);
    assert!(one.iter().all(|r| r.message().key() == Some("k1")));
    assert_eq!(
        seen(&read_all(&env.bus, "t", Some("k1"), 4).await),
        expected
    );
    let from = env.bus.read_key("t", "k1", expected[2].0, 2).await.unwrap();
    assert_eq!(seen(&from), expected[2..4].to_vec());
    assert!(env.bus.read_key("t", "k9", 1, 10).await.unwrap().is_empty());
    assert!(env.bus.read_key("u", "k1", 1, 10).await.unwrap().is_empty());
}

/// Reads and follows refuse bad input with a clear error, and refuse
/// everything once the bus is closed.
pub async fn reads_refuse_bad_input<F: Factory>(f: &F) {
    let env = Env::new(f, "read_input").await;
    env.publish_n("t", 0, 1).await;
    let name = |r: Result<Vec<Record>>| match r {
        Err(Error::InvalidName { kind, .. }) => Some(kind),
        _ => None,
    };
    assert_eq!(
        name(env.bus.read("bad topic", 1, 1).await),
        Some(NameKind::Topic)
    );
    assert_eq!(name(env.bus.read("", 1, 1).await), Some(NameKind::Topic));
    assert_eq!(
        name(env.bus.read_key("t", "", 1, 1).await),
        Some(NameKind::MessageKey)
    );
    assert_eq!(
        name(env.bus.read_key("t", "a\nb", 1, 1).await),
        Some(NameKind::MessageKey)
    );
    let beyond = u64::MAX;
    assert!(matches!(
        env.bus.read("t", beyond, 1).await,
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        env.bus.follow("t", beyond),
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        env.bus.follow("bad topic", 1),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        env.bus.follow_key("t", "", 1),
        Err(Error::InvalidName { .. })
    ));
    // The largest seq is a valid start.
    let last = i64::MAX.unsigned_abs();
    assert!(env.bus.read("t", last, 1).await.unwrap().is_empty());

    let mut follow = env.bus.follow("t", 1).unwrap();
    env.bus.close().await.unwrap();
    assert!(matches!(env.bus.read("t", 1, 1).await, Err(Error::Closed)));
    assert!(matches!(env.bus.follow("t", 1), Err(Error::Closed)));
    assert!(matches!(follow.recv().await, Err(Error::Closed)));
    assert!(
        follow.next().await.is_none(),
        "the stream ends when the bus closes"
    );
}

/// A follow returns what is stored (more than one read's worth), then each
/// message as it is committed while it waits, with neither gaps nor
/// repeats across the switch; its position is the last seq returned.
pub async fn follow_catches_up_then_goes_on_live<F: Factory>(f: &F) {
    let env = Env::new(f, "follow_live").await;
    let stored: Vec<Message> = (0..700).map(|i| msg("t", i)).collect();
    env.bus.publish_batch("t", stored).await.unwrap();
    let mut follow = env.bus.follow("t", 1).unwrap();
    assert_eq!(follow.position(), 0);
    let (got, ()) = within(future::zip(follow_n(&mut follow, 900), async {
        for i in 700..900 {
            env.bus.publish("t", msg("t", i)).await.unwrap();
            if i % 7 == 0 {
                future::yield_now().await;
            }
        }
    }))
    .await;
    let all = read_all(&env.bus, "t", None, 1000).await;
    assert_eq!(seen(&got), seen(&all));
    assert_eq!(
        seen(&got).into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        names("t", 0..900)
    );
    assert_eq!(follow.position(), all[899].seq());
    // Nothing more: a `recv` waits.
    assert!(future::poll_once(follow.recv()).await.is_none());
}

/// A follow started from a position (a checkpoint + 1) returns only what
/// comes after it, across a reopen of the store; a follow of one key
/// returns only that key's messages, stored and live.
pub async fn follow_from_a_position_and_of_one_key<F: Factory>(f: &F) {
    let mut env = Env::new(f, "follow_from").await;
    let keyed = |i: usize| msg("t", i).with_key(format!("k{}", i % 2));
    for i in 0..6 {
        env.bus.publish("t", keyed(i)).await.unwrap();
    }
    let mut follow = env.bus.follow("t", 1).unwrap();
    follow_n(&mut follow, 3).await;
    let checkpoint = follow.position();
    drop(follow);
    env.reopen().await;
    let mut follow = env.bus.follow("t", checkpoint + 1).unwrap();
    let rest = follow_n(&mut follow, 3).await;
    let payloads: Vec<String> = seen(&rest).into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, names("t", 3..6));

    let mut odd = env.bus.follow_key("t", "k1", 1).unwrap();
    assert_eq!(odd.key(), Some("k1"));
    let (got, ()) = within(future::zip(follow_n(&mut odd, 5), async {
        for i in 6..10 {
            env.bus.publish("t", keyed(i)).await.unwrap();
            future::yield_now().await;
        }
    }))
    .await;
    let payloads: Vec<String> = seen(&got).into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, ["t-1", "t-3", "t-5", "t-7", "t-9"]);
}

/// A follow waiting on one bus is woken by a publish through another bus
/// of the store, and by the dead letters a group moves to the topic it
/// follows.
pub async fn follow_is_woken_by_any_bus_and_by_dead_letters<F: Factory>(f: &F) {
    let env = Env::new(f, "follow_wake").await;
    let other = env.another_bus().await;
    let mut follow = other.follow("t", 1).unwrap();
    let (got, _) = within(future::zip(follow.recv(), async {
        future::yield_now().await;
        env.publish_n("t", 0, 1).await
    }))
    .await;
    assert_eq!(got.unwrap().message().payload(), b"t-0");

    let mut letters = other.follow("t.dlq", 1).unwrap();
    let sub = env.sub("t", "g", GroupOptions::new().max_attempts(1)).await;
    let delivery = recv(&sub).await;
    let (got, nacked) = within(future::zip(letters.recv(), async {
        future::yield_now().await;
        delivery.nack(NackOptions::new()).await
    }))
    .await;
    nacked.unwrap();
    let letter = got.unwrap();
    assert_eq!(letter.message().payload(), b"t-0");
    assert_eq!(letter.message().metadata()[dead_letter_keys::GROUP], "g");
    other.close().await.unwrap();
}

/// A follow's `recv` dropped after any number of polls (under a deadline,
/// in a `select!`) returns nothing: the next `recv` returns the same
/// message, so a follow cut at random while messages arrive still sees
/// each exactly once, in order.
pub async fn follows_cut_after_any_poll_miss_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "follow_cut").await;
    let mut follow = env.bus.follow("t", 1).unwrap();
    let mut got: Vec<Record> = Vec::new();
    for i in 0..120 {
        if i % 3 == 0 {
            env.publish_n("t", i / 3, 1).await;
        }
        let mut cut = Box::pin(follow.recv());
        for _ in 0..i % 4 {
            if let Some(record) = future::poll_once(&mut cut).await {
                got.push(record.unwrap());
                break;
            }
        }
    }
    while got.len() < 40 {
        got.push(within(follow.recv()).await.unwrap());
    }
    let payloads: Vec<String> = seen(&got).into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, names("t", 0..40));
    assert!(future::poll_once(follow.recv()).await.is_none());
}
