//! The operator's dashboard.
//!
//! Owns the page a node serves at `/` (its HTML, styles and script are written in
//! `assets/` and served exactly as they are: no build step, no third-party files,
//! charts drawn as SVG by the script) and the bounded [`History`] of usage per limit
//! behind its charts.
//!
//! It never reads the kernel's state, never does I/O and never holds a token: the
//! node samples the limits into the history and serves the assets; the page asks the
//! API for everything else with the token the operator gave it.

mod assets;
mod history;

pub use assets::{asset, Asset, PAGE_BYTES, PAGE_BYTES_MAX};
pub use history::{History, Point, HISTORY_POINTS_MAX, HISTORY_SERIES_MAX, SAMPLE_INTERVAL_MS};
