//! The results table: each figure beside the brief's target.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// No target, or a reference figure.
    Info,
}

impl Verdict {
    pub fn check(ok: bool) -> Verdict {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Verdict::Pass => "ok",
            Verdict::Fail => "MISS",
            Verdict::Info => "",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub bench: String,
    pub metric: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

#[derive(Default, Serialize)]
pub struct Report {
    /// Appended to every row's benchmark name: the engine of this pass.
    #[serde(skip)]
    pub pass: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    /// Plain numbers for other programs (`--json`): scripts/bench-peers
    /// reads the peer benchmark's from here. Units are in the names.
    pub figures: BTreeMap<String, f64>,
}

impl Report {
    /// Adds a row and prints it at once, so a long run shows progress.
    pub fn add(
        &mut self,
        bench: &str,
        metric: &str,
        value: String,
        target: &str,
        verdict: Verdict,
    ) {
        let row = Row {
            bench: format!("{bench}{}", self.pass),
            metric: metric.into(),
            value,
            target: target.into(),
            verdict,
        };
        eprintln!(
            "  {:<44} {:>22}   {} {}",
            row.metric,
            row.value,
            row.target,
            row.verdict.mark()
        );
        self.rows.push(row);
    }

    pub fn info(&mut self, bench: &str, metric: &str, value: String) {
        self.add(bench, metric, value, "", Verdict::Info);
    }

    pub fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.into(), value);
    }

    pub fn note(&mut self, text: String) {
        eprintln!("  note: {text}");
        self.notes.push(text);
    }

    pub fn error(&mut self, bench: &str, error: &anyhow::Error) {
        let text = format!("{bench}: {error:#}");
        eprintln!("  ERROR {text}");
        self.errors.push(text);
    }

    pub fn print(&self) {
        let widths = [
            self.rows
                .iter()
                .map(|r| r.bench.len())
                .max()
                .unwrap_or(0)
                .max(9),
            self.rows
                .iter()
                .map(|r| r.metric.len())
                .max()
                .unwrap_or(0)
                .max(6),
            self.rows
                .iter()
                .map(|r| r.value.len())
                .max()
                .unwrap_or(0)
                .max(8),
            self.rows
                .iter()
                .map(|r| r.target.len())
                .max()
                .unwrap_or(0)
                .max(6),
        ];
        let line = |a: &str, b: &str, c: &str, d: &str, e: &str| {
            println!(
                "{a:<w0$}  {b:<w1$}  {c:>w2$}  {d:<w3$}  {e}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        };
        println!();
        line("benchmark", "metric", "measured", "target", "");
        println!("{}", "-".repeat(widths.iter().sum::<usize>() + 14));
        let mut last = "";
        for row in &self.rows {
            let bench = if row.bench == last {
                ""
            } else {
                row.bench.as_str()
            };
            last = &row.bench;
            line(
                bench,
                &row.metric,
                &row.value,
                &row.target,
                row.verdict.mark(),
            );
        }
        if !self.notes.is_empty() {
            println!("\nnotes:");
            for note in &self.notes {
                println!("  - {note}");
            }
        }
        if !self.errors.is_empty() {
            println!("\nerrors:");
            for error in &self.errors {
                println!("  - {error}");
            }
        }
    }
}

pub fn ms(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1} s", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else {
        format!("{value:.1} ms")
    }
}

pub fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}
