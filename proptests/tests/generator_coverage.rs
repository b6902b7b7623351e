//! The operation generator reaches every interesting behaviour: deliveries,
//! redeliveries, duplicates, lost leases, dead letters (also under a fresh
//! id, when theirs was taken), ordered acks that take the next message,
//! lagging listeners, retention, dead-letter listings, waits of a backoff,
//! full windows of a rate limit, deleted topics and their tombstones,
//! redrives and purges of dead letters and each error kind. A generator that stopped producing them would let the
//! model tests pass while checking little.

use std::collections::BTreeMap;

use litebus_proptests::model::Model;
use litebus_proptests::ops::{ErrKind, Heard, Obs, Op, op, redrive_ops};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// [`redrive_ops`] sends dead letters back and delivers them often (into
/// ordered groups too), and purges some.
#[test]
fn redrive_sequences_deliver_redriven_messages() {
    let mut runner = TestRunner::deterministic();
    let (mut redriven, mut purged, mut delivered, mut ordered) = (0, 0, 0, 0);
    for _ in 0..600 {
        let sequence = redrive_ops().new_tree(&mut runner).expect("tree").current();
        let mut model = Model::new();
        for op in &sequence {
            model.apply(op);
            match (op, model.last.as_ref()) {
                (Op::Redrive { purge: true, .. }, Some(Obs::TakenBack(Ok(n)))) => purged += n,
                (Op::Redrive { .. }, Some(Obs::TakenBack(Ok(n)))) => redriven += n,
                _ => {}
            }
        }
        delivered += model.redriven_deliveries;
        ordered += model.ordered_redriven_deliveries;
    }
    println!("redriven {redriven}, purged {purged}, delivered {delivered}, ordered {ordered}");
    assert!(redriven >= 100 && purged >= 20 && delivered >= 100 && ordered >= 20);
}

#[test]
fn generated_sequences_reach_every_behaviour() {
    let mut runner = TestRunner::deterministic();
    let ops = proptest::collection::vec(op(), 80);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..5000 {
        let sequence = ops.new_tree(&mut runner).expect("tree").current();
        let mut model = Model::new();
        for op in &sequence {
            let (renamed, handovers) = (model.dead_letters_renamed, model.ordered_handovers);
            let (nacks, holds) = (model.backoff_nacks, model.backoff_holds);
            let (rate_holds, redriven) = (model.rate_holds, model.redriven_deliveries);
            let passes = model.priority_passes;
            let cap_holds = model.key_cap_holds;
            model.apply(op);
            if model.key_cap_holds > cap_holds {
                *seen.entry("per-key cap held a claim").or_default() += 1;
            }
            if model.priority_passes > passes {
                *seen
                    .entry("higher priority passed a lower one")
                    .or_default() += 1;
            }
            if model.redriven_deliveries > redriven {
                *seen.entry("redriven message delivered").or_default() += 1;
            }
            if model.backoff_nacks > nacks {
                *seen.entry("nack waited the backoff").or_default() += 1;
            }
            if model.rate_holds > rate_holds {
                *seen.entry("full rate window").or_default() += 1;
            }
            if model.backoff_holds > holds {
                *seen.entry("expired lease waited the backoff").or_default() += 1;
            }
            if model.dead_letters_renamed > renamed {
                *seen.entry("dead letter under a fresh id").or_default() += 1;
            }
            if model.ordered_handovers > handovers {
                *seen.entry("ordered ack took the next").or_default() += 1;
            }
            let label = match model.last.as_ref().expect("observed") {
                Obs::Received(Ok(Some(got))) if got.attempt > 1 => "redelivery",
                Obs::Received(Ok(Some(_))) => "delivery",
                Obs::Published(Ok(o)) if o.iter().any(|(dup, _)| *dup) => "duplicate",
                Obs::Settled(Err(ErrKind::LeaseLost)) => "lease lost",
                Obs::Settled(Err(ErrKind::Closed)) => "closed",
                Obs::Settled(Ok(())) => "settled",
                Obs::Published(Err(ErrKind::MessageTooLarge)) => "too large",
                Obs::Published(Err(ErrKind::InvalidName)) => "invalid name",
                Obs::Subscribed(Err(ErrKind::InvalidOptions)) => "invalid options",
                Obs::Heard(h) if h.iter().any(|x| matches!(x, Heard::Lagged(_))) => "lagged",
                Obs::Stats(Ok((_, _, groups))) if groups.iter().any(|g| g.4 > 0) => "dead letter",
                Obs::Read(Ok(read)) if read.len() > 1 => match op {
                    Op::Read { key: Some(_), .. } => "read of a key",
                    _ => "read",
                },
                Obs::Read(Err(ErrKind::InvalidName)) => "read refused",
                Obs::Admin(Ok(true)) => match op {
                    Op::Seek(..) => "seek",
                    Op::SetRetention(..) => "retention set",
                    Op::DeleteTopic(..) => "topic deleted",
                    Op::CreateTopic(..) => "topic created again",
                    _ => "group deleted",
                },
                Obs::Admin(Err(ErrKind::TopicInUse)) => "dead-letter topic in use",
                Obs::Published(Err(ErrKind::TopicDeleted)) => "publish to a deleted topic",
                Obs::Subscribed(Err(ErrKind::TopicDeleted)) => "subscribe to a deleted topic",
                Obs::Admin(Err(ErrKind::InvalidOptions)) => "retention refused",
                Obs::Pruned(Ok(n)) if *n > 0 => "pruned",
                Obs::Stats(Ok((_, _, groups))) if groups.iter().any(|g| g.5 > 0) => {
                    "lost to retention"
                }
                Obs::Admin(Err(ErrKind::UnknownGroup)) => "seek of no group",
                Obs::Topics(Ok(names)) if names.len() > 2 => "topics",
                Obs::DeadLetters(Ok(listed)) if !listed.is_empty() => "dead letters listed",
                Obs::TakenBack(Ok(n)) if *n > 0 => match op {
                    Op::Redrive { purge: true, .. } => "dead letters purged",
                    _ => "dead letters redriven",
                },
                _ => continue,
            };
            *seen.entry(label).or_default() += 1;
        }
    }
    for label in [
        "delivery",
        "redelivery",
        "duplicate",
        "lease lost",
        "closed",
        "settled",
        "too large",
        "invalid name",
        "invalid options",
        "lagged",
        "dead letter",
        "dead letter under a fresh id",
        "ordered ack took the next",
        "nack waited the backoff",
        "expired lease waited the backoff",
        "full rate window",
        "read",
        "read of a key",
        "read refused",
        "seek",
        "group deleted",
        "seek of no group",
        "topics",
        "retention set",
        "retention refused",
        "pruned",
        "lost to retention",
        "dead letters listed",
        "dead letters redriven",
        "dead letters purged",
        "redriven message delivered",
        "higher priority passed a lower one",
        "per-key cap held a claim",
        "topic deleted",
        "topic created again",
        "dead-letter topic in use",
        "publish to a deleted topic",
        "subscribe to a deleted topic",
    ] {
        assert!(
            seen.get(label).copied().unwrap_or(0) >= 3,
            "{label} too rare: {seen:?}"
        );
    }
    println!("{seen:?}");
}
