//! I1: seqs rise, a batch is all-or-nothing and keeps its order, an
//! expected last seq guards an append.

use crate::prelude::*;

/// I1: seqs strictly increase across single and batch publishes.
pub async fn i1_seq_strictly_increases<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_seq").await;
    let mut seqs = env.publish_n("t", 0, 20).await;
    for outcome in env
        .bus
        .publish_batch("t", (20..40).map(|i| msg("t", i)))
        .await
        .unwrap()
    {
        seqs.push(outcome.seq());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        env.bus.stats("t").await.unwrap().last_seq,
        *seqs.last().unwrap()
    );
}

/// I1: a batch with one bad message stores nothing.
pub async fn i1_batch_is_all_or_nothing<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_atomic").await;
    env.publish_n("t", 0, 1).await;
    let big = Message::new(vec![0u8; 1024 * 1024 + 1]).with_id("big");
    let batch = vec![msg("t", 1), msg("t", 2), big, msg("t", 3)];
    let err = env.bus.publish_batch("t", batch).await.unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert_eq!(env.bus.stats("t").await.unwrap().last_seq, 1);
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&sub, 1).await, names("t", 0..1));
    none(&sub).await;
    // The same ids are still free.
    assert!(
        !env.bus
            .publish("t", msg("t", 1))
            .await
            .unwrap()
            .is_duplicate()
    );
}

/// I1: a batch's messages get increasing seqs in batch order.
pub async fn i1_batch_seqs_follow_batch_order<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_batch_order").await;
    let outcomes = env
        .bus
        .publish_batch("t", (0..50).map(|i| msg("t", i)))
        .await
        .unwrap();
    let seqs: Vec<u64> = outcomes.iter().map(|o| o.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    for (i, seq) in seqs.iter().enumerate() {
        let d = recv(&sub).await;
        assert_eq!((d.seq(), text(&d)), (*seq, format!("t-{i}")));
        d.ack().await.unwrap();
    }
}

/// I1 (event-store append): an expected last seq that does not match is a
/// `Conflict` and stores nothing.
pub async fn i1_expected_last_seq<F: Factory>(f: &F) {
    let env = Env::new(f, "i1_expected").await;
    let first = env
        .bus
        .publish_batch_expecting("t", 0, [msg("t", 0)])
        .await
        .unwrap();
    assert_eq!(first[0].seq(), 1);
    let err = env
        .bus
        .publish_batch_expecting("t", 0, [msg("t", 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 0,
                actual: 1
            }
        ),
        "{err}"
    );
    assert_eq!(env.bus.stats("t").await.unwrap().last_seq, 1);
    let ok = env
        .bus
        .publish_batch_expecting("t", 1, [msg("t", 1)])
        .await
        .unwrap();
    assert!(ok[0].seq() > 1);
}

/// An empty batch stores nothing and is not an error.
pub async fn empty_batch_is_a_no_op<F: Factory>(f: &F) {
    let env = Env::new(f, "empty_batch").await;
    assert!(
        env.bus
            .publish_batch("t", Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.bus.stats("t").await.unwrap().last_seq, 0);
}

/// A publish cut after any number of polls (its future dropped, as a
/// `select!` or a timeout drops it) stores its message once or not at all,
/// and the calls after it go on: the same ids published again to
/// completion are each stored once, the topic holds exactly those, and a
/// group from the beginning gets each once, in seq order.
pub async fn publishes_cut_after_any_poll_store_once_or_not_at_all<F: Factory>(f: &F) {
    let env = Env::new(f, "cut_publish").await;
    let count = 120;
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..count {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let mut cut = Box::pin(env.bus.publish("t", msg("t", i)));
        for _ in 0..=random % 6 {
            if future::poll_once(&mut cut).await.is_some() {
                break;
            }
        }
        drop(cut);
        if random & 8 == 0 {
            // A publish to another topic right after the cut one.
            within(env.bus.publish("u", msg("u", i))).await.unwrap();
        }
    }
    let mut seqs = BTreeSet::new();
    for i in 0..count {
        let outcome = within(env.bus.publish("t", msg("t", i))).await.unwrap();
        assert!(seqs.insert(outcome.seq()), "{i} stored twice: {outcome:?}");
    }
    assert_eq!(env.bus.stats("t").await.unwrap().messages, count as u64);
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let mut got = Vec::new();
    for _ in 0..count {
        let d = recv(&sub).await;
        got.push(d.seq());
        d.ack().await.unwrap();
    }
    none(&sub).await;
    assert_eq!(got, seqs.into_iter().collect::<Vec<_>>());
}
