//! Reading Colony's configuration files: one [`Source`] per file, through which every
//! parser reads, so that every error names the file and the line (and its message
//! the key) the same way; and the value syntaxes they share: durations (`"2s"`,
//! `"24h"`), ratios (`"2/3"`, `"75%"`), money as dollars in a string (`"12.50"`,
//! exact to the micro-dollar), amounts or `"unlimited"`.
//!
//! It parses text; it never reads files, never decides a default and never names a
//! subsystem: the node's genesis, bus and gateway parsers do that.

use std::path::{Path, PathBuf};

use colony_kernel::governance::Ratio;
use colony_kernel::{Resource, MICRO_USD_PER_USD};

/// A configuration file that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// A configuration file's text, and where it came from: every parser reads through
/// it, so that every error names the file and the line the same way.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at `span` of the text (the line is counted from it).
    pub fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| line_of(self.text, s.start)),
            message: message.into(),
        }
    }

    /// The text as TOML of type `T`; a syntax or type error names its line.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| self.error(e.span(), e.message()))
    }
}

/// `"2/3"` or `"75%"`, at most one.
pub fn parse_ratio(text: &str) -> Result<Ratio, String> {
    let bad = || format!("`{text}` is not a ratio like \"2/3\" or \"75%\"");
    let (numerator, denominator) = match text.strip_suffix('%') {
        Some(percent) => (percent.trim().parse::<u64>().map_err(|_| bad())?, 100),
        None => {
            let (n, d) = text.split_once('/').ok_or_else(bad)?;
            (
                n.trim().parse::<u64>().map_err(|_| bad())?,
                d.trim().parse::<u64>().map_err(|_| bad())?,
            )
        }
    };
    if denominator == 0 || numerator > denominator {
        return Err(format!("`{text}` must be between 0 and 1"));
    }
    Ok(Ratio::new(numerator, denominator))
}

pub fn parse_resource(key: &str) -> Result<Resource, String> {
    Resource::parse(key).ok_or_else(|| {
        let known: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown resource; known resources are {}", known.join(", "))
    })
}

/// An amount: a non-negative integer, `"unlimited"`, or for money a decimal string
/// of dollars with at most six decimals. `None` means unlimited.
pub fn parse_amount(value: &toml::Value, money: bool) -> Result<Option<u64>, String> {
    match value {
        toml::Value::String(text) if text == "unlimited" => Ok(None),
        toml::Value::String(text) if money => parse_usd(text).map(Some),
        toml::Value::Integer(number) if !money => u64::try_from(*number)
            .map(Some)
            .map_err(|_| format!("{number} is negative")),
        toml::Value::Integer(_) => {
            Err("money is written in dollars as a string, like \"50.00\"".into())
        }
        toml::Value::Float(_) => {
            Err("floats are not accepted; write an integer (or dollars as a string)".into())
        }
        other => Err(format!(
            "expected an integer or \"unlimited\", found {}",
            other.type_str()
        )),
    }
}

/// Parses dollars like `"12.5"` into micro-dollars, exactly.
pub fn parse_usd(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not an amount of dollars like \"12.50\"");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if fraction.len() > 6 {
        return Err(format!(
            "`{text}` has more than six decimals (a micro-dollar is the smallest unit)"
        ));
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let fraction_micro: u64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(MICRO_USD_PER_USD)
        .and_then(|w| w.checked_add(fraction_micro))
        .ok_or_else(bad)
}

pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like \"1m\" or \"24h\": {e}"))?;
    let ms = duration.as_millis() as u64;
    if ms == 0 {
        return Err("a duration must be longer than zero".into());
    }
    Ok(ms)
}

/// A size in bytes: `"20GiB"`, `"500MB"`, `"64KiB"`, `"1024"` (binary units are
/// powers of 1 024, decimal ones of 1 000).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size like \"20GiB\" or \"500MB\"");
    let text_trimmed = text.trim();
    let digits = text_trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text_trimmed.len());
    let (number, unit) = text_trimmed.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = number.checked_mul(factor).ok_or_else(bad)?;
    if bytes == 0 {
        return Err("a size must be larger than zero".into());
    }
    Ok(bytes)
}

pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}
