//! What each command does, through the bus's public API.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use litebus::driver::{GroupStats, TopicStats};
use litebus::{Bus, GroupOptions, Message, Outcome, Retention, Start, Timestamp};
use serde_json::{Value, json};

use crate::output::{
    self, BROKEN, FAILED, Failure, NOT_FOUND, Table, USAGE, message_json, or_dash, payload_cell,
    print_json, say,
};
use crate::{Audit, Cli, Command, Dlq, Group, PubArgs, RetentionArgs, Topic, store};

/// Messages per publish when reading standard input.
const PUBLISH_BATCH: usize = 500;
/// Characters of a payload a table shows.
const PAYLOAD_WIDTH: usize = 60;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let create = matches!(cli.command, Command::Pub(_));
    let bus = store::open(&cli.db, cli.driver, create, &cli.audit).await?;
    let ran = command(&bus, &cli).await;
    let closed = bus.close().await;
    ran?;
    closed.map_err(Failure::from)
}

async fn command(bus: &Bus, cli: &Cli) -> Result<(), Failure> {
    let json = cli.json;
    match &cli.command {
        Command::Stat { topic, watch } => stat(bus, &cli.db, topic.as_deref(), *watch, json).await,
        Command::Tail {
            topic,
            from,
            group,
            count,
        } => match group {
            Some(group) => consume(bus, topic, group, *from, *count, json).await,
            None => tail(bus, topic, *from, *count, json).await,
        },
        Command::Pub(args) => publish(bus, args, json).await,
        Command::Peek { topic, from, limit } => peek(bus, topic, *from, *limit, json).await,
        Command::Dlq(dlq) => dead_letters(bus, dlq, json).await,
        Command::Group(group) => groups(bus, group, json).await,
        Command::Topic(topic) => topics(bus, topic, json).await,
        Command::Retention(args) => retention(bus, args, json).await,
        Command::Audit(Audit::Verify { topic }) => verify(bus, topic, json).await,
    }
}

/// Fails with [`NOT_FOUND`] unless the store has `topic`.
async fn known_topic(bus: &Bus, topic: &str) -> Result<(), Failure> {
    if bus.topics().await?.iter().any(|t| t == topic) {
        Ok(())
    } else {
        Err(Failure::new(NOT_FOUND, format!("no topic '{topic}'")))
    }
}

async fn all_stats(bus: &Bus, topic: Option<&str>) -> Result<Vec<TopicStats>, Failure> {
    let names = match topic {
        Some(topic) => {
            known_topic(bus, topic).await?;
            vec![topic.to_owned()]
        }
        None => bus.topics().await?,
    };
    let mut all = Vec::with_capacity(names.len());
    for name in names {
        all.push(bus.stats(&name).await?);
    }
    Ok(all)
}

fn group_json(g: &GroupStats) -> Value {
    json!({
        "group": g.group,
        "order": output::order(g.settings.order, g.settings.max_in_flight),
        "ready": g.ready,
        "in_flight": g.in_flight,
        "behind": g.ready + g.in_flight,
        "acked_floor": g.acked_floor,
        "dead_lettered": g.dead_lettered,
        "pruned": g.pruned,
        "oldest_age_ms": g.lag.map(|d| d.as_millis()),
        "max_attempts": g.settings.max_attempts,
        "dead_letter": g.settings.dead_letter,
    })
}

async fn stat(
    bus: &Bus,
    path: &Path,
    topic: Option<&str>,
    watch: Option<f64>,
    json: bool,
) -> Result<(), Failure> {
    let every = watch
        .map(|secs| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| Failure::new(USAGE, format!("--watch {secs}: not a period")))
        })
        .transpose()?;
    loop {
        let all = all_stats(bus, topic).await?;
        let size = store::size(path);
        if json {
            print_json(&json!({
                "store": path.display().to_string(),
                "size_bytes": size,
                "topics": all.iter().map(|t| json!({
                    "topic": t.topic,
                    "messages": t.messages,
                    "last_seq": t.last_seq,
                    "retention": output::retention_json(&t.retention),
                    "groups": t.groups.iter().map(group_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }));
        } else {
            if every.is_some() {
                // Clear the terminal and go home, as `watch` does.
                print!("\x1b[2J\x1b[H");
            }
            println!("store {} ({})\n", path.display(), output::bytes(size));
            let mut topics = Table::new(&["TOPIC", "MESSAGES", "LAST SEQ", "RETENTION"]);
            let mut groups = Table::new(&[
                "TOPIC",
                "GROUP",
                "ORDER",
                "READY",
                "IN FLIGHT",
                "BEHIND",
                "DEAD",
                "PRUNED",
                "OLDEST",
            ]);
            for t in &all {
                topics.row(vec![
                    t.topic.clone(),
                    t.messages.to_string(),
                    t.last_seq.to_string(),
                    output::retention(&t.retention),
                ]);
                for g in &t.groups {
                    groups.row(vec![
                        t.topic.clone(),
                        g.group.clone(),
                        output::order(g.settings.order, g.settings.max_in_flight),
                        g.ready.to_string(),
                        g.in_flight.to_string(),
                        (g.ready + g.in_flight).to_string(),
                        g.dead_lettered.to_string(),
                        g.pruned.to_string(),
                        or_dash(g.lag.map(output::duration)),
                    ]);
                }
            }
            print!("{}\n{}", topics.render(), groups.render());
        }
        let Some(every) = every else {
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn print_message(seq: u64, m: &Message, json: bool) {
    if json {
        print_json(&message_json(seq, m));
    } else {
        println!(
            "{seq}\t{}\t{}\t{}",
            m.id(),
            m.key().unwrap_or("-"),
            payload_cell(m.payload(), usize::MAX)
        );
    }
}

/// Prints what `topic` receives from `from` on (by default, after its
/// last message), as any process publishes it.
async fn tail(
    bus: &Bus,
    topic: &str,
    from: Option<u64>,
    count: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let from = match from {
        Some(seq) => seq,
        None => bus.stats(topic).await?.last_seq + 1,
    };
    let mut follow = bus.follow(topic, from)?;
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let record = tokio::select! {
            record = follow.recv() => record?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        print_message(record.seq(), record.message(), json);
        printed += 1;
    }
    Ok(())
}

/// Consumes `topic` as `group`, acking what it prints.
async fn consume(
    bus: &Bus,
    topic: &str,
    group: &str,
    from: Option<u64>,
    count: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let stored = bus
        .stats(topic)
        .await?
        .groups
        .into_iter()
        .find(|g| g.group == group);
    let options = match (stored, from) {
        (Some(_), Some(_)) => {
            return Err(Failure::new(
                USAGE,
                format!("group '{group}' exists: move it with `litebus group seek`, not --from"),
            ));
        }
        (Some(g), None) => GroupOptions::from(&g.settings),
        (None, from) => {
            GroupOptions::new().start(Start::AfterSeq(from.unwrap_or(1).saturating_sub(1)))
        }
    };
    let sub = bus.subscribe(topic, group, options).await?;
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let delivery = tokio::select! {
            delivery = sub.recv() => delivery?,
            _ = tokio::signal::ctrl_c() => break,
        };
        print_message(delivery.seq(), delivery.message(), json);
        delivery.ack().await?;
        printed += 1;
    }
    sub.close().await?;
    Ok(())
}

fn message(args: &PubArgs, payload: Vec<u8>, bus: &Bus) -> Result<Message, Failure> {
    let mut m = Message::new(payload).with_priority(args.priority);
    if let Some(key) = &args.key {
        m = m.with_key(key.as_str());
    }
    for entry in &args.meta {
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| Failure::new(USAGE, format!("--meta '{entry}': expected KEY=VALUE")))?;
        m = m.with_metadata(k, v);
    }
    if let Some(delay) = &args.delay {
        let delay = output::parse_duration(delay)?;
        let now = bus.clock().now().as_millis();
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        m = m.with_deliver_at(Timestamp::from_millis(now.saturating_add(ms)));
    }
    Ok(m)
}

async fn publish(bus: &Bus, args: &PubArgs, json: bool) -> Result<(), Failure> {
    if let Some(payload) = args.payload.as_deref().filter(|p| *p != "-") {
        let mut m = message(args, payload.as_bytes().to_vec(), bus)?;
        if let Some(id) = &args.id {
            m = m.with_id(id.as_str());
        }
        let outcome = bus.publish(&args.topic, m).await?;
        let (seq, duplicate) = (outcome.seq(), outcome.is_duplicate());
        let said = if duplicate {
            "duplicate of seq"
        } else {
            "published seq"
        };
        say(
            json,
            &json!({"seq": seq, "duplicate": duplicate}),
            format_args!("{said} {seq}"),
        );
        return Ok(());
    }
    if args.id.is_some() {
        return Err(Failure::new(
            USAGE,
            "--id names one message: give its payload as an argument",
        ));
    }
    let (mut published, mut duplicates) = (0u64, 0u64);
    let (mut first, mut last) = (None, None);
    let mut lines = std::io::stdin().lock().lines();
    loop {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        for line in lines.by_ref().take(PUBLISH_BATCH) {
            let line =
                line.map_err(|e| Failure::new(FAILED, format!("reading standard input: {e}")))?;
            batch.push(message(args, line.into_bytes(), bus)?);
        }
        if batch.is_empty() {
            break;
        }
        for outcome in bus.publish_batch(&args.topic, batch).await? {
            if let Outcome::Duplicate { .. } = outcome {
                duplicates += 1;
            } else {
                published += 1;
                first.get_or_insert(outcome.seq());
                last = Some(outcome.seq());
            }
        }
    }
    if json {
        print_json(&json!({
            "published": published,
            "duplicates": duplicates,
            "first_seq": first,
            "last_seq": last,
        }));
    } else {
        match (first, last) {
            (Some(first), Some(last)) => {
                println!("published {published} (seqs {first}..={last}), {duplicates} duplicates");
            }
            _ => println!("published 0, {duplicates} duplicates"),
        }
    }
    Ok(())
}

async fn peek(bus: &Bus, topic: &str, from: u64, limit: usize, json: bool) -> Result<(), Failure> {
    known_topic(bus, topic).await?;
    let records = bus.read(topic, from.max(1), limit).await?;
    if json {
        print_json(&Value::Array(
            records
                .iter()
                .map(|r| message_json(r.seq(), r.message()))
                .collect(),
        ));
        return Ok(());
    }
    let mut table = Table::new(&["SEQ", "ID", "KEY", "PRIORITY", "PAYLOAD"]);
    for r in &records {
        let m = r.message();
        table.row(vec![
            r.seq().to_string(),
            m.id().to_owned(),
            or_dash(m.key()),
            m.priority().to_string(),
            payload_cell(m.payload(), PAYLOAD_WIDTH),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// A progress spinner on standard error (drawn only on a terminal).
fn progress(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(what);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {pos} ({per_sec})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

async fn dead_letters(bus: &Bus, dlq: &Dlq, json: bool) -> Result<(), Failure> {
    match dlq {
        Dlq::List {
            topic,
            group,
            from,
            limit,
        } => {
            let dead = bus
                .dead_letters(topic, group, (*from).max(1), *limit)
                .await?;
            if json {
                print_json(&Value::Array(
                    dead.iter()
                        .map(|d| {
                            let mut v = message_json(d.record().seq(), d.record().message());
                            v["dead_letter_id"] = v["id"].take();
                            v["id"] = json!(d.id());
                            v["topic"] = json!(d.topic());
                            v["group"] = json!(d.group());
                            v["original_seq"] = json!(d.seq());
                            v["attempts"] = json!(d.attempts());
                            v["error"] = json!(d.error());
                            v
                        })
                        .collect(),
                ));
                return Ok(());
            }
            let mut table = Table::new(&["SEQ", "ORIGINAL", "ID", "ATTEMPTS", "ERROR", "PAYLOAD"]);
            for d in &dead {
                table.row(vec![
                    d.record().seq().to_string(),
                    d.seq().to_string(),
                    d.id().to_owned(),
                    d.attempts().to_string(),
                    d.error().to_owned(),
                    payload_cell(d.record().message().payload(), PAYLOAD_WIDTH),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        Dlq::Redrive { topic, group, id } => {
            let bar = progress("redriving");
            let n = bus
                .redrive(topic, group, |d| {
                    let chosen = id.is_empty() || id.iter().any(|i| i == d.id());
                    if chosen {
                        bar.inc(1);
                    }
                    chosen
                })
                .await;
            bar.finish_and_clear();
            report(n?, "redriven", "sent back to", group, json);
            Ok(())
        }
        Dlq::Purge {
            topic,
            group,
            id,
            all,
        } => {
            let bar = progress("purging");
            let n = bus
                .purge_dead_letters(topic, group, |d| {
                    let chosen = *all || id.iter().any(|i| i == d.id());
                    if chosen {
                        bar.inc(1);
                    }
                    chosen
                })
                .await;
            bar.finish_and_clear();
            report(n?, "purged", "given up by", group, json);
            Ok(())
        }
    }
}

fn report(n: u64, key: &str, verb: &str, group: &str, json: bool) {
    say(
        json,
        &json!({ key: n }),
        format_args!("{n} dead letters {verb} group '{group}'"),
    );
}

async fn groups(bus: &Bus, group: &Group, json: bool) -> Result<(), Failure> {
    match group {
        Group::List { topic } => {
            let all = all_stats(bus, topic.as_deref()).await?;
            if json {
                print_json(&Value::Array(
                    all.iter()
                        .flat_map(|t| {
                            t.groups.iter().map(|g| {
                                let mut v = group_json(g);
                                v["topic"] = json!(t.topic);
                                v
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            let mut table = Table::new(&[
                "TOPIC",
                "GROUP",
                "ORDER",
                "MAX ATTEMPTS",
                "DEAD LETTERS TO",
                "ACKED UP TO",
            ]);
            for t in &all {
                for g in &t.groups {
                    table.row(vec![
                        t.topic.clone(),
                        g.group.clone(),
                        output::order(g.settings.order, g.settings.max_in_flight),
                        match g.settings.max_attempts {
                            u32::MAX => "unlimited".to_owned(),
                            n => n.to_string(),
                        },
                        g.settings.dead_letter.clone(),
                        g.acked_floor.to_string(),
                    ]);
                }
            }
            print!("{}", table.render());
            Ok(())
        }
        Group::Seek { topic, group, to } => {
            let start = match to.as_str() {
                "beginning" => Start::Beginning,
                "end" => Start::End,
                seq => Start::AfterSeq(seq.parse().map_err(|_| {
                    Failure::new(
                        USAGE,
                        format!("--to '{seq}': expected beginning, end or a seq"),
                    )
                })?),
            };
            bus.seek(topic, group, start).await?;
            say(
                json,
                &json!({"topic": topic, "group": group, "to": to}),
                format_args!("group '{group}' of '{topic}' moved to {to}"),
            );
            Ok(())
        }
        Group::Delete { topic, group } => {
            let deleted = bus.delete_group(topic, group).await?;
            if !deleted {
                return Err(Failure::new(
                    NOT_FOUND,
                    format!("no group '{group}' on topic '{topic}'"),
                ));
            }
            let deleted = json!({"deleted": true});
            say(
                json,
                &deleted,
                format_args!("group '{group}' of '{topic}' deleted"),
            );
            Ok(())
        }
    }
}

async fn topics(bus: &Bus, topic: &Topic, json: bool) -> Result<(), Failure> {
    match topic {
        Topic::List => {
            let all = all_stats(bus, None).await?;
            if json {
                print_json(&Value::Array(
                    all.iter()
                        .map(|t| {
                            json!({
                                "topic": t.topic,
                                "messages": t.messages,
                                "last_seq": t.last_seq,
                                "groups": t.groups.len(),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            let mut table = Table::new(&["TOPIC", "MESSAGES", "LAST SEQ", "GROUPS"]);
            for t in &all {
                table.row(vec![
                    t.topic.clone(),
                    t.messages.to_string(),
                    t.last_seq.to_string(),
                    t.groups.len().to_string(),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        Topic::Delete { topic } => {
            if !bus.delete_topic(topic).await? {
                return Err(Failure::new(NOT_FOUND, format!("no topic '{topic}'")));
            }
            let deleted = json!({"deleted": true});
            say(json, &deleted, format_args!("topic '{topic}' deleted"));
            Ok(())
        }
    }
}

async fn retention(bus: &Bus, args: &RetentionArgs, json: bool) -> Result<(), Failure> {
    known_topic(bus, &args.topic).await?;
    if args.sets() {
        let mut r = Retention::new();
        if args.until_consumed {
            r = r.until_consumed();
        }
        if let Some(age) = &args.max_age {
            r = r.max_age(output::parse_duration(age)?);
        }
        if let Some(n) = args.max_messages {
            r = r.max_messages(n);
        }
        if let Some(n) = args.max_bytes {
            r = r.max_bytes(n);
        }
        if let Some(window) = &args.dedupe_window {
            r = r.dedupe_window(output::parse_duration(window)?);
        }
        bus.set_retention(&args.topic, r).await?;
    }
    let pruned = if args.prune {
        Some(bus.prune(&args.topic).await?)
    } else {
        None
    };
    let now = bus.stats(&args.topic).await?.retention;
    if json {
        print_json(&json!({
            "topic": args.topic,
            "retention": output::retention_json(&now),
            "pruned": pruned,
        }));
    } else {
        println!("{}: {}", args.topic, output::retention(&now));
        if let Some(n) = pruned {
            println!("pruned {n} messages");
        }
    }
    Ok(())
}

/// Walks the audit chain of `topic`; fails with [`BROKEN`] at its first
/// broken row.
async fn verify(bus: &Bus, topic: &str, json: bool) -> Result<(), Failure> {
    let report = bus.verify_audit(topic).await?;
    if json {
        print_json(&json!({
            "chain": report.chain,
            "rows": report.rows,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "last_hash": report.last_hash,
            "intact": report.is_intact(),
            "broken": report.broken.as_ref().map(|b| json!({"seq": b.seq, "reason": b.reason})),
        }));
    } else if report.is_intact() {
        println!(
            "{}: {} rows verified (seqs {}..={}), last hash {}",
            report.chain,
            report.rows,
            report.first_seq,
            report.last_seq,
            report.last_hash.as_deref().unwrap_or("-")
        );
    }
    match report.broken {
        None => Ok(()),
        Some(broken) => Err(Failure::new(
            BROKEN,
            format!(
                "{}: broken at seq {}: {} ({} rows before it verified)",
                report.chain, broken.seq, broken.reason, report.rows
            ),
        )),
    }
}
