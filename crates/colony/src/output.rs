//! Tables for people; JSON for scripts.

use serde_json::Value;

/// Prints one row per item under headers (see [`table`]).
pub fn rows<I: IntoIterator>(headers: &[&str], items: I, row: impl Fn(I::Item) -> Vec<String>) {
    let rows: Vec<Vec<String>> = items.into_iter().map(row).collect();
    table(headers, &rows);
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON prints")
    );
}

/// A value in its unit, for people: dollars for micro-dollars, `-` for unlimited.
pub fn amount(value: Option<u64>, unit: &str) -> String {
    match value {
        None => "-".to_string(),
        Some(micro) if unit == "micro_usd" => {
            format!("${}.{:02}", micro / 1_000_000, (micro % 1_000_000) / 10_000)
        }
        Some(number) => number.to_string(),
    }
}

/// An optional field, or empty.
pub fn opt(value: &Option<impl std::fmt::Display>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A string field, or empty.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What an import did: `summary` as JSON for scripts, or the table of `rows` and the
/// lines skipped for people.
pub fn import_report(
    as_json: bool,
    summary: &Value,
    headers: &[&str],
    rows: &[Vec<String>],
    skipped: &[String],
) -> anyhow::Result<std::process::ExitCode> {
    if as_json {
        json(summary);
    } else {
        table(headers, rows);
        for line in skipped {
            println!("skipped {line}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
