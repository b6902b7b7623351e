//! Results: one record per (workload, system), printed as tables with
//! ratios, written as CSV and JSON, and drawn as an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

/// What a system is, for the ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Litebus,
    Peer,
    Baseline,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Litebus => "litebus",
            Kind::Peer => "peer",
            Kind::Baseline => "baseline",
        }
    }
}

/// A system measured, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct System {
    pub name: &'static str,
    pub kind: Kind,
    /// The baseline a litebus figure is divided by.
    pub baseline: Option<&'static str>,
}

pub const SYSTEMS: &[System] = &[
    litebus("memory", "async-channel"),
    litebus("sqlx file", "raw sqlx file"),
    litebus("sqlx mem", "raw sqlx mem"),
    litebus("turso file", "raw turso file"),
    litebus("turso mem", "raw turso mem"),
    litebus("postgres", "raw postgres"),
    other("honker", Kind::Peer),
    other("apalis-sqlite", Kind::Peer),
    other("async-channel", Kind::Baseline),
    other("raw sqlx file", Kind::Baseline),
    other("raw sqlx mem", Kind::Baseline),
    other("raw turso file", Kind::Baseline),
    other("raw turso mem", Kind::Baseline),
    other("raw postgres", Kind::Baseline),
    other("raw rusqlite", Kind::Baseline),
];

const fn litebus(name: &'static str, baseline: &'static str) -> System {
    System {
        name,
        kind: Kind::Litebus,
        baseline: Some(baseline),
    }
}

const fn other(name: &'static str, kind: Kind) -> System {
    System {
        name,
        kind,
        baseline: None,
    }
}

pub fn system(name: &str) -> &'static System {
    SYSTEMS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("unknown system {name}"))
}

/// A workload, in table order; `key` is what the honker process prints.
pub struct Workload {
    pub key: String,
    pub title: String,
    /// µs (lower is better) rather than msgs/s.
    pub micros: bool,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub workload: String,
    pub system: &'static System,
    pub value: f64,
    pub peak_rss_kib: u64,
}

#[derive(Default)]
pub struct Results {
    pub records: Vec<Record>,
}

impl Results {
    pub fn add(&mut self, workload: &str, system: &str, value: f64, peak_rss_kib: u64) {
        self.records.push(Record {
            workload: workload.to_owned(),
            system: self::system(system),
            value,
            peak_rss_kib,
        });
    }

    pub fn get(&self, workload: &str, system: &str) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.workload == workload && r.system.name == system)
    }

    /// Litebus figure ÷ its baseline on the same workload (inverted for µs,
    /// so above 1 is always better).
    pub fn vs_baseline(&self, w: &Workload, r: &Record) -> Option<f64> {
        let base = self.get(&w.key, r.system.baseline?)?;
        Some(better_ratio(w, r.value, base.value))
    }

    /// Litebus figure ÷ the best peer's on the same workload (above 1: litebus
    /// is ahead).
    pub fn vs_best_peer(&self, w: &Workload, r: &Record) -> Option<f64> {
        let best = self
            .records
            .iter()
            .filter(|p| p.workload == w.key && p.system.kind == Kind::Peer && p.value > 0.0)
            .map(|p| p.value)
            .reduce(|a, b| if w.micros { a.min(b) } else { a.max(b) })?;
        Some(better_ratio(w, r.value, best))
    }

    /// The tables: figures, ratios, peak RSS; markdown-shaped.
    pub fn tables(&self, workloads: &[Workload]) -> String {
        let present: Vec<&System> = SYSTEMS
            .iter()
            .filter(|s| self.records.iter().any(|r| r.system == *s))
            .collect();
        let mut out = String::new();
        let head = |out: &mut String, first: &str, cols: &[String]| {
            let _ = write!(out, "| {first:<44} |");
            for c in cols {
                let _ = write!(out, " {c:>14} |");
            }
            out.push('\n');
            let _ = write!(out, "|{}|", "-".repeat(46));
            for _ in cols {
                let _ = write!(out, "{}:|", "-".repeat(15));
            }
            out.push('\n');
        };
        let names: Vec<String> = present.iter().map(|s| s.name.to_owned()).collect();
        out.push_str("msgs/s (µs where marked); higher msgs/s and lower µs are better\n\n");
        head(&mut out, "workload", &names);
        for w in workloads {
            let _ = write!(out, "| {:<44} |", w.title);
            for s in &present {
                let cell = self
                    .get(&w.key, s.name)
                    .map_or_else(|| "–".to_owned(), |r| thousands(r.value));
                let _ = write!(out, " {cell:>14} |");
            }
            out.push('\n');
        }
        let litebus: Vec<&System> = present
            .iter()
            .copied()
            .filter(|s| s.kind == Kind::Litebus)
            .collect();
        let ratio_cols: Vec<String> = litebus
            .iter()
            .flat_map(|s| [format!("{} ÷base", s.name), format!("{} ÷peer", s.name)])
            .collect();
        out.push_str(
            "\nratios (above 1: litebus is better): ÷base = to its baseline in the same run \
             (async-channel for memory, raw SQL through the same engine for the SQL drivers); \
             ÷peer = to the best peer\n\n",
        );
        head(&mut out, "workload", &ratio_cols);
        for w in workloads {
            let _ = write!(out, "| {:<44} |", w.title);
            for s in &litebus {
                let record = self.get(&w.key, s.name);
                for ratio in [
                    record.and_then(|r| self.vs_baseline(w, r)),
                    record.and_then(|r| self.vs_best_peer(w, r)),
                ] {
                    let cell = ratio.map_or_else(|| "–".to_owned(), |x| format!("{x:.2}"));
                    let _ = write!(out, " {cell:>14} |");
                }
            }
            out.push('\n');
        }
        out.push_str("\npeak RSS of the process during the workload, MiB\n\n");
        head(&mut out, "workload", &names);
        for w in workloads {
            let _ = write!(out, "| {:<44} |", w.title);
            for s in &present {
                let cell = self.get(&w.key, s.name).map_or_else(
                    || "–".to_owned(),
                    |r| format!("{:.1}", r.peak_rss_kib as f64 / 1024.0),
                );
                let _ = write!(out, " {cell:>14} |");
            }
            out.push('\n');
        }
        out
    }

    pub fn csv(&self, workloads: &[Workload]) -> String {
        let mut out = String::from(
            "workload,title,unit,system,kind,value,vs_baseline,vs_best_peer,peak_rss_kib\n",
        );
        for (w, r) in self.ordered(workloads) {
            let _ = writeln!(
                out,
                "{},\"{}\",{},{},{},{:.3},{},{},{}",
                w.key,
                w.title,
                unit(w),
                r.system.name,
                r.system.kind.name(),
                r.value,
                opt(self.vs_baseline(w, r)),
                opt(self.vs_best_peer(w, r)),
                r.peak_rss_kib
            );
        }
        out
    }

    pub fn json(&self, workloads: &[Workload], meta: &str) -> String {
        let mut out = format!("{{\n  {meta},\n  \"results\": [\n");
        let rows: Vec<String> = self
            .ordered(workloads)
            .map(|(w, r)| {
                format!(
                    "    {{\"workload\": \"{}\", \"title\": \"{}\", \"unit\": \"{}\", \"system\": \"{}\", \"kind\": \"{}\", \"value\": {:.3}, \"vs_baseline\": {}, \"vs_best_peer\": {}, \"peak_rss_kib\": {}}}",
                    w.key,
                    w.title,
                    unit(w),
                    r.system.name,
                    r.system.kind.name(),
                    r.value,
                    json_opt(self.vs_baseline(w, r)),
                    json_opt(self.vs_best_peer(w, r)),
                    r.peak_rss_kib
                )
            })
            .collect();
        out.push_str(&rows.join(",\n"));
        out.push_str("\n  ]\n}\n");
        out
    }

    fn ordered<'a>(
        &'a self,
        workloads: &'a [Workload],
    ) -> impl Iterator<Item = (&'a Workload, &'a Record)> {
        workloads.iter().flat_map(move |w| {
            SYSTEMS
                .iter()
                .filter_map(move |s| self.get(&w.key, s.name).map(|r| (w, r)))
        })
    }

    /// Throughput against batch size (log-log), one line per system that
    /// has all of `keys`.
    pub fn svg(&self, keys: &[(&str, f64)], title: &str) -> String {
        let series: Vec<(&System, Vec<(f64, f64)>)> = SYSTEMS
            .iter()
            .filter_map(|s| {
                let points: Option<Vec<(f64, f64)>> = keys
                    .iter()
                    .map(|(k, x)| self.get(k, s.name).map(|r| (*x, r.value)))
                    .collect();
                points.map(|p| (s, p))
            })
            .filter(|(_, p)| p.iter().all(|(_, y)| *y > 0.0))
            .collect();
        plot(title, &series, keys)
    }
}

fn better_ratio(w: &Workload, value: f64, other: f64) -> f64 {
    if w.micros {
        other / value
    } else {
        value / other
    }
}

fn unit(w: &Workload) -> &'static str {
    if w.micros { "us" } else { "msgs/s" }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(String::new, |x| format!("{x:.3}"))
}

fn json_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "null".to_owned(), |x| format!("{x:.3}"))
}

/// 1234567.8 → "1,234,568"; below 100, one decimal.
pub fn thousands(x: f64) -> String {
    if x < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{x:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const COLOURS: [&str; 13] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39",
];

fn plot(title: &str, series: &[(&System, Vec<(f64, f64)>)], keys: &[(&str, f64)]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 80.0, 200.0, 40.0, 50.0);
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let y_lo = ys.clone().fold(f64::INFINITY, f64::min).log10().floor();
    let y_hi = ys.fold(0.0_f64, f64::max).log10().ceil().max(y_lo + 1.0);
    let x_lo = keys.first().map_or(1.0, |k| k.1).log10();
    let x_hi = keys.last().map_or(10.0, |k| k.1).log10().max(x_lo + 1.0);
    let px = |x: f64| left + (x.log10() - x_lo) / (x_hi - x_lo) * (w - left - right);
    let py = |y: f64| top + (y_hi - y.log10()) / (y_hi - y_lo) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{title}</text>\n",
        f64::midpoint(w - right, left)
    );
    for e in (y_lo as i32)..=(y_hi as i32) {
        let y = py(10f64.powi(e));
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            thousands(10f64.powi(e))
        );
    }
    for (label, x) in keys {
        let x = px(*x);
        let name = label
            .rsplit('.')
            .next()
            .unwrap_or(label)
            .trim_start_matches("batch");
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{name}</text>",
            h - bottom,
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">messages per publish call (batch size)</text>\
         <text x=\"18\" y=\"{}\" transform=\"rotate(-90 18 {})\" text-anchor=\"middle\">msgs/s (log)</text>",
        f64::midpoint(w - right, left),
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    for (i, (s, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = match s.kind {
            Kind::Litebus => "",
            Kind::Peer => " stroke-dasharray=\"6 3\"",
            Kind::Baseline => " stroke-dasharray=\"2 3\"",
        };
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y) in points {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                px(*x),
                py(*y)
            );
        }
        let ly = top + 10.0 + i as f64 * 18.0;
        let lx = w - right + 16.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{}{}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            if s.kind == Kind::Litebus {
                "litebus "
            } else {
                ""
            },
            s.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The process's peak RSS, KiB (0 where the OS does not say).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), contents).unwrap();
}
