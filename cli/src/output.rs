//! Exit codes, aligned tables, and the way values print.

use std::fmt::Write as _;
use std::time::Duration;

use litebus::{Message, Order, Retention};
use serde_json::{Value, json};

/// The operation failed.
pub const FAILED: u8 = 1;
/// Bad usage or input (clap's own code for bad arguments).
pub const USAGE: u8 = 2;
/// The store is missing, damaged, not a litebus store, or newer.
pub const STORE: u8 = 3;
/// No such topic or group.
pub const NOT_FOUND: u8 = 4;
/// An audit chain does not verify.
pub const BROKEN: u8 = 5;

/// Why the tool stops, and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<litebus::Error> for Failure {
    fn from(e: litebus::Error) -> Self {
        use litebus::Error as E;
        let code = match &e {
            E::InvalidName { .. } | E::InvalidOptions(_) | E::MessageTooLarge { .. } => USAGE,
            E::UnknownGroup { .. } => NOT_FOUND,
            _ => FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

/// Rows printed under their headers, each column as wide as its widest
/// cell; numbers right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let numeric: Vec<bool> = (0..self.headers.len())
            .map(|i| {
                let number = |c: &String| c.parse::<f64>().is_ok();
                self.rows.iter().any(|r| r.get(i).is_some_and(number))
                    && self
                        .rows
                        .iter()
                        .all(|r| r.get(i).is_some_and(|c| c == "-" || number(c)))
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if numeric[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// A duration as people write it: `1h 5m`, `12.3s`, `250ms`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", d.as_secs_f64()),
        60_000..3_600_000 => two_units(ms, 60_000, "m", 1_000, "s"),
        3_600_000..86_400_000 => two_units(ms, 3_600_000, "h", 60_000, "m"),
        _ => two_units(ms, 86_400_000, "d", 3_600_000, "h"),
    }
}

/// `ms` in whole `big`s and the `small`s left (left out when none).
fn two_units(ms: u128, big: u128, big_unit: &str, small: u128, small_unit: &str) -> String {
    match (ms / big, ms % big / small) {
        (n, 0) => format!("{n}{big_unit}"),
        (n, rest) => format!("{n}{big_unit} {rest}{small_unit}"),
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        Failure::new(
            USAGE,
            format!("'{text}' is not a duration (like 500ms, 30s, 5m, 2h, 7d)"),
        )
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => n / 1_000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3_600.0,
        "d" => n * 86_400.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// A byte count as people read it.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub fn order(order: Order, cap: Option<u32>) -> String {
    match (order, cap) {
        (Order::Ordered, _) => "ordered".into(),
        (Order::PerKey, None) => "per-key".into(),
        (Order::PerKey, Some(cap)) => format!("per-key ({cap} at once)"),
        (Order::Shared { max_in_flight }, _) => format!("shared ({max_in_flight} at once)"),
    }
}

pub fn retention(r: &Retention) -> String {
    let mut rules = Vec::new();
    if r.is_until_consumed() {
        rules.push("until consumed".to_owned());
    }
    if let Some(age) = r.get_max_age() {
        rules.push(format!("max age {}", duration(age)));
    }
    if let Some(n) = r.get_max_messages() {
        rules.push(format!("max {n} messages"));
    }
    if let Some(n) = r.get_max_bytes() {
        rules.push(format!("max {}", bytes(n)));
    }
    if rules.is_empty() {
        rules.push("keep all".to_owned());
    }
    if let Some(window) = r.get_dedupe_window() {
        rules.push(format!("ids remembered {}", duration(window)));
    }
    rules.join(", ")
}

pub fn retention_json(r: &Retention) -> Value {
    json!({
        "until_consumed": r.is_until_consumed(),
        "max_age_ms": r.max_age_millis(),
        "max_messages": r.get_max_messages(),
        "max_bytes": r.get_max_bytes(),
        "dedupe_window_ms": r.dedupe_window_millis(),
    })
}

/// A payload for a table cell: its text (or hex when it is not UTF-8),
/// on one line, cut to `width` characters.
pub fn payload_cell(payload: &[u8], width: usize) -> String {
    let text = match std::str::from_utf8(payload) {
        Ok(text) => text.replace(['\n', '\r', '\t'], " "),
        Err(_) => format!("0x{}", hex(payload)),
    };
    if text.chars().count() <= width {
        text
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A message as JSON: its payload as text, or as hex (`payload_hex`) when
/// it is not UTF-8.
pub fn message_json(seq: u64, m: &Message) -> Value {
    let mut v = json!({
        "seq": seq,
        "id": m.id(),
        "key": m.key(),
        "priority": m.priority(),
        "metadata": m.metadata(),
        "deliver_at_ms": m.deliver_at().map(litebus::Timestamp::as_millis),
    });
    match std::str::from_utf8(m.payload()) {
        Ok(text) => v["payload"] = json!(text),
        Err(_) => v["payload_hex"] = json!(hex(m.payload())),
    }
    v
}

pub fn print_json(v: &Value) {
    println!("{v}");
}

/// Prints `value` under `--json`, else `text`.
pub fn say(json: bool, value: &Value, text: std::fmt::Arguments<'_>) {
    if json {
        print_json(value);
    } else {
        println!("{text}");
    }
}

pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_hours(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        for bad in ["", "s", "5 parsecs", "-1s", "1e400d"] {
            assert_eq!(parse_duration(bad).unwrap_err().code, USAGE, "{bad}");
        }
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_mins(65)), "1h 5m");
        assert_eq!(duration(Duration::from_hours(24)), "1d");
    }

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new(&["NAME", "COUNT"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "200".into()]);
        assert_eq!(t.render(), "NAME    COUNT\na           1\nlonger    200\n");
    }

    #[test]
    fn payloads_fit_a_cell() {
        assert_eq!(payload_cell(b"two\nlines", 20), "two lines");
        assert_eq!(payload_cell(&[0xff, 0x00], 20), "0xff00");
        assert_eq!(payload_cell(b"abcdef", 4), "abc…");
    }
}
