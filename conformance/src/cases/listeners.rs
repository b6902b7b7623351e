//! Listeners: a live feed of what is published, and how it reports lag.

use crate::prelude::*;

/// A listener hears messages published after it was created, in order.
pub async fn listener_hears_new_messages<F: Factory>(f: &F) {
    let env = Env::new(f, "listener_new").await;
    env.publish_n("t", 0, 2).await;
    let mut live = env.bus.listen("t").unwrap();
    env.publish_n("t", 2, 3).await;
    env.bus.publish("t", msg("t", 2)).await.unwrap();
    for i in 2..5 {
        match within(live.recv()).await.unwrap() {
            Live::Message { seq, message } => {
                assert_eq!(seq, i as u64 + 1);
                assert_eq!(message.id(), format!("t-{i}"));
            }
            Live::Lagged(n) => panic!("lagged {n}"),
        }
    }
    assert!(live.try_recv().is_none(), "a duplicate is not heard");
}

/// A slow listener loses the oldest messages and is told how many.
pub async fn listener_reports_lag<F: Factory>(f: &F) {
    let env = Env::new(f, "listener_lag").await;
    let driver = f.open(&format!("{}-small", env.store)).await.expect("open");
    let bus = Bus::open(
        driver,
        BusOptions::new()
            .clock(env.clock.clone())
            .listener_capacity(4),
    )
    .expect("bus");
    let mut live = bus.listen("t").unwrap();
    bus.publish_batch("t", (0..10).map(|i| msg("t", i)))
        .await
        .unwrap();
    assert_eq!(live.try_recv().unwrap().unwrap(), Live::Lagged(6));
    let mut seqs = Vec::new();
    while let Some(Ok(Live::Message { seq, .. })) = live.try_recv() {
        seqs.push(seq);
    }
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    bus.close().await.unwrap();
    assert!(within(live.recv()).await.unwrap_err().is_closed());
}
