//! I2: a repeated id is a duplicate naming the original, never delivered
//! again.

use crate::prelude::*;

/// I2: a repeated id is `Duplicate` naming the original seq, not an error.
pub async fn i2_duplicate_names_original<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_duplicate").await;
    let first = env.bus.publish("t", msg("t", 0)).await.unwrap();
    env.publish_n("t", 1, 3).await;
    let again = env
        .bus
        .publish("t", Message::new("other payload").with_id("t-0"))
        .await
        .unwrap();
    assert_eq!(again, Outcome::Duplicate { seq: first.seq() });
    assert_eq!(env.bus.stats("t").await.unwrap().messages, 4);
}

/// I2: inside one batch, the second of two equal ids is a duplicate of the first.
pub async fn i2_duplicate_inside_batch<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_batch").await;
    let outcomes = env
        .bus
        .publish_batch("t", [msg("t", 0), msg("t", 1), msg("t", 0)])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Published { .. }));
    assert!(matches!(outcomes[1], Outcome::Published { .. }));
    assert_eq!(
        outcomes[2],
        Outcome::Duplicate {
            seq: outcomes[0].seq()
        }
    );
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    assert_eq!(receive_all(&sub, 2).await, names("t", 0..2));
    none(&sub).await;
}

/// I2: a duplicate of an acked message is never delivered again.
pub async fn i2_duplicate_never_delivered_again<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_never_again").await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    env.publish_n("t", 0, 1).await;
    receive_all(&sub, 1).await;
    assert!(
        env.bus
            .publish("t", msg("t", 0))
            .await
            .unwrap()
            .is_duplicate()
    );
    none(&sub).await;
    let late = env.sub("t", "late", GroupOptions::new()).await;
    assert_eq!(receive_all(&late, 1).await, names("t", 0..1));
    none(&late).await;
}

/// I2: messages without an id get unique generated ids.
pub async fn i2_generated_ids_are_unique<F: Factory>(f: &F) {
    let env = Env::new(f, "i2_generated").await;
    let outcomes = env
        .bus
        .publish_batch("t", (0..50).map(|i| Message::new(format!("{i}"))))
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| !o.is_duplicate()));
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let mut ids = BTreeSet::new();
    for _ in 0..50 {
        let d = recv(&sub).await;
        assert!(!d.message().id().is_empty());
        ids.insert(d.message().id().to_owned());
        d.ack().await.unwrap();
    }
    assert_eq!(ids.len(), 50);
}
