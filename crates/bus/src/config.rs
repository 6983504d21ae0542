//! The bus's bounds and subject grants: `bus.toml` in the configuration directory
//! (optional, read at every start, like `supervisor.toml`; these are operating
//! bounds and policy, not governed limits).

use std::collections::BTreeMap;
use std::path::Path;

use colony_kernel::Role;
use serde::Deserialize;

use colony_config::{parse_duration_ms, ConfigError, Source};

/// Subject patterns a role may publish to and subscribe to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Bounds of the bus. Every queue, buffer and frame has one.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Largest WebSocket message a client may send (bytes).
    pub frame_bytes_max: usize,
    /// A connection's outbound queue: messages...
    pub outbound_msgs_max: usize,
    /// ...and bytes.
    pub outbound_bytes_max: usize,
    /// Answers (ok, err, pong) waiting for a client before it counts as not reading.
    pub control_frames_max: usize,
    /// Bytes gathered per socket write.
    pub write_batch_bytes: usize,
    pub subscriptions_per_connection_max: usize,
    /// Subscriptions of all of one principal's connections on this node.
    pub subscriptions_per_principal_max: usize,
    /// Open WebSocket connections on this node.
    pub connections_max: usize,
    /// Open WebSocket connections of one principal on this node.
    pub connections_per_principal_max: usize,
    /// Unacknowledged deliveries one stream consumer may have.
    pub ack_pending_max: usize,
    /// Appends waiting for the stream writer before publishers get `backpressure`.
    pub stream_append_queue_max: usize,
    /// Size of a stream log segment file.
    pub stream_segment_bytes: u64,
    /// Defaults for `POST /v1/streams`.
    pub stream_ack_wait_ms: u64,
    pub stream_max_deliver: u32,
    /// How often edge usage (io_ops, data bytes) is charged to the kernel.
    pub edge_flush_ms: u64,
    /// How long a worker's bus session may be gone before the worker is declared
    /// lost (when the connection drops without a graceful `bye`).
    pub worker_grace_ms: u64,
    /// What each role may use beyond its own `agents.<address>.>` subjects.
    pub grants: BTreeMap<Role, Grants>,
}

impl Default for BusConfig {
    fn default() -> Self {
        let grant = |publish: &[&str], subscribe: &[&str]| Grants {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        };
        BusConfig {
            frame_bytes_max: 1 << 20,
            outbound_msgs_max: 8_192,
            outbound_bytes_max: 8 << 20,
            control_frames_max: 1_024,
            write_batch_bytes: 64 << 10,
            subscriptions_per_connection_max: 1_024,
            subscriptions_per_principal_max: 65_536,
            connections_max: 18_000,
            connections_per_principal_max: 1_000,
            ack_pending_max: 1_024,
            stream_append_queue_max: 65_536,
            stream_segment_bytes: 16 << 20,
            stream_ack_wait_ms: 30_000,
            stream_max_deliver: 5,
            edge_flush_ms: 1_000,
            worker_grace_ms: 10_000,
            grants: BTreeMap::from([
                (Role::Admin, grant(&[">"], &[">"])),
                (
                    Role::Member,
                    grant(
                        &["work.>", "public.>"],
                        &[
                            "work.>",
                            "public.>",
                            "colony.events.>",
                            "colony.tasks.>",
                            "colony.grants.>",
                            "colony.alerts.>",
                            "colony.audit.>",
                        ],
                    ),
                ),
                (
                    Role::Observer,
                    grant(
                        &[],
                        &[
                            "public.>",
                            "colony.events.>",
                            "colony.grants.>",
                            "colony.alerts.>",
                            "colony.audit.>",
                        ],
                    ),
                ),
            ]),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BusFile {
    #[serde(default)]
    bus: BusSection,
    #[serde(default)]
    roles: BTreeMap<String, toml::Spanned<Grants>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusSection {
    frame_bytes_max: Option<usize>,
    outbound_msgs_max: Option<usize>,
    outbound_bytes_max: Option<usize>,
    control_frames_max: Option<usize>,
    write_batch_bytes: Option<usize>,
    subscriptions_per_connection_max: Option<usize>,
    subscriptions_per_principal_max: Option<usize>,
    connections_max: Option<usize>,
    connections_per_principal_max: Option<usize>,
    ack_pending_max: Option<usize>,
    stream_append_queue_max: Option<usize>,
    stream_segment_bytes: Option<u64>,
    stream_ack_wait: Option<toml::Spanned<String>>,
    stream_max_deliver: Option<u32>,
    edge_flush: Option<toml::Spanned<String>>,
    worker_grace: Option<toml::Spanned<String>>,
}

impl BusConfig {
    /// Reads `bus.toml` from `dir` if it exists; the defaults otherwise.
    pub fn load(dir: &Path) -> Result<BusConfig, ConfigError> {
        let file = dir.join("bus.toml");
        match std::fs::read_to_string(&file) {
            Ok(text) => BusConfig::parse(&file, &text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BusConfig::default()),
            Err(error) => Err(ConfigError {
                file,
                line: None,
                message: format!("cannot read: {error}"),
            }),
        }
    }

    pub fn parse(file: &Path, text: &str) -> Result<BusConfig, ConfigError> {
        let source = Source { file, text };
        let parsed: BusFile = source.parse()?;
        let mut config = BusConfig::default();
        let section = parsed.bus;
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(value) = section.$field {
                    if value == 0 {
                        return Err(source.error(None, format!("bus.{} must be positive", stringify!($field))));
                    }
                    config.$field = value;
                }
            )*};
        }
        set!(
            frame_bytes_max,
            outbound_msgs_max,
            outbound_bytes_max,
            control_frames_max,
            write_batch_bytes,
            subscriptions_per_connection_max,
            subscriptions_per_principal_max,
            connections_max,
            connections_per_principal_max,
            ack_pending_max,
            stream_append_queue_max,
            stream_segment_bytes,
            stream_max_deliver
        );
        for (key, value, target) in [
            (
                "stream_ack_wait",
                &section.stream_ack_wait,
                &mut config.stream_ack_wait_ms,
            ),
            ("edge_flush", &section.edge_flush, &mut config.edge_flush_ms),
            (
                "worker_grace",
                &section.worker_grace,
                &mut config.worker_grace_ms,
            ),
        ] {
            if let Some(value) = value {
                *target = parse_duration_ms(value.get_ref())
                    .map_err(|m| source.error(Some(value.span()), format!("bus.{key}: {m}")))?;
            }
        }
        for (name, grants) in parsed.roles {
            let span = grants.span();
            let role = Role::parse(&name).ok_or_else(|| {
                source.error(
                    Some(span.clone()),
                    format!("roles.{name}: unknown role (admin, member, observer)"),
                )
            })?;
            let grants = grants.into_inner();
            for pattern in grants.publish.iter().chain(&grants.subscribe) {
                colony_kernel::subject::check_pattern(pattern).map_err(|e| {
                    source.error(
                        Some(span.clone()),
                        format!("roles.{name}: {pattern:?}: {e}"),
                    )
                })?;
            }
            config.grants.insert(role, grants);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds_durations_and_grants() {
        let text = "[bus]\noutbound_msgs_max = 16\nstream_ack_wait = \"2s\"\n\n[roles.member]\npublish = [\"team.>\"]\nsubscribe = [\"team.>\"]\n";
        let config = BusConfig::parse(Path::new("bus.toml"), text).unwrap();
        assert_eq!(config.outbound_msgs_max, 16);
        assert_eq!(config.stream_ack_wait_ms, 2_000);
        assert_eq!(config.grants[&Role::Member].publish, ["team.>"]);
        assert_eq!(config.grants[&Role::Admin].publish, [">"]);
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/bus.toml");
        let shipped = BusConfig::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
        let defaults = BusConfig::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn errors_name_the_line() {
        let text = "[bus]\noutbound_msgs_max = 16\n\n[roles.member]\npublish = [\"team..x\"]\n";
        let error = BusConfig::parse(Path::new("bus.toml"), text).unwrap_err();
        assert_eq!(error.line, Some(4), "{error}");
        let error = BusConfig::parse(Path::new("bus.toml"), "[bus]\nbogus = 1\n").unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
    }
}
