//! How a node joins a cluster: `colony up --cluster URL[,URL...] --node-name NAME`.

use std::time::Duration;

use crate::cluster::ClusterError;

/// A node's name is at most this long: letters, digits, `-` and `_`.
pub const NODE_NAME_MAX: usize = 64;
/// At most this many NATS server URLs.
pub const SERVERS_MAX: usize = 16;
/// A command in the stream is at most this many bytes (the stream refuses larger
/// messages; the NATS servers' `max_payload` must allow it: 8 MiB is NATS's own
/// ceiling).
pub const ENVELOPE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Commands the stream keeps at least, unless told otherwise.
pub const KEEP_COMMANDS_DEFAULT: u64 = 1_000_000;

/// How long a group of commands may wait for more under load, unless told
/// otherwise; and at most.
pub const GROUP_WAIT_DEFAULT: Duration = Duration::from_millis(1);
pub const GROUP_WAIT_MAX: Duration = Duration::from_millis(100);

/// The stream's name unless told otherwise.
pub const STREAM_DEFAULT: &str = "COLONY_COMMANDS";

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `nats://HOST:PORT` (or `tls://`) URLs of the NATS servers.
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// The JetStream stream that holds the command log.
    pub stream: String,
    /// How many servers keep a copy of the stream (at its creation): 3 when three or
    /// more servers are named, else as many as are named.
    pub replicas: usize,
    /// How long a proposal waits for the stream's acknowledgement, and then for
    /// this node to apply it, before the caller gets `503`.
    pub ack_timeout: Duration,
    /// Under load, how long a group of this node's commands may wait for more before
    /// it is signed and published (`signer.rs`); zero never waits.
    pub group_wait: Duration,
    /// Whether the node moves its NATS connection to the server that leads the
    /// command stream (among `servers`), following it when leadership moves
    /// (`leader.rs`): its messages, their acknowledgements and its deliveries then
    /// skip a hop between servers.
    pub prefer_leader: bool,
    /// The command log's compaction (`compact.rs`): the last `keep_commands`
    /// commands always stay in the stream.
    pub keep_commands: u64,
    /// ...and so does every command after the last one applied by a node heard from
    /// within `keep_absent`; a node gone longer must be seeded again from a copy of
    /// another node's data directory.
    pub keep_absent: Duration,
    /// How often the watching node compacts.
    pub compact_every: Duration,
    /// How the node proves itself to NATS and checks NATS's certificate.
    pub auth: NatsAuth,
}

/// TLS and credentials for the links to NATS (`cluster.toml`; a password may also
/// be written in a server URL, `nats://user:password@host:port`, as NATS clients
/// accept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsAuth {
    /// The CA that signed the servers' certificates (TLS is then required).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A client certificate and its key, for servers that verify clients.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Whether TLS is required (a CA file, a client certificate, or `tls://` URLs).
    pub require_tls: bool,
    /// One way to authenticate, at most.
    pub credentials: Option<NatsCredentials>,
}

/// How a node authenticates to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsCredentials {
    /// A `.creds` file (a user JWT and its NKey seed).
    CredsFile(std::path::PathBuf),
    /// An NKey seed, read from a file.
    NkeySeed(String),
    /// A user and the password read from an environment variable.
    UserPassword(String, String),
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret.
        match self {
            NatsCredentials::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
            NatsCredentials::NkeySeed(_) => write!(f, "NkeySeed(..)"),
            NatsCredentials::UserPassword(user, _) => write!(f, "UserPassword({user}, ..)"),
        }
    }
}

impl ClusterConfig {
    /// Checks the names and URLs; the rest takes its defaults.
    pub fn new(servers: &[String], node_name: &str) -> Result<ClusterConfig, ClusterError> {
        let servers: Vec<String> = servers
            .iter()
            .flat_map(|list| list.split(','))
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(ClusterError::Config(
                "--cluster names no NATS server (nats://HOST:PORT)".into(),
            ));
        }
        if servers.len() > SERVERS_MAX {
            return Err(ClusterError::Config(format!(
                "--cluster names {} servers; at most {SERVERS_MAX}",
                servers.len()
            )));
        }
        for url in &servers {
            let scheme_ok = ["nats://", "tls://", "nats+tls://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok || url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(ClusterError::Config(format!(
                    "{url:?} is not a NATS server URL (nats://HOST:PORT or tls://HOST:PORT)"
                )));
            }
        }
        let servers_tls = servers
            .iter()
            .any(|url| url.starts_with("tls://") || url.starts_with("nats+tls://"));
        if !is_name(node_name, NODE_NAME_MAX) {
            return Err(ClusterError::Config(format!(
                "--node-name {node_name:?}: 1 to {NODE_NAME_MAX} letters, digits, '-' or '_'"
            )));
        }
        Ok(ClusterConfig {
            replicas: servers.len().min(3),
            servers,
            node_name: node_name.to_string(),
            stream: STREAM_DEFAULT.to_string(),
            ack_timeout: Duration::from_secs(5),
            group_wait: GROUP_WAIT_DEFAULT,
            prefer_leader: true,
            keep_commands: KEEP_COMMANDS_DEFAULT,
            keep_absent: Duration::from_secs(24 * 3600),
            compact_every: Duration::from_secs(60),
            auth: NatsAuth {
                require_tls: servers_tls,
                ..NatsAuth::default()
            },
        })
    }

    /// The subject the stream holds commands on.
    pub(crate) fn commands_subject(&self) -> String {
        format!("colony.cluster.{}.commands", self.stream)
    }

    /// The subject nodes tell each other their progress on (`.<node>` appended).
    pub(crate) fn nodes_subject(&self) -> String {
        format!("colony.cluster.{}.nodes", self.stream)
    }
}

/// `cluster.toml`'s duration `key`, from `min_ms` to `max_ms`.
fn duration(key: &str, text: &str, min_ms: u64, max_ms: u64) -> Result<Duration, ClusterError> {
    let ms = colony_config::parse_duration_ms(text)
        .map_err(|error| ClusterError::Config(format!("cluster.toml: {key}: {error}")))?;
    if !(min_ms..=max_ms).contains(&ms) {
        return Err(ClusterError::Config(format!(
            "cluster.toml: {key} is {} to {}",
            humanize(min_ms),
            humanize(max_ms)
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// `group_wait`: zero (never wait) to [`GROUP_WAIT_MAX`], in milliseconds (`"1ms"`,
/// `"0s"`).
fn group_wait(text: &str) -> Result<Duration, ClusterError> {
    let zero = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .trim()
        == "0";
    if zero {
        return Ok(Duration::ZERO);
    }
    duration("group_wait", text, 1, GROUP_WAIT_MAX.as_millis() as u64)
}

/// `ms` the way `cluster.toml` would say it.
fn humanize(ms: u64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// 1 to `max` letters, digits, `-` or `_`.
fn is_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names_are_checked() {
        let config = ClusterConfig::new(
            &["nats://127.0.0.1:4222,nats://127.0.0.1:4223".into()],
            "node-1",
        )
        .unwrap();
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.replicas, 2);
        assert!(ClusterConfig::new(&[], "a").is_err());
        assert!(ClusterConfig::new(&["http://x:1".into()], "a").is_err());
        assert!(ClusterConfig::new(&["nats://x:1".into()], "a b").is_err());
        assert!(ClusterConfig::new(&["nats://x:1".into()], &"n".repeat(65)).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("nats://h:{}", 4000 + i)).collect();
        assert!(ClusterConfig::new(&many, "a").is_err());
        let three: Vec<String> = (0..5).map(|i| format!("nats://h:{}", 4000 + i)).collect();
        assert_eq!(ClusterConfig::new(&three, "a").unwrap().replicas, 3);
    }

    #[test]
    fn the_group_wait_is_bounded() {
        let resolve = |wait: &str| {
            ClusterConfig::resolve(
                Some(ClusterFile {
                    servers: vec!["nats://127.0.0.1:4222".into()],
                    node_name: Some("node-1".into()),
                    group_wait: Some(wait.into()),
                    ..ClusterFile::default()
                }),
                &[],
                None,
            )
            .map(|config| config.unwrap().group_wait)
        };
        assert_eq!(resolve("2ms").unwrap(), Duration::from_millis(2));
        assert_eq!(resolve("0s").unwrap(), Duration::ZERO);
        assert_eq!(resolve("0").unwrap(), Duration::ZERO);
        assert!(resolve("1s")
            .unwrap_err()
            .to_string()
            .contains("group_wait is 1ms to 100ms"));
        assert!(resolve("soon").is_err());
        let default = ClusterConfig::new(&["nats://127.0.0.1:4222".into()], "n").unwrap();
        assert_eq!(default.group_wait, GROUP_WAIT_DEFAULT);
    }

    #[test]
    fn a_node_prefers_the_streams_leader_unless_told_not_to() {
        let resolve = |prefer: Option<bool>| {
            ClusterConfig::resolve(
                Some(ClusterFile {
                    servers: vec!["nats://127.0.0.1:4222".into()],
                    node_name: Some("node-1".into()),
                    prefer_leader: prefer,
                    ..ClusterFile::default()
                }),
                &[],
                None,
            )
            .unwrap()
            .unwrap()
            .prefer_leader
        };
        assert!(resolve(None));
        assert!(resolve(Some(true)));
        assert!(!resolve(Some(false)));
        let file = std::path::Path::new("cluster.toml");
        let source = colony_config::Source {
            file,
            text: "[cluster]\nprefer_leader = false\n",
        };
        let parsed = source.parse::<FileTop>().unwrap().cluster.unwrap();
        assert_eq!(parsed.prefer_leader, Some(false));
    }

    #[test]
    fn compaction_settings_are_bounded() {
        let file = |keep_commands, keep_absent: &str, compact_every: &str| ClusterFile {
            servers: vec!["nats://127.0.0.1:4222".into()],
            node_name: Some("node-1".into()),
            keep_commands,
            keep_absent: Some(keep_absent.into()),
            compact_every: Some(compact_every.into()),
            ..ClusterFile::default()
        };
        let config = ClusterConfig::resolve(Some(file(Some(50), "2h", "250ms")), &[], None)
            .unwrap()
            .unwrap();
        assert_eq!(config.keep_commands, 50);
        assert_eq!(config.keep_absent, Duration::from_secs(7_200));
        assert_eq!(config.compact_every, Duration::from_millis(250));
        let refused = |file| ClusterConfig::resolve(Some(file), &[], None).unwrap_err();
        assert!(refused(file(Some(9), "2h", "1m"))
            .to_string()
            .contains("at least 10"));
        assert!(refused(file(None, "31d", "1m"))
            .to_string()
            .contains("keep_absent is 1s to 30d"));
        assert!(refused(file(None, "2h", "10ms"))
            .to_string()
            .contains("compact_every is 100ms to 1h"));
        assert!(refused(file(None, "soon", "1m"))
            .to_string()
            .contains("not a duration"));
        let defaults = ClusterConfig::new(&["nats://h:1".into()], "a").unwrap();
        assert_eq!(defaults.keep_commands, KEEP_COMMANDS_DEFAULT);
    }
}

/// `cluster.toml`'s `[cluster]` table, before the command line's flags are laid over
/// it (`colony up --cluster` and `--node-name` win).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    #[serde(default)]
    pub servers: Vec<String>,
    pub node_name: Option<String>,
    pub stream: Option<String>,
    pub replicas: Option<usize>,
    /// A duration (`"5s"`).
    pub ack_timeout: Option<String>,
    /// A duration (`"1ms"`, at most 100 ms; `"0s"` never waits).
    pub group_wait: Option<String>,
    /// Talk to the server leading the command stream (`true` unless told otherwise).
    pub prefer_leader: Option<bool>,
    /// Commands always kept in the stream (at least 10).
    pub keep_commands: Option<u64>,
    /// A duration (`"24h"`, 1 s to 30 days).
    pub keep_absent: Option<String>,
    /// A duration (`"1m"`, 100 ms to 1 h).
    pub compact_every: Option<String>,
    /// The CA that signed the NATS servers' certificates (TLS is then required).
    pub tls_ca_file: Option<String>,
    /// A client certificate and its key (both or neither).
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// A NATS `.creds` file.
    pub credentials_file: Option<String>,
    /// A file holding an NKey seed.
    pub nkey_seed_file: Option<String>,
    /// A user, whose password is in the environment variable `password_env`.
    pub user: Option<String>,
    pub password_env: Option<String>,
    /// Where the file is (relative paths are read from there).
    #[serde(skip)]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop {
    cluster: Option<ClusterFile>,
}

/// Reads `cluster.toml` in the configuration directory (at every start); `None`
/// when there is none or it has no `[cluster]` table.
pub fn load_file(dir: &std::path::Path) -> Result<Option<ClusterFile>, colony_config::ConfigError> {
    let file = dir.join("cluster.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(colony_config::ConfigError {
                file,
                line: None,
                message: format!("cannot read: {error}"),
            })
        }
    };
    let source = colony_config::Source {
        file: &file,
        text: &text,
    };
    Ok(source
        .parse::<FileTop>()?
        .cluster
        .map(|cluster| ClusterFile {
            dir: Some(dir.to_path_buf()),
            ..cluster
        }))
}

impl ClusterFile {
    /// TLS and credentials as the file names them, its files checked readable.
    fn auth(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<NatsAuth, ClusterError> {
        let path = |text: &str| {
            let path = std::path::PathBuf::from(text);
            let path = match (&self.dir, path.is_absolute()) {
                (Some(dir), false) => dir.join(path),
                _ => path,
            };
            if path.is_file() {
                Ok(path)
            } else {
                Err(ClusterError::Config(format!(
                    "cluster.toml: {} is not a readable file",
                    path.display()
                )))
            }
        };
        let mut auth = NatsAuth::default();
        if let Some(ca) = &self.tls_ca_file {
            auth.tls_ca_file = Some(path(ca)?);
        }
        auth.tls_client = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((path(cert)?, path(key)?)),
            (None, None) => None,
            _ => {
                return Err(ClusterError::Config(
                    "cluster.toml: tls_cert_file and tls_key_file go together".into(),
                ))
            }
        };
        auth.require_tls = auth.tls_ca_file.is_some() || auth.tls_client.is_some();
        let ways = [
            self.credentials_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.user.is_some(),
        ];
        if ways.iter().filter(|way| **way).count() > 1 {
            return Err(ClusterError::Config(
                "cluster.toml: credentials_file, nkey_seed_file and user are three ways to authenticate: give one".into(),
            ));
        }
        auth.credentials = if let Some(creds) = &self.credentials_file {
            Some(NatsCredentials::CredsFile(path(creds)?))
        } else if let Some(seed) = &self.nkey_seed_file {
            let text = std::fs::read_to_string(path(seed)?).map_err(|error| {
                ClusterError::Config(format!("cluster.toml: nkey_seed_file: {error}"))
            })?;
            Some(NatsCredentials::NkeySeed(text.trim().to_string()))
        } else if let Some(user) = &self.user {
            let var = self.password_env.as_deref().ok_or_else(|| {
                ClusterError::Config(
                    "cluster.toml: user needs password_env, the environment variable holding its password".into(),
                )
            })?;
            let password = env(var).ok_or_else(|| {
                ClusterError::Config(format!(
                    "cluster.toml: password_env {var}: the variable is not set"
                ))
            })?;
            Some(NatsCredentials::UserPassword(user.clone(), password))
        } else {
            if self.password_env.is_some() {
                return Err(ClusterError::Config(
                    "cluster.toml: password_env without user".into(),
                ));
            }
            None
        };
        Ok(auth)
    }
}

impl ClusterConfig {
    /// The configuration from `cluster.toml` with the command line's flags over it;
    /// `Ok(None)` when neither names a server (the node is embedded).
    pub fn resolve(
        file: Option<ClusterFile>,
        servers: &[String],
        node_name: Option<&str>,
    ) -> Result<Option<ClusterConfig>, ClusterError> {
        let file = file.unwrap_or_default();
        let servers = if servers.is_empty() {
            &file.servers
        } else {
            servers
        };
        if servers.is_empty() {
            return Ok(None);
        }
        let Some(name) = node_name.or(file.node_name.as_deref()) else {
            return Err(ClusterError::Config(
                "a node of a cluster needs a name unique in it: --node-name NAME (or node_name in cluster.toml)".into(),
            ));
        };
        let mut config = ClusterConfig::new(servers, name)?;
        let auth = file.auth(&|name| std::env::var(name).ok())?;
        config.auth = NatsAuth {
            require_tls: auth.require_tls || config.auth.require_tls,
            ..auth
        };
        if let Some(stream) = file.stream {
            if !is_name(&stream, 32) {
                return Err(ClusterError::Config(format!(
                    "cluster.toml: stream {stream:?}: 1 to 32 letters, digits, '-' or '_'"
                )));
            }
            config.stream = stream;
        }
        if let Some(replicas) = file.replicas {
            if !(1..=5).contains(&replicas) {
                return Err(ClusterError::Config(format!(
                    "cluster.toml: replicas {replicas}: 1 to 5"
                )));
            }
            config.replicas = replicas;
        }
        if let Some(timeout) = file.ack_timeout {
            let ms = colony_config::parse_duration_ms(&timeout).map_err(|error| {
                ClusterError::Config(format!("cluster.toml: ack_timeout: {error}"))
            })?;
            if !(100..=60_000).contains(&ms) {
                return Err(ClusterError::Config(
                    "cluster.toml: ack_timeout is 100ms to 60s".into(),
                ));
            }
            config.ack_timeout = Duration::from_millis(ms);
        }
        if let Some(text) = file.group_wait {
            config.group_wait = group_wait(&text)?;
        }
        if let Some(prefer) = file.prefer_leader {
            config.prefer_leader = prefer;
        }
        if let Some(keep) = file.keep_commands {
            if keep < 10 {
                return Err(ClusterError::Config(format!(
                    "cluster.toml: keep_commands {keep}: at least 10"
                )));
            }
            config.keep_commands = keep;
        }
        if let Some(text) = file.keep_absent {
            config.keep_absent = duration("keep_absent", &text, 1_000, 30 * 24 * 3_600_000)?;
        }
        if let Some(text) = file.compact_every {
            config.compact_every = duration("compact_every", &text, 100, 3_600_000)?;
        }
        Ok(Some(config))
    }
}
