//! litebus in the browser: a small JavaScript API over the real [`Bus`],
//! driven by `www/index.html`.
//!
//! One topic, `orders`, and two groups: `billing` with two competing
//! consumers and `shipping` with one. Leases last 5 s and a message goes to
//! `orders.dlq` after 3 attempts. Time is a [`ManualClock`] the page moves
//! forward, so a lease running out is one click.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use js_sys::{Array, Object, Reflect};
use litebus::{
    Bus, BusOptions, Delivery, GroupOptions, Live, ManualClock, Message, NackOptions, Order,
    Subscription, Timestamp,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// The demo's topic.
const TOPIC: &str = "orders";
/// Where its dead letters go.
const DLQ: &str = "orders.dlq";
/// The consumers: (group, name).
const CONSUMERS: [(&str, &str); 3] = [("billing", "A"), ("billing", "B"), ("shipping", "C")];

fn group_options() -> GroupOptions {
    GroupOptions::new()
        .order(Order::Shared { max_in_flight: 16 })
        .lease(Duration::from_secs(5))
        .max_attempts(3)
        .prefetch(1)
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn set(target: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a plain property on a fresh object cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(key), &value.into());
}

/// Opens a bus on the named storage.
async fn open_bus(storage: &str, clock: ManualClock) -> Result<Bus, JsValue> {
    let options = BusOptions::new().clock(clock);
    match storage {
        "memory" => Bus::open(litebus::MemoryDriver::new(), options).map_err(js_err),
        #[cfg(feature = "turso")]
        "turso" => Bus::open(
            litebus_turso::TursoDriver::memory().await.map_err(js_err)?,
            options,
        )
        .map_err(js_err),
        other => Err(js_err(format!(
            "storage {other:?} is not in this build (memory{})",
            if cfg!(feature = "turso") {
                ", turso"
            } else {
                ""
            }
        ))),
    }
}

struct Inner {
    storage: String,
    bus: Bus,
    clock: ManualClock,
    consumers: Vec<Subscription>,
    /// What each consumer holds, by seq.
    held: RefCell<Vec<BTreeMap<u64, Delivery>>>,
    dead: Subscription,
    dead_seen: RefCell<Vec<String>>,
    live: RefCell<litebus::Listener>,
}

/// The demo's bus, its consumers and its clock.
#[wasm_bindgen]
pub struct Demo {
    inner: Rc<Inner>,
}

/// What a delivery looks like to the page.
fn delivery_js(consumer: usize, d: &Delivery) -> JsValue {
    let o = Object::new();
    set(&o, "consumer", CONSUMERS[consumer].1);
    set(&o, "group", CONSUMERS[consumer].0);
    set(&o, "seq", d.seq() as f64);
    set(&o, "attempt", d.attempt());
    set(
        &o,
        "payload",
        String::from_utf8_lossy(d.message().payload()).into_owned(),
    );
    o.into()
}

#[wasm_bindgen]
impl Demo {
    /// A bus on `storage` (`"memory"`, or `"turso"` in the turso build).
    pub async fn open(storage: String) -> Result<Demo, JsValue> {
        let clock = ManualClock::new(Timestamp::from_millis(js_sys::Date::now() as u64));
        let bus = open_bus(&storage, clock.clone()).await?;
        let mut consumers = Vec::new();
        for (group, _) in CONSUMERS {
            consumers.push(
                bus.subscribe(TOPIC, group, group_options())
                    .await
                    .map_err(js_err)?,
            );
        }
        let dead = bus
            .subscribe(DLQ, "viewer", GroupOptions::new())
            .await
            .map_err(js_err)?;
        let live = bus.listen(TOPIC).map_err(js_err)?;
        Ok(Demo {
            inner: Rc::new(Inner {
                storage,
                bus,
                clock,
                held: RefCell::new(CONSUMERS.iter().map(|_| BTreeMap::new()).collect()),
                consumers,
                dead,
                dead_seen: RefCell::new(Vec::new()),
                live: RefCell::new(live),
            }),
        })
    }

    /// The storage this bus runs on.
    #[wasm_bindgen(getter)]
    pub fn storage(&self) -> String {
        self.inner.storage.clone()
    }

    /// The consumers, as `group/name`.
    pub fn consumers() -> Array {
        CONSUMERS
            .iter()
            .map(|(g, n)| JsValue::from_str(&format!("{g}/{n}")))
            .collect()
    }

    /// Publishes `text` to `orders`; resolves to its seq.
    pub fn publish(&self, text: String) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let outcome = inner
                .bus
                .publish(TOPIC, Message::new(text))
                .await
                .map_err(js_err)?;
            Ok(JsValue::from_f64(outcome.seq() as f64))
        })
    }

    /// Consumer `consumer` takes the next message it may have; resolves to
    /// `{consumer, group, seq, attempt, payload}` or `null`.
    pub fn receive(&self, consumer: usize) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let sub = inner
                .consumers
                .get(consumer)
                .ok_or_else(|| js_err(format!("no consumer {consumer}")))?;
            match sub.try_recv().await.map_err(js_err)? {
                Some(d) => {
                    let shown = delivery_js(consumer, &d);
                    inner.held.borrow_mut()[consumer].insert(d.seq(), d);
                    Ok(shown)
                }
                None => Ok(JsValue::NULL),
            }
        })
    }

    /// Consumer `consumer` acks (`ok`) or nacks the message `seq` it holds.
    pub fn settle(&self, consumer: usize, seq: f64, ok: bool) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let d = inner
                .held
                .borrow_mut()
                .get_mut(consumer)
                .and_then(|held| held.remove(&(seq as u64)))
                .ok_or_else(|| js_err(format!("consumer {consumer} holds no seq {seq}")))?;
            if ok {
                d.ack().await.map_err(js_err)?;
            } else {
                d.nack(NackOptions::new().with_reason("nacked on the page"))
                    .await
                    .map_err(js_err)?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// What each consumer holds: an array per consumer of
    /// `{seq, attempt, payload, expired}`.
    pub fn held(&self) -> Array {
        let now = self.inner.clock.now();
        self.inner
            .held
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, held)| {
                held.values()
                    .map(|d| {
                        let o = delivery_js(i, d);
                        set(&Object::from(o.clone()), "expired", d.lease_until() <= now);
                        o
                    })
                    .collect::<Array>()
            })
            .collect()
    }

    /// Moves the bus's clock forward by `seconds`.
    pub fn advance(&self, seconds: f64) {
        self.inner
            .clock
            .advance(Duration::from_secs_f64(seconds.max(0.0)));
    }

    /// Dead letters seen so far: `orders.dlq` payloads with their reasons.
    pub fn dead_letters(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            while let Some(d) = inner.dead.try_recv().await.map_err(js_err)? {
                let m = d.message();
                let reason = m
                    .metadata()
                    .get(litebus::driver::dead_letter_keys::ERROR)
                    .cloned()
                    .unwrap_or_else(|| "lease ran out".into());
                inner.dead_seen.borrow_mut().push(format!(
                    "{} (seq {}, {})",
                    String::from_utf8_lossy(m.payload()),
                    m.metadata()
                        .get(litebus::driver::dead_letter_keys::SEQ)
                        .map_or("?", String::as_str),
                    reason
                ));
                d.ack().await.map_err(js_err)?;
            }
            Ok(inner
                .dead_seen
                .borrow()
                .iter()
                .map(|s| JsValue::from_str(s))
                .collect::<Array>()
                .into())
        })
    }

    /// What the live listener heard since the last call.
    pub fn live(&self) -> Array {
        let out = Array::new();
        let mut live = self.inner.live.borrow_mut();
        while let Some(item) = live.try_recv() {
            out.push(&JsValue::from_str(&match item {
                Ok(Live::Message { seq, message }) => {
                    format!("seq {seq}: {}", String::from_utf8_lossy(message.payload()))
                }
                Ok(Live::Lagged(n)) => format!("missed {n}"),
                Err(e) => format!("error: {e}"),
            }));
        }
        out
    }

    /// Per group: `{group, ready, in_flight, dead_lettered}`.
    pub fn stats(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let stats = inner.bus.stats(TOPIC).await.map_err(js_err)?;
            Ok(stats
                .groups
                .iter()
                .map(|g| {
                    let o = Object::new();
                    set(&o, "group", g.group.as_str());
                    set(&o, "ready", g.ready as f64);
                    set(&o, "in_flight", g.in_flight as f64);
                    set(&o, "dead_lettered", g.dead_lettered as f64);
                    JsValue::from(o)
                })
                .collect::<Array>()
                .into())
        })
    }
}

/// Publishes `n` messages in batches of 100 and consumes them through one
/// group on a fresh bus of `storage`; resolves to `{n, publish, consume}`
/// in msgs/s.
#[wasm_bindgen]
pub fn bench(storage: String, n: u32) -> js_sys::Promise {
    future_to_promise(async move {
        let clock = ManualClock::new(Timestamp::from_millis(js_sys::Date::now() as u64));
        let bus = open_bus(&storage, clock).await?;
        let n = n.max(100) / 100 * 100;
        let sub = bus
            .subscribe(
                "bench",
                "g",
                GroupOptions::new()
                    .order(Order::Shared {
                        max_in_flight: 1000,
                    })
                    .prefetch(100),
            )
            .await
            .map_err(js_err)?;
        let start = js_sys::Date::now();
        for _ in 0..n / 100 {
            bus.publish_batch("bench", (0..100).map(|_| Message::new([7u8; 100])))
                .await
                .map_err(js_err)?;
        }
        let published = js_sys::Date::now();
        let mut got = 0;
        while got < n {
            let d = sub.recv().await.map_err(js_err)?;
            d.ack().await.map_err(js_err)?;
            got += 1;
        }
        let consumed = js_sys::Date::now();
        bus.close().await.map_err(js_err)?;
        let rate = |ms: f64| f64::from(n) / (ms.max(1.0) / 1000.0);
        let o = Object::new();
        set(&o, "n", n);
        set(&o, "publish", rate(published - start).round());
        set(&o, "consume", rate(consumed - published).round());
        Ok(o.into())
    })
}
