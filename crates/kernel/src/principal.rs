//! Principals: the humans, AIs, artifacts and nodes that act in Colony.

use serde::{Deserialize, Serialize};

/// A principal's number, assigned by the kernel in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PrincipalId(pub u64);

impl PrincipalId {
    /// Colony itself: the actor of genesis, time ticks and automatic decisions.
    pub const SYSTEM: PrincipalId = PrincipalId(0);
    /// The first human, created at genesis with the admin role.
    pub const ADMIN: PrincipalId = PrincipalId(1);
}

impl std::fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// SHA-256 of a bearer token. The kernel never sees tokens, only their hashes.
pub type TokenHash = [u8; 32];

/// What a principal is. Humans live under address `1.`, AIs under `2.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    Human,
    Ai,
    Artifact,
    Node,
    System,
}

impl PrincipalKind {
    /// Every kind, in order.
    pub const ALL: [PrincipalKind; 5] = [
        PrincipalKind::Human,
        PrincipalKind::Ai,
        PrincipalKind::Artifact,
        PrincipalKind::Node,
        PrincipalKind::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Human => "human",
            PrincipalKind::Ai => "ai",
            PrincipalKind::Artifact => "artifact",
            PrincipalKind::Node => "node",
            PrincipalKind::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<PrincipalKind> {
        PrincipalKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// The address prefix under which principals of this kind are numbered
    /// (HYPERNET.md: 1 people, 2 AI; 0 is the system's own space).
    pub fn address_prefix(self) -> &'static str {
        match self {
            PrincipalKind::Human => "1",
            PrincipalKind::Ai => "2",
            PrincipalKind::Artifact => "3",
            PrincipalKind::Node => "0.2",
            PrincipalKind::System => "0",
        }
    }
}

/// What a principal may do. Admins manage principals; members act for themselves;
/// observers only read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Observer => "observer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Member, Role::Observer]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A human, AI, artifact or node known to the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub id: PrincipalId,
    pub address: String,
    pub name: String,
    pub kind: PrincipalKind,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
    /// Whether the principal may act and hold resources. Removal takes it away.
    pub standing: bool,
    /// The principal whose quotas bound this one's (quotas nest like cgroups).
    pub parent: Option<PrincipalId>,
    pub created_at_ms: u64,
    pub created_by: PrincipalId,
    /// The root of its lineage: the nearest principal in its ancestry (itself
    /// included) that an admin or genesis created. A root and everything it spawned
    /// count as one participant wherever sides or people are counted (votes and
    /// quorums, brake confirmation, two-sided grant approval, quarantine release), on
    /// the side of the root's kind. Fixed at creation.
    pub root: PrincipalId,
    pub token_hash: TokenHash,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Admins and members may change state; observers only read.
    pub fn may_act(&self) -> bool {
        self.kind == PrincipalKind::System
            || self.has_role(Role::Admin)
            || self.has_role(Role::Member)
    }

    pub fn is_admin(&self) -> bool {
        self.kind == PrincipalKind::System || self.has_role(Role::Admin)
    }
}
