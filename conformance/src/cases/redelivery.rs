//! I6: a nack, an expired lease or a dropped subscription gives the message
//! back with the next attempt.

use crate::prelude::*;

/// I6: a nack makes the message deliverable at once with attempt + 1.
pub async fn i6_nack_redelivers<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_nack").await;
    env.publish_n("t", 0, 1).await;
    let a = env.sub("t", "g", shared(5)).await;
    let b = env.sub("t", "g", shared(5)).await;
    let d = recv(&a).await;
    d.nack(NackOptions::new()).await.unwrap();
    let again = some(&b).await;
    assert_eq!((again.seq(), again.attempt()), (1, 2));
}

/// I6: a nack delay holds the message back until the clock reaches it.
pub async fn i6_nack_delay_is_respected<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_delay").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    d.nack(NackOptions::new().with_delay(Duration::from_secs(5)))
        .await
        .unwrap();
    none(&sub).await;
    env.advance(Duration::from_millis(4_999));
    none(&sub).await;
    env.advance(Duration::from_millis(1));
    assert_eq!(some(&sub).await.attempt(), 2);
}

/// I6: an expired lease makes the message deliverable again.
pub async fn i6_lease_expiry_redelivers<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_expiry").await;
    env.publish_n("t", 0, 1).await;
    let sub = env.sub("t", "g", GroupOptions::new()).await;
    let d = recv(&sub).await;
    env.advance(Duration::from_millis(9_999));
    none(&sub).await;
    env.advance(Duration::from_millis(1));
    let again = some(&sub).await;
    assert_eq!((again.seq(), again.attempt()), (d.seq(), 2));
}

/// I6: dropping a subscription hands its deliveries back at once.
pub async fn i6_dropped_subscription_releases<F: Factory>(f: &F) {
    let env = Env::new(f, "i6_drop").await;
    env.publish_n("t", 0, 3).await;
    let a = env.sub("t", "g", shared(10).prefetch(3)).await;
    let d = recv(&a).await;
    assert_eq!(d.attempt(), 1);
    drop(a);
    assert!(d.ack().await.unwrap_err().is_lease_lost());
    let b = env.sub("t", "g", shared(10).prefetch(3)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = recv(&b).await;
        got.push((d.seq(), d.attempt()));
        d.ack().await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, vec![(1, 2), (2, 2), (3, 2)]);
}
