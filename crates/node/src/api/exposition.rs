//! One scrape of `/metrics`: the node's figures read into metric families, then
//! written in the OpenMetrics text format by prometheus-client (the Prometheus
//! project's Rust library), which does the format's escaping, suffixes and `# EOF`.
//!
//! The figures are read at the scrape from what the node keeps anyway (its counters,
//! the kernel's state), so nothing here holds metrics between scrapes: a
//! [`Collector`] hands the families read for this scrape to the encoder.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of the answer.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A sample's labels, in order.
pub(crate) type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Only goes up (since the node started); named `..._total`.
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, u64)>,
}

/// A histogram without labels: the sum of what it observed, and how many
/// observations fell at or under each upper bound (above the one before); the last
/// bound is `f64::MAX` (`+Inf`).
#[derive(Debug)]
struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    sum: f64,
    buckets: Vec<(f64, u64)>,
}

/// The families of one scrape, in the order they are written (histograms last).
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    families: Vec<Family>,
    histograms: Vec<HistogramFamily>,
}

impl Scrape {
    /// A family of labelled samples. A counter's `name` ends in `_total`, as its
    /// samples are named.
    pub(crate) fn family(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        samples: Vec<(Labels, u64)>,
    ) {
        debug_assert!(
            matches!(kind, Kind::Gauge) || name.ends_with("_total"),
            "counter {name} is named ..._total"
        );
        let samples = samples
            .into_iter()
            .map(|(labels, value)| {
                let labels = labels
                    .into_iter()
                    .map(|(name, text)| (name, escaped(text)))
                    .collect();
                (labels, value)
            })
            .collect();
        self.families.push(Family {
            name,
            help,
            kind,
            samples,
        });
    }

    /// A family of one sample without labels.
    pub(crate) fn one(&mut self, name: &'static str, kind: Kind, help: &'static str, value: u64) {
        self.family(name, kind, help, vec![(Vec::new(), value)]);
    }

    /// A counter of one sample, read from `counter`.
    pub(crate) fn counter(&mut self, name: &'static str, help: &'static str, counter: &AtomicU64) {
        self.one(name, Kind::Counter, help, counter.load(Ordering::Relaxed));
    }

    /// A histogram of `counts` (one per bound of `bounds`, each of the observations
    /// above the bound before, and one more for those above the last) and the sum
    /// of the observations.
    pub(crate) fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        debug_assert_eq!(
            counts.len(),
            bounds.len() + 1,
            "one count per bound, and +Inf"
        );
        let buckets = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts.iter().copied())
            .collect();
        self.histograms.push(HistogramFamily {
            name,
            help,
            sum,
            buckets,
        });
    }

    /// The OpenMetrics text of the scrape.
    pub(crate) fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String fails only when a value cannot be written, which the
        // collector prevents (gauges are held to i64).
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("the scrape encodes");
        text
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let (name, metric_type) = match family.kind {
                // The encoder adds `_total` to a counter's samples.
                Kind::Counter => (
                    family.name.strip_suffix("_total").unwrap_or(family.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (family.name, MetricType::Gauge),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, metric_type)?;
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    write(family.kind, *value, metric)?;
                    break;
                }
                write(family.kind, *value, metric.encode_family(labels)?)?;
            }
        }
        for histogram in &self.histograms {
            let mut metric = encoder.encode_descriptor(
                histogram.name,
                histogram.help,
                None,
                MetricType::Histogram,
            )?;
            let count = histogram.buckets.iter().map(|(_, count)| count).sum();
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                histogram.sum,
                count,
                &histogram.buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// A label's value as the text format writes it: prometheus-client 0.24 writes
/// label values as given, so a backslash, a double quote or a line feed is escaped
/// here (Colony's labels are its own names, but nothing should break a scrape).
fn escaped(value: String) -> String {
    if !value.contains(['\\', '"', '\n']) {
        return value;
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample's value as its kind is written: OpenMetrics gauges are signed 64-bit,
/// so a gauge past `i64::MAX` is written as `i64::MAX`.
fn write(kind: Kind, value: u64, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(value).encode(encoder),
        Kind::Gauge => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_as_openmetrics_text() {
        let mut scrape = Scrape::default();
        let requests = AtomicU64::new(7);
        scrape.counter("colony_http_requests_total", "Requests.", &requests);
        scrape.family(
            "colony_limit_usage",
            Kind::Gauge,
            "Usage \"of\" each limit.",
            vec![
                (
                    vec![("limit", "ai_accounts".into()), ("unit", "accounts".into())],
                    3,
                ),
                (
                    vec![("limit", "a\"b\\c".into()), ("unit", "x".into())],
                    u64::MAX,
                ),
            ],
        );
        scrape.family("colony_nothing", Kind::Gauge, "No sample.", Vec::new());
        let text = scrape.encode();
        assert!(
            text.contains("# TYPE colony_http_requests counter\n"),
            "{text}"
        );
        assert!(text.contains("\ncolony_http_requests_total 7\n"), "{text}");
        assert!(text.contains("# TYPE colony_limit_usage gauge\n"), "{text}");
        assert!(
            text.contains("\ncolony_limit_usage{limit=\"ai_accounts\",unit=\"accounts\"} 3\n"),
            "{text}"
        );
        // Label values escaped; a gauge past i64 held to it.
        assert!(
            text.contains("{limit=\"a\\\"b\\\\c\",unit=\"x\"} 9223372036854775807\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_histogram_is_written_with_cumulative_buckets() {
        let mut scrape = Scrape::default();
        scrape.histogram(
            "colony_log_sync_seconds",
            "Syncs.",
            &[0.001, 0.01],
            &[3, 0, 2],
            1.5,
        );
        let text = scrape.encode();
        for line in [
            "# TYPE colony_log_sync_seconds histogram\n",
            "\ncolony_log_sync_seconds_sum 1.5\n",
            "\ncolony_log_sync_seconds_count 5\n",
            "\ncolony_log_sync_seconds_bucket{le=\"0.001\"} 3\n",
            "\ncolony_log_sync_seconds_bucket{le=\"0.01\"} 3\n",
            "\ncolony_log_sync_seconds_bucket{le=\"+Inf\"} 5\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
