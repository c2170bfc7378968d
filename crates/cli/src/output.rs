//! Printing for humans (tables, colors that respect NO_COLOR) and for
//! scripts (`--output json`, one JSON document on stdout).

use std::io::IsTerminal;

use clap::ValueEnum;
use serde::Serialize;

use crate::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

pub fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serialises")
    );
}

/// Errors go to stderr; in JSON mode as `{"error": {"code", "message"}}`.
pub fn error(format: OutputFormat, failure: &Failure) {
    match format {
        OutputFormat::Json => eprintln!(
            "{}",
            serde_json::json!({"error": {"exit_code": failure.code, "message": failure.message}})
        ),
        OutputFormat::Text => eprintln!(
            "{}: {}",
            paint("error", Color::Red, stderr_colored()),
            failure.message
        ),
    }
}

#[derive(Clone, Copy)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Dim,
}

pub fn stdout_colored() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

pub fn stderr_colored() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

pub fn paint(text: &str, color: Color, enabled: bool) -> String {
    if !enabled {
        return text.to_string();
    }
    let code = match color {
        Color::Red => "31",
        Color::Green => "32",
        Color::Yellow => "33",
        Color::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

pub fn state_color(state: &str) -> Color {
    match state {
        "FINISHED" | "idle" => Color::Green,
        "FAILED" | "lost" => Color::Red,
        "STOPPED" | "CANCELED" | "DISCARDED" | "gone" | "drained" => Color::Dim,
        _ => Color::Yellow,
    }
}

/// A plain aligned table.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>, color_column: Option<usize>) {
    let colored = stdout_colored();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>, painted: bool| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            let text = match color_column {
                Some(c) if c == i && painted => paint(cell, state_color(cell), colored),
                _ => cell.clone(),
            };
            out.push_str(&text);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect(), false);
    for row in rows {
        line(row, true);
    }
}
