//! The system under test: a real [`Bus`] on any driver, driven by the same
//! operations as the model and reporting the same observations.

use std::time::Duration;

use litebus::{
    Bus, BusOptions, Delivery, GroupOptions, Listener, Live, ManualClock, Message, NackOptions,
    Order, Start, Subscription, Timestamp,
};
use litebus_conformance::Factory;

use crate::model::START_MILLIS;
use crate::ops::{
    ErrKind, Got, Heard, LISTENER_CAPACITY, MAX_MESSAGE_SIZE, MsgSpec, Obs, Op, OrderChoice,
    StartChoice, SubSpec, TopicChoice, is_a_g1, message_id, payload, read_key,
};

/// One consumer: its subscription while alive, and the deliveries it holds.
struct Consumer {
    subscription: Option<Subscription>,
    held: Vec<Delivery>,
}

/// A bus on a store made by `F`, with a manual clock.
pub struct Harness<'f, F: Factory> {
    factory: &'f F,
    store: String,
    clock: ManualClock,
    bus: Bus,
    next_payload: u64,
    /// The seq group `g1` of topic `a` last handed out ([`message_id`]).
    a_g1: u64,
    consumers: Vec<Consumer>,
    listeners: Vec<Listener>,
}

fn bus_options(clock: &ManualClock) -> BusOptions {
    BusOptions::new()
        .clock(clock.clone())
        .max_message_size(MAX_MESSAGE_SIZE)
        .listener_capacity(LISTENER_CAPACITY)
        // Every publish and ack prunes, as the model does.
        .prune_every(1)
}

fn kind<T>(r: &litebus::Result<T>) -> Result<(), ErrKind> {
    r.as_ref().map(|_| ()).map_err(ErrKind::from)
}

impl<'f, F: Factory> Harness<'f, F> {
    /// A bus on a new store named `store`.
    pub async fn new(factory: &'f F, store: String) -> Self {
        let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
        let driver = factory.open(&store).await.expect("open driver");
        let bus = Bus::open(driver, bus_options(&clock)).expect("open bus");
        Harness {
            factory,
            store,
            clock,
            bus,
            next_payload: 0,
            a_g1: 0,
            consumers: Vec::new(),
            listeners: Vec::new(),
        }
    }

    /// Closes the bus at the end of a run.
    pub async fn close(self) {
        self.bus.close().await.expect("close");
    }

    fn message(&mut self, spec: &MsgSpec) -> Message {
        let mut m = Message::new(payload(self.next_payload, spec));
        self.next_payload += 1;
        if let Some(id) = spec.id {
            m = m.with_id(message_id(id, self.a_g1));
        }
        if let Some(key) = spec.key {
            m = m.with_key(format!("k{}", key % 3));
        }
        if let Some(delay) = spec.delay_ms {
            m = m.with_deliver_at(self.clock.now() + Duration::from_millis(u64::from(delay)));
        }
        m.with_priority(spec.priority)
    }

    /// Performs `op` and reports what it observably did.
    pub async fn apply(&mut self, op: &Op) -> Obs {
        match op {
            Op::Publish(topic, spec) => self.publish(*topic, std::slice::from_ref(spec)).await,
            Op::PublishBatch(topic, specs) => self.publish(*topic, specs).await,
            Op::Subscribe(topic, group, spec) => {
                let result = self
                    .bus
                    .subscribe(topic.name(), group.name(), group_options(*spec))
                    .await;
                let obs = Obs::Subscribed(kind(&result));
                if let Ok(subscription) = result {
                    self.consumers.push(Consumer {
                        subscription: Some(subscription),
                        held: Vec::new(),
                    });
                }
                obs
            }
            Op::Receive { consumer } => self.receive(*consumer).await,
            Op::CutReceive { consumer, polls } => self.cut_receive(*consumer, *polls).await,
            Op::Ack { consumer, held } => self.settle(*consumer, *held, None).await,
            Op::Nack {
                consumer,
                held,
                delay_ms,
            } => {
                let delay = delay_ms.map(|d| Duration::from_millis(u64::from(d)));
                self.settle(*consumer, *held, Some(Err(delay))).await
            }
            Op::Extend {
                consumer,
                held,
                by_ms,
            } => {
                let by = Duration::from_millis(u64::from(*by_ms));
                self.settle(*consumer, *held, Some(Ok(by))).await
            }
            Op::Advance(ms) => {
                self.clock.advance(Duration::from_millis(u64::from(*ms)));
                Obs::Done
            }
            Op::Drop { consumer } => match self.live(*consumer) {
                Some(c) => {
                    // Leaving with `close` waits until the release is stored
                    // and announced; a plain drop releases in the background
                    // on drivers with a runtime, and a listener would hear the
                    // dead letters it makes a moment later than the model
                    // says. (Dropping is checked by the conformance suite.)
                    if let Some(subscription) = self.consumers[c].subscription.take() {
                        subscription.close().await.expect("close a subscription");
                    }
                    Obs::Done
                }
                None => Obs::Skipped,
            },
            Op::Listen(topic) => {
                if let Ok(listener) = self.bus.listen(topic.name()) {
                    self.listeners.push(listener);
                }
                Obs::Done
            }
            Op::PollListener(l) => {
                if self.listeners.is_empty() {
                    return Obs::Skipped;
                }
                let n = self.listeners.len();
                let listener = &mut self.listeners[usize::from(*l) % n];
                let mut heard = Vec::new();
                while let Some(Ok(item)) = listener.try_recv() {
                    heard.push(match item {
                        Live::Message { seq, message } => {
                            Heard::Message(seq, message.payload().to_vec())
                        }
                        Live::Lagged(n) => Heard::Lagged(n),
                    });
                }
                Obs::Heard(heard)
            }
            Op::Stats(topic) => Obs::Stats(
                self.bus
                    .stats(topic.name())
                    .await
                    .map(|s| {
                        let groups = s
                            .groups
                            .into_iter()
                            .map(|g| {
                                (
                                    g.group,
                                    g.ready,
                                    g.in_flight,
                                    g.acked_floor,
                                    g.dead_lettered,
                                    g.pruned,
                                    g.lag.map(|d| d.as_millis() as u64),
                                )
                            })
                            .collect();
                        (s.last_seq, s.messages, groups)
                    })
                    .map_err(|e| ErrKind::from(&e)),
            ),
            Op::Read {
                topic,
                from,
                key,
                limit,
            } => {
                let (from, limit) = (u64::from(*from), usize::from(*limit));
                let read = match key {
                    Some(key) => {
                        let key = read_key(*key);
                        self.bus.read_key(topic.name(), &key, from, limit).await
                    }
                    None => self.bus.read(topic.name(), from, limit).await,
                };
                Obs::Read(
                    read.map(|records| {
                        records
                            .iter()
                            .map(|r| (r.seq(), r.message().payload().to_vec()))
                            .collect()
                    })
                    .map_err(|e| ErrKind::from(&e)),
                )
            }
            Op::Topics => Obs::Topics(self.bus.topics().await.map_err(|e| ErrKind::from(&e))),
            Op::DeadLetters {
                topic,
                group,
                from,
                limit,
            } => Obs::DeadLetters(
                self.bus
                    .dead_letters(
                        topic.name(),
                        group.name(),
                        u64::from(*from),
                        usize::from(*limit),
                    )
                    .await
                    .map(|listed| {
                        listed
                            .iter()
                            .map(|d| {
                                (
                                    d.record().seq(),
                                    d.record().message().payload().to_vec(),
                                    d.topic().to_owned(),
                                    d.seq(),
                                    d.attempts(),
                                    d.error().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .map_err(|e| ErrKind::from(&e)),
            ),
            Op::Redrive {
                topic,
                group,
                pick,
                purge,
            } => {
                let (topic, group) = (topic.name(), group.name());
                // What `pick` chooses, by the dead letters' seqs.
                let listed = self
                    .bus
                    .dead_letters(topic, group, 1, usize::MAX)
                    .await
                    .unwrap_or_default();
                let chosen: Vec<u64> = match pick {
                    _ if listed.is_empty() => Vec::new(),
                    None => listed.iter().map(|d| d.record().seq()).collect(),
                    Some(n) => vec![listed[usize::from(*n) % listed.len()].record().seq()],
                };
                let select = |d: &litebus::DeadLetter| chosen.contains(&d.record().seq());
                let done = if *purge {
                    self.bus.purge_dead_letters(topic, group, select).await
                } else {
                    self.bus.redrive(topic, group, select).await
                };
                Obs::TakenBack(done.map_err(|e| ErrKind::from(&e)))
            }
            Op::Seek(topic, group, to) => {
                let sought = self.bus.seek(topic.name(), group.name(), start(*to)).await;
                Obs::Admin(sought.map(|()| true).map_err(|e| ErrKind::from(&e)))
            }
            Op::DeleteGroup(topic, group) => {
                let (topic, group) = (topic.name(), group.name());
                let deleted = self.bus.delete_group(topic, group).await;
                if deleted.is_ok() {
                    for c in &mut self.consumers {
                        let of_group = c
                            .subscription
                            .as_ref()
                            .is_some_and(|s| s.topic() == topic && s.group() == group);
                        if of_group && let Some(subscription) = c.subscription.take() {
                            subscription.close().await.expect("close a subscription");
                        }
                    }
                }
                Obs::Admin(deleted.map_err(|e| ErrKind::from(&e)))
            }
            Op::DeleteTopic(topic) => {
                let topic = topic.name();
                let deleted = self.bus.delete_topic(topic).await;
                if deleted.is_ok() {
                    for c in &mut self.consumers {
                        let of_topic = c.subscription.as_ref().is_some_and(|s| s.topic() == topic);
                        if of_topic && let Some(subscription) = c.subscription.take() {
                            subscription.close().await.expect("close a subscription");
                        }
                    }
                }
                Obs::Admin(deleted.map_err(|e| ErrKind::from(&e)))
            }
            Op::CreateTopic(topic) => {
                let created = self.bus.create_topic(topic.name()).await;
                Obs::Admin(created.map_err(|e| ErrKind::from(&e)))
            }
            Op::SetRetention(topic, rule) => {
                let set = self.bus.set_retention(topic.name(), rule.retention()).await;
                Obs::Admin(set.map(|()| true).map_err(|e| ErrKind::from(&e)))
            }
            Op::Prune(topic) => Obs::Pruned(
                self.bus
                    .prune(topic.name())
                    .await
                    .map_err(|e| ErrKind::from(&e)),
            ),
            Op::Reopen => {
                self.bus.close().await.expect("close");
                for c in &mut self.consumers {
                    c.subscription = None;
                }
                let driver = self.factory.open(&self.store).await.expect("reopen driver");
                self.bus = Bus::open(driver, bus_options(&self.clock)).expect("reopen bus");
                Obs::Done
            }
        }
    }

    async fn publish(&mut self, topic: TopicChoice, specs: &[MsgSpec]) -> Obs {
        let messages: Vec<Message> = specs.iter().map(|s| self.message(s)).collect();
        let result = self.bus.publish_batch(topic.name(), messages).await;
        Obs::Published(
            result
                .map(|outcomes| {
                    outcomes
                        .iter()
                        .map(|o| (o.is_duplicate(), o.seq()))
                        .collect()
                })
                .map_err(|e| ErrKind::from(&e)),
        )
    }

    fn live(&self, c: u8) -> Option<usize> {
        if self.consumers.is_empty() {
            return None;
        }
        let c = usize::from(c) % self.consumers.len();
        self.consumers[c].subscription.is_some().then_some(c)
    }

    async fn receive(&mut self, c: u8) -> Obs {
        let Some(c) = self.live(c) else {
            return Obs::Skipped;
        };
        let sub = self.consumers[c].subscription.as_ref().expect("live");
        let received = sub.try_recv().await;
        self.received(c, received)
    }

    /// A `recv` dropped after `polls % 4` polls unless it finished first,
    /// then a receive.
    async fn cut_receive(&mut self, c: u8, polls: u8) -> Obs {
        let Some(i) = self.live(c) else {
            return Obs::Skipped;
        };
        let sub = self.consumers[i].subscription.as_ref().expect("live");
        let mut recv = Box::pin(sub.recv());
        let mut finished = None;
        for _ in 0..polls % 4 {
            if let Some(received) = futures_lite::future::poll_once(&mut recv).await {
                finished = Some(received.map(Some));
                break;
            }
        }
        drop(recv);
        match finished {
            Some(received) => self.received(i, received),
            None => self.receive(c).await,
        }
    }

    fn received(&mut self, c: usize, received: litebus::Result<Option<Delivery>>) -> Obs {
        let consumer = &mut self.consumers[c];
        match received {
            Ok(Some(d)) => {
                if is_a_g1(d.topic(), d.group()) {
                    self.a_g1 = d.seq();
                }
                let got = Got {
                    seq: d.seq(),
                    attempt: d.attempt(),
                    payload: d.message().payload().to_vec(),
                };
                consumer.held.push(d);
                Obs::Received(Ok(Some(got)))
            }
            Ok(None) => Obs::Received(Ok(None)),
            Err(e) => Obs::Received(Err(ErrKind::from(&e))),
        }
    }

    /// `how`: `None` acks, `Some(Err(delay))` nacks (without a delay: the
    /// group's backoff), `Some(Ok(by))` extends.
    async fn settle(
        &mut self,
        c: u8,
        held: u8,
        how: Option<Result<Duration, Option<Duration>>>,
    ) -> Obs {
        if self.consumers.is_empty() {
            return Obs::Skipped;
        }
        let n = self.consumers.len();
        let consumer = &mut self.consumers[usize::from(c) % n];
        if consumer.held.is_empty() {
            return Obs::Skipped;
        }
        let i = usize::from(held) % consumer.held.len();
        let result = match how {
            None => consumer.held.remove(i).ack().await,
            Some(Err(delay)) => {
                let options = NackOptions {
                    delay,
                    ..NackOptions::new()
                };
                consumer.held.remove(i).nack(options).await
            }
            Some(Ok(by)) => consumer.held[i].extend(by).await.map(|_| ()),
        };
        Obs::Settled(kind(&result))
    }
}

/// The `GroupOptions` a subscription spec stands for.
pub fn group_options(spec: SubSpec) -> GroupOptions {
    let order = match spec.order {
        OrderChoice::Ordered => Order::Ordered,
        OrderChoice::PerKey | OrderChoice::PerKeyCapped(_) => Order::PerKey,
        OrderChoice::Shared(n) => Order::Shared {
            max_in_flight: u32::from(n),
        },
    };
    let mut options = GroupOptions::new();
    if let OrderChoice::PerKeyCapped(n) = spec.order {
        options = options.max_in_flight(u32::from(n));
    }
    let options = options
        .order(order)
        .max_attempts(spec.attempts())
        .lease(Duration::from_millis(u64::from(spec.lease_ms)))
        .prefetch(u32::from(spec.prefetch))
        .start(start(spec.start))
        .backoff(spec.backoff.backoff());
    match spec.rate_limit {
        Some((max, period_ms)) => {
            options.rate_limit(u32::from(max), Duration::from_millis(u64::from(period_ms)))
        }
        None => options,
    }
}

/// The position a [`StartChoice`] names.
fn start(choice: StartChoice) -> Start {
    match choice {
        StartChoice::Beginning => Start::Beginning,
        StartChoice::End => Start::End,
        StartChoice::AfterSeq(n) => Start::AfterSeq(u64::from(n)),
    }
}
