//! Spans and events (feature `tracing`) and metrics (feature `metrics`).
//! Without the features every macro here expands to nothing: its
//! arguments are not even evaluated, so the hot path pays nothing.
//!
//! Spans are at `DEBUG` level: `litebus.publish` (topic, messages, seq of
//! the first new one, duplicates), `litebus.claim` (topic, group,
//! consumer, deliveries, seq and attempt of the first), `litebus.settle`
//! (topic, group, seq, attempt, settlement) and `litebus.release` (topic,
//! group, consumer, `dead_lettered`). Events: a redelivery (`INFO`, attempt
//! above 1), a lost lease (`WARN`: it expired, or the message was settled
//! elsewhere), a dead letter (`WARN`, with its group, seq, attempts and last
//! error), a retry after a retryable (busy) error (`WARN`).

/// What [`span!`] gives without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span;

/// `DEBUG` span `$name` with fields, as `tracing::debug_span!` takes them.
macro_rules! span {
    ($name:literal $(, $($fields:tt)*)?) => {{
        #[cfg(feature = "tracing")]
        let span = tracing::debug_span!($name $(, $($fields)*)?);
        #[cfg(not(feature = "tracing"))]
        let span = $crate::telemetry::Span;
        span
    }};
}

/// Records `$value` as field `$field` of `$span`.
macro_rules! record {
    ($span:expr, $field:literal, $value:expr) => {{
        #[cfg(feature = "tracing")]
        $span.record($field, $value);
        #[cfg(not(feature = "tracing"))]
        let _ = &$span;
    }};
}

/// `$future`, run inside `$span`.
macro_rules! instrument {
    ($span:expr, $future:expr) => {{
        #[cfg(feature = "tracing")]
        let future = tracing::Instrument::instrument($future, $span.clone());
        #[cfg(not(feature = "tracing"))]
        let future = {
            let _ = &$span;
            $future
        };
        future
    }};
}

/// An event at `$level` (`info`, `warn`, ...), as `tracing::event!` takes
/// its fields and message.
macro_rules! event {
    ($level:ident, $($rest:tt)*) => {
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "litebus", $($rest)*);
    };
}

/// Adds `$value` to counter `$name` with labels `key => value` (values
/// borrowed: they are copied only when the feature is on).
macro_rules! count {
    ($name:literal, $value:expr $(, $key:literal => $label:expr)*) => {
        #[cfg(feature = "metrics")]
        metrics::counter!($name $(, $key => ::std::string::String::from($label))*)
            .increment(u64::try_from($value).unwrap_or(u64::MAX));
    };
}

/// Sets gauge `$name` with labels to `$value` (an `f64`).
macro_rules! gauge {
    ($name:literal, $value:expr $(, $key:literal => $label:expr)*) => {
        #[cfg(feature = "metrics")]
        metrics::gauge!($name $(, $key => ::std::string::String::from($label))*).set($value);
    };
}

#[cfg(all(feature = "audit", feature = "tracing"))]
pub(crate) use event;
pub(crate) use {count, gauge, instrument, record, span};

/// Reports dead letters: an event and a count per group they came from.
pub(crate) fn dead_lettered(dead: &[crate::driver::DeadLettered]) {
    let _ = dead;
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    for d in dead {
        use crate::driver::dead_letter_keys as keys;
        let meta = d.message.metadata();
        let field = |k: &str| meta.get(k).map_or("", String::as_str);
        event!(
            warn,
            topic = field(keys::TOPIC),
            group = field(keys::GROUP),
            seq = field(keys::SEQ),
            attempts = field(keys::ATTEMPTS),
            error = field(keys::ERROR),
            dead_letter_topic = %d.topic,
            dead_letter_seq = d.seq,
            "litebus: dead-lettered"
        );
        count!("litebus_dead_lettered_total", 1, "topic" => field(keys::TOPIC), "group" => field(keys::GROUP));
    }
}

/// Reports a retry after a retryable error, `pause` from now.
#[cfg_attr(
    not(feature = "tracing"),
    expect(unused_variables, reason = "reported only with the tracing feature")
)]
pub(crate) fn retrying(what: &str, error: &crate::Error, pause: std::time::Duration) {
    event!(
        warn,
        what,
        %error,
        pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
        "litebus: retrying after a retryable error"
    );
}

/// Reports what a claim (or a hand-off) delivered: a count, and an event
/// per redelivery.
pub(crate) fn claimed(topic: &str, group: &str, deliveries: &[crate::driver::Claimed]) {
    let _ = (topic, group, deliveries);
    count!("litebus_delivered_total", deliveries.len(), "topic" => topic, "group" => group);
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    for c in deliveries.iter().filter(|c| c.attempt > 1) {
        event!(
            info,
            topic,
            group,
            seq = c.seq,
            attempt = c.attempt,
            "litebus: redelivery"
        );
        count!("litebus_redelivered_total", 1, "topic" => topic, "group" => group);
        let _ = c;
    }
}

/// Reports how a settle ended: `Ok((acked, nacked))` or its error.
pub(crate) fn settled(
    (topic, group): (&str, &str),
    (seq, attempt): (u64, u32),
    result: Result<(bool, bool), &crate::Error>,
) {
    let _ = (topic, group, seq, attempt, &result);
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    match result {
        Err(crate::Error::LeaseLost) => {
            event!(
                warn,
                topic,
                group,
                seq,
                attempt,
                "litebus: lease lost (it expired, or the message was settled elsewhere)"
            );
            count!("litebus_lease_lost_total", 1, "topic" => topic, "group" => group);
        }
        Ok((true, _)) => {
            count!("litebus_acked_total", 1, "topic" => topic, "group" => group);
        }
        Ok((_, true)) => {
            count!("litebus_nacked_total", 1, "topic" => topic, "group" => group);
        }
        _ => {}
    }
}
