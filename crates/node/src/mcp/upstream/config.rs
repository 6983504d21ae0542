//! `mcp.toml` (optional, read at every start): the upstream MCP servers whose tools
//! the node offers agents as `{server}__{tool}`, and for each tool (or `*`) who may
//! call it, its price, its rate, its bounds and whether a human approves each call.
//! Without the file, no upstream. The format is documented in the shipped file and
//! in docs/configuration.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use colony_kernel::Role;
use serde::Deserialize;
use toml::Spanned;

use crate::genesis::{parse_duration_ms, parse_usd, read_optional, ConfigError, Source};

/// Upstream servers one node runs or reaches.
pub const SERVERS_MAX: usize = 64;
/// Calls one upstream has in flight at most (`concurrency`).
pub const CONCURRENCY_MAX: usize = 1_024;
/// Longest server name (tools are `{server}__{tool}`).
pub const SERVER_NAME_CHARS_MAX: usize = 32;

/// The whole file.
#[derive(Clone, Debug, Default)]
pub struct McpConfig {
    pub servers: Vec<ServerConfig>,
    /// Where it came from (a path, or "none").
    pub source: String,
}

/// How the node reaches one upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// A program the node runs, speaking MCP on its stdin and stdout.
    Stdio {
        command: Vec<String>,
        /// Under bubblewrap (`sandbox = "bwrap"`, the default), or not (`"none"`,
        /// said loudly at every start).
        sandboxed: bool,
        allow_net: bool,
        read_only: Vec<PathBuf>,
        read_write: Vec<PathBuf>,
        /// The only environment it gets, besides `PATH`, `HOME` and `LANG`.
        env: BTreeMap<String, String>,
    },
    /// A server the node reaches over MCP's Streamable HTTP at `url` (`http://` or
    /// `https://`, verified against the system's roots and `SSL_CERT_FILE`).
    Http {
        url: String,
        /// Where the bearer token it presents comes from, if the server wants one.
        bearer: Option<Bearer>,
        /// A CA its certificate is also checked against (`ca_file`).
        ca_file: Option<PathBuf>,
        /// Other headers it is sent (`headers`, `headers_env`).
        headers: Vec<(String, super::remote::HeaderSource)>,
    },
}

/// Where a server's bearer token is read, when the node starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// A variable of the node's environment (`bearer_token_env`).
    Env(String),
    /// A file, its content trimmed (`bearer_token_file`: a mounted secret).
    File(PathBuf),
}

/// One upstream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    pub launch: Launch,
    /// A call's deadline (`timeout`, 30 s by default).
    pub timeout_ms: u64,
    /// Deadline to start and list its tools (`start_timeout`, 30 s by default).
    pub start_timeout_ms: u64,
    /// Calls in flight at most; more wait for a slot until their deadline.
    pub concurrency: usize,
    /// The tools' rules, most specific first when looked up.
    pub tools: Vec<ToolRule>,
}

/// Whether a call waits for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    None,
    /// A human member or admin of another lineage than the caller approves each call.
    Human,
}

/// What `[[servers.tools]]` says of one tool, or of all (`*`); a tool's own entry
/// takes every key it does not set from `*`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRule {
    /// A tool's name as the upstream lists it, or `*`.
    pub name: String,
    /// Price per call, reserved before and charged after.
    pub io_ops: u64,
    pub compute_ms: u64,
    pub micro_usd: u64,
    /// Calls per principal per minute.
    pub rate_per_minute: u32,
    pub arguments_bytes_max: usize,
    pub result_bytes_max: usize,
    pub approval: Approval,
    pub approval_timeout_ms: u64,
    /// Roles that may call it (any of them); admins always may.
    pub roles: Vec<Role>,
}

impl ServerConfig {
    /// The rule for `tool`: its own entry, else `*`; `None` when neither (the tool
    /// is then not offered).
    pub fn rule(&self, tool: &str) -> Option<&ToolRule> {
        self.tools
            .iter()
            .find(|rule| rule.name == tool)
            .or_else(|| self.tools.iter().find(|rule| rule.name == "*"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    servers: Vec<Spanned<ServerEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerEntry {
    name: String,
    command: Option<Vec<String>>,
    url: Option<String>,
    bearer_token_env: Option<String>,
    bearer_token_file: Option<String>,
    ca_file: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    headers_env: BTreeMap<String, String>,
    sandbox: Option<String>,
    #[serde(default)]
    allow_net: bool,
    #[serde(default)]
    read_only: Vec<String>,
    #[serde(default)]
    read_write: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<String>,
    start_timeout: Option<String>,
    concurrency: Option<usize>,
    #[serde(default)]
    tools: Vec<Spanned<ToolEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolEntry {
    name: String,
    io_ops: Option<u64>,
    compute_ms: Option<u64>,
    usd_per_call: Option<String>,
    rate_per_minute: Option<u32>,
    arguments_bytes_max: Option<usize>,
    result_bytes_max: Option<usize>,
    approval: Option<String>,
    approval_timeout: Option<String>,
    roles: Option<Vec<String>>,
}

/// `mcp.toml` in `dir`, or no upstream when there is none.
pub fn load(dir: &Path) -> Result<McpConfig, ConfigError> {
    match read_optional(dir, "mcp.toml")? {
        Some((file, text)) => parse(&file, &text),
        None => Ok(McpConfig {
            servers: Vec::new(),
            source: "none".into(),
        }),
    }
}

pub fn parse(file: &Path, text: &str) -> Result<McpConfig, ConfigError> {
    let source = Source { file, text };
    let parsed: File = source.parse()?;
    if parsed.servers.len() > SERVERS_MAX {
        return Err(source.error(None, format!("at most {SERVERS_MAX} servers")));
    }
    let mut servers: Vec<ServerConfig> = Vec::new();
    for entry in parsed.servers {
        let span = entry.span();
        let entry = entry.into_inner();
        let at = |message: String| source.error(Some(span.clone()), message);
        let server = server(entry).map_err(at)?;
        if servers.iter().any(|s| s.name == server.name) {
            return Err(source.error(
                Some(span),
                format!("servers: `{}` is named twice", server.name),
            ));
        }
        servers.push(server);
    }
    Ok(McpConfig {
        servers,
        source: file.display().to_string(),
    })
}

/// An URL's host and port are well-formed (`http::Uri` parses it).
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    uri.host().map(|_| ()).ok_or_else(|| "no host".to_string())
}

fn server(mut entry: ServerEntry) -> Result<ServerConfig, String> {
    let name = std::mem::take(&mut entry.name);
    let valid = !name.is_empty()
        && name.len() <= SERVER_NAME_CHARS_MAX
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !valid {
        return Err(format!(
            "servers: name `{name}` is 1 to {SERVER_NAME_CHARS_MAX} lowercase letters, digits, `_` or `-`, without `__` (tools are named {{server}}__{{tool}})"
        ));
    }
    let launch = match (entry.command.take(), entry.url.take()) {
        (Some(command), None) => stdio_launch(&name, command, &mut entry)?,
        (None, Some(url)) => http_launch(&name, url, &mut entry)?,
        _ => {
            return Err(format!(
                "servers.{name} has either `command` (a program speaking MCP over stdio) or `url`"
            ))
        }
    };
    let duration = |key: &str, value: Option<String>, default: u64| match value {
        None => Ok(default),
        Some(text) => parse_duration_ms(&text)
            .and_then(|ms| {
                (100..=3_600_000)
                    .contains(&ms)
                    .then_some(ms)
                    .ok_or_else(|| "between 100ms and 1h".to_string())
            })
            .map_err(|m| format!("servers.{name}.{key}: {m}")),
    };
    let concurrency = entry.concurrency.unwrap_or(8);
    if !(1..=CONCURRENCY_MAX).contains(&concurrency) {
        return Err(format!(
            "servers.{name}.concurrency is 1 to {CONCURRENCY_MAX}"
        ));
    }
    // `*` first: a tool's own entry takes what it does not say from it.
    let mut entries: Vec<ToolEntry> = entry.tools.into_iter().map(Spanned::into_inner).collect();
    entries.sort_by_key(|tool| tool.name != "*");
    let mut tools: Vec<ToolRule> = Vec::new();
    for tool in entries {
        let base = tools.iter().find(|t| t.name == "*");
        let rule = tool_rule(&name, tool, base)?;
        if tools.iter().any(|t| t.name == rule.name) {
            return Err(format!(
                "servers.{name}.tools: `{}` is named twice",
                rule.name
            ));
        }
        tools.push(rule);
    }
    Ok(ServerConfig {
        timeout_ms: duration("timeout", entry.timeout, 30_000)?,
        start_timeout_ms: duration("start_timeout", entry.start_timeout, 30_000)?,
        concurrency,
        tools,
        launch,
        name,
    })
}

/// A server the node runs: a program speaking MCP over stdio, sandboxed unless said.
fn stdio_launch(
    name: &str,
    command: Vec<String>,
    entry: &mut ServerEntry,
) -> Result<Launch, String> {
    if entry.bearer_token_env.is_some()
        || entry.bearer_token_file.is_some()
        || entry.ca_file.is_some()
        || !entry.headers.is_empty()
        || !entry.headers_env.is_empty()
    {
        return Err(format!(
            "servers.{name}: bearer_token_env, bearer_token_file, ca_file, headers and headers_env are for a server at a `url`; a program gets its environment from `env`"
        ));
    }
    if command.is_empty() || command[0].is_empty() {
        return Err(format!("servers.{name}.command names a program to run"));
    }
    let sandboxed = match entry.sandbox.as_deref() {
        None | Some("bwrap") => true,
        Some("none") => false,
        Some(other) => {
            return Err(format!(
                "servers.{name}.sandbox is \"bwrap\" or \"none\", not `{other}`"
            ))
        }
    };
    let absolute = |key: &str, paths: Vec<String>| {
        paths
            .into_iter()
            .map(|path| {
                let path = PathBuf::from(path);
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(format!(
                        "servers.{name}.{key}: `{}` is not an absolute path",
                        path.display()
                    ))
                }
            })
            .collect::<Result<Vec<_>, String>>()
    };
    Ok(Launch::Stdio {
        command,
        sandboxed,
        allow_net: entry.allow_net,
        read_only: absolute("read_only", std::mem::take(&mut entry.read_only))?,
        read_write: absolute("read_write", std::mem::take(&mut entry.read_write))?,
        env: std::mem::take(&mut entry.env),
    })
}

/// A server at a URL: its bearer token, CA and headers.
fn http_launch(name: &str, url: String, entry: &mut ServerEntry) -> Result<Launch, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || check_url(&url).is_err() {
        return Err(format!(
            "servers.{name}.url `{url}` is not an http:// or https:// URL"
        ));
    }
    let local = entry.sandbox.is_some()
        || entry.allow_net
        || !entry.read_only.is_empty()
        || !entry.read_write.is_empty()
        || !entry.env.is_empty();
    if local {
        return Err(format!(
            "servers.{name}: sandbox, allow_net, read_only, read_write and env are for a server the node runs (`command`); one at a `url` runs elsewhere"
        ));
    }
    let bearer = match (
        entry.bearer_token_env.take(),
        entry.bearer_token_file.take(),
    ) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "servers.{name}: bearer_token_env or bearer_token_file, not both"
            ))
        }
        (Some(variable), None) => {
            let valid = !variable.is_empty()
                && variable
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "servers.{name}.bearer_token_env `{variable}` is the name of an environment variable"
                ));
            }
            Some(Bearer::Env(variable))
        }
        (None, Some(file)) => {
            let file = PathBuf::from(file);
            if !file.is_absolute() {
                return Err(format!(
                    "servers.{name}.bearer_token_file: `{}` is not an absolute path",
                    file.display()
                ));
            }
            Some(Bearer::File(file))
        }
        (None, None) => None,
    };
    let ca_file = match entry.ca_file.take().map(PathBuf::from) {
        Some(file) if !file.is_absolute() => {
            return Err(format!(
                "servers.{name}.ca_file: `{}` is not an absolute path",
                file.display()
            ))
        }
        other => other,
    };
    let headers = super::remote::check(
        name,
        std::mem::take(&mut entry.headers),
        std::mem::take(&mut entry.headers_env),
    )?;
    Ok(Launch::Http {
        url,
        bearer,
        ca_file,
        headers,
    })
}

fn tool_rule(server: &str, entry: ToolEntry, base: Option<&ToolRule>) -> Result<ToolRule, String> {
    let name = entry.name;
    let at = format!("servers.{server}.tools.{name}");
    if name != "*" {
        colony_kernel::tool_calls::check_tool_name(&format!("{server}__{name}"))
            .map_err(|m| format!("{at}: {m}"))?;
    }
    let approval = match entry.approval.as_deref() {
        None => base.map_or(Approval::None, |b| b.approval),
        Some("none") => Approval::None,
        Some("human") => Approval::Human,
        Some(other) => {
            return Err(format!(
                "{at}.approval is \"none\" or \"human\", not `{other}`"
            ))
        }
    };
    let approval_timeout_ms = match entry.approval_timeout {
        None => base.map_or(15 * 60_000, |b| b.approval_timeout_ms),
        Some(text) => parse_duration_ms(&text)
            .and_then(|ms| {
                (1_000..=86_400_000)
                    .contains(&ms)
                    .then_some(ms)
                    .ok_or_else(|| "between 1s and 24h".to_string())
            })
            .map_err(|m| format!("{at}.approval_timeout: {m}"))?,
    };
    let micro_usd = match entry.usd_per_call {
        None => base.map_or(0, |b| b.micro_usd),
        Some(text) => parse_usd(&text).map_err(|m| format!("{at}.usd_per_call: {m}"))?,
    };
    let bounded = |key: &str, value: Option<usize>, default: usize, max: usize| match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!("{at}.{key} is 1 to {max}, not {n}")),
    };
    let roles = match entry.roles {
        None => base.map_or_else(|| vec![Role::Member], |b| b.roles.clone()),
        Some(names) => names
            .iter()
            .map(|name| Role::parse(name).ok_or_else(|| format!("{at}.roles: no role `{name}`")))
            .collect::<Result<Vec<_>, String>>()?,
    };
    Ok(ToolRule {
        io_ops: entry.io_ops.or(base.map(|b| b.io_ops)).unwrap_or(1),
        compute_ms: entry.compute_ms.or(base.map(|b| b.compute_ms)).unwrap_or(0),
        micro_usd,
        rate_per_minute: match entry.rate_per_minute {
            None => base.map_or(60, |b| b.rate_per_minute),
            Some(n) if (1..=1_000_000).contains(&n) => n,
            Some(n) => return Err(format!("{at}.rate_per_minute is 1 to 1000000, not {n}")),
        },
        arguments_bytes_max: bounded(
            "arguments_bytes_max",
            entry.arguments_bytes_max,
            base.map_or(64 << 10, |b| b.arguments_bytes_max),
            crate::mcp::MCP_MESSAGE_BYTES_MAX,
        )?,
        result_bytes_max: bounded(
            "result_bytes_max",
            entry.result_bytes_max,
            base.map_or(1 << 20, |b| b.result_bytes_max),
            crate::mcp::TOOL_ANSWER_BYTES_MAX,
        )?,
        approval,
        approval_timeout_ms,
        roles,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../../../config/genesis/mcp.toml");

    #[test]
    fn the_shipped_file_has_no_server_and_its_example_parses_uncommented() {
        let file = Path::new("mcp.toml");
        assert!(parse(file, SHIPPED).unwrap().servers.is_empty());
        // The example: every line from `# [[servers]]` on, its first `# ` taken off
        // (lines commented twice stay comments).
        let start = SHIPPED.find("# [[servers]]").unwrap();
        let example: String = SHIPPED[start..]
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(file, &example).unwrap();
        let files = &config.servers[0];
        assert_eq!(files.name, "files");
        assert_eq!(files.timeout_ms, 30_000);
        assert_eq!(files.start_timeout_ms, 60_000);
        let write = files.rule("write_file").unwrap();
        // Its own entry takes what it does not say from `*`.
        assert_eq!((write.io_ops, write.rate_per_minute), (1, 60));
        assert_eq!(write.approval, Approval::Human);
        assert_eq!(write.approval_timeout_ms, 15 * 60_000);
        assert_eq!(files.rule("read_file").unwrap().approval, Approval::None);
        let tracker = &config.servers[1];
        assert_eq!(
            tracker.launch,
            Launch::Http {
                url: "https://mcp.example.com/mcp".into(),
                bearer: Some(Bearer::Env("TRACKER_TOKEN".into())),
                ca_file: None,
                headers: Vec::new(),
            }
        );
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_key() {
        for (text, expected) in [
            ("[[servers]]\nname = \"a__b\"\ncommand = [\"x\"]\n", "without `__`"),
            ("[[servers]]\nname = \"a\"\n", "either `command`"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\nconcurrency = 0\n", "concurrency"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\ntimeout = \"1ms\"\n", "timeout"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\nsandbox = \"docker\"\n", "sandbox"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\n[[servers.tools]]\nname = \"*\"\nresult_bytes_max = 0\n", "result_bytes_max"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\n[[servers.tools]]\nname = \"*\"\nroles = [\"king\"]\n", "no role"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\n[[servers.tools]]\nname = \"t\"\n[[servers.tools]]\nname = \"t\"\n", "twice"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\n[[servers]]\nname = \"a\"\ncommand = [\"y\"]\n", "twice"),
            ("[[servers]]\nname = \"a\"\ncommand = [\"x\"]\nbogus = 1\n", "bogus"),
        ] {
            let error = parse(Path::new("mcp.toml"), text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.starts_with("mcp.toml"), "{error}");
        }
    }
}
