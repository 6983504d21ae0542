//! The read policy: who may read what, from `config/genesis/access.toml` (optional,
//! read at every start like `bus.toml`; the built-in defaults are what a careful
//! operator would choose). Writes are the kernel's to allow; a principal's own
//! ledger (`/v1/ledger/me`) and its own tokens are always its own to read.

use std::path::Path;

use colony_config::{ConfigError, Source};
use colony_kernel::{PrincipalKind, Role};
use serde::Deserialize;

use crate::auth::Caller;

/// Who may read something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readers {
    /// Every principal whose token has the `read` scope (observers included).
    All,
    /// Admins and members (not observers).
    Members,
    /// Admins and human members.
    Humans,
    /// Admins only.
    Admins,
}

impl Readers {
    pub fn admits(self, caller: &Caller) -> bool {
        let admin = caller.roles.contains(&Role::Admin);
        let member = caller.roles.contains(&Role::Member);
        match self {
            Readers::All => true,
            Readers::Members => admin || member,
            Readers::Humans => admin || (member && caller.kind == PrincipalKind::Human),
            Readers::Admins => admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Readers::All => "all",
            Readers::Members => "members",
            Readers::Humans => "humans",
            Readers::Admins => "admins",
        }
    }

    /// Who they are, for a refusal.
    pub fn who(self) -> &'static str {
        match self {
            Readers::All => "every principal",
            Readers::Members => "admins and members",
            Readers::Humans => "admins and human members",
            Readers::Admins => "admins",
        }
    }
}

/// What each kind of record may be read by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadPolicy {
    /// The decision log (justifications, prompts when logged): others read the
    /// records of their own commands only.
    #[serde(default = "humans")]
    pub audit: Readers,
    /// Worker sessions (who holds which task).
    #[serde(default = "all")]
    pub workers: Readers,
    /// The supervisor's processes (pids, crashes).
    #[serde(default = "members")]
    pub supervisor: Readers,
    /// `/metrics`: every counter of the node.
    #[serde(default = "admins")]
    pub metrics: Readers,
    /// Proposals and votes.
    #[serde(default = "all")]
    pub proposals: Readers,
    /// The task board.
    #[serde(default = "all")]
    pub tasks: Readers,
    /// Principals (names, addresses, roles, quarantines).
    #[serde(default = "all")]
    pub principals: Readers,
    /// Requests for more (grants): who asked for what, who approved. Everyone else
    /// reads its own requests.
    #[serde(default = "all")]
    pub grants: Readers,
    /// Artifacts: their state, usage and logs.
    #[serde(default = "all")]
    pub artifacts: Readers,
}

fn all() -> Readers {
    Readers::All
}
fn members() -> Readers {
    Readers::Members
}
fn humans() -> Readers {
    Readers::Humans
}
fn admins() -> Readers {
    Readers::Admins
}

impl Default for ReadPolicy {
    fn default() -> Self {
        ReadPolicy {
            audit: humans(),
            workers: all(),
            supervisor: members(),
            metrics: admins(),
            proposals: all(),
            tasks: all(),
            principals: all(),
            grants: all(),
            artifacts: all(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    read: Option<ReadPolicy>,
}

impl ReadPolicy {
    /// `access.toml` in `dir`, or the defaults when there is none.
    pub fn load(dir: &Path) -> Result<ReadPolicy, ConfigError> {
        match crate::genesis::read_optional(dir, "access.toml")? {
            Some((file, text)) => ReadPolicy::parse(&file, &text),
            None => Ok(ReadPolicy::default()),
        }
    }

    pub fn parse(file: &Path, text: &str) -> Result<ReadPolicy, ConfigError> {
        let parsed: AccessFile = Source { file, text }.parse()?;
        Ok(parsed.read.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_holds_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/access.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            ReadPolicy::parse(&file, &text).unwrap(),
            ReadPolicy::default()
        );
    }

    #[test]
    fn the_file_sets_what_it_names_and_keeps_the_defaults() {
        let policy = ReadPolicy::parse(
            Path::new("access.toml"),
            "[read]\naudit = \"admins\"\nworkers = \"members\"\n",
        )
        .unwrap();
        assert_eq!(policy.audit, Readers::Admins);
        assert_eq!(policy.workers, Readers::Members);
        assert_eq!(policy.metrics, Readers::Admins);
        let error = ReadPolicy::parse(Path::new("access.toml"), "[read]\naudit = \"everyone\"\n")
            .unwrap_err();
        assert_eq!(error.line, Some(2), "{error:?}");
    }
}
