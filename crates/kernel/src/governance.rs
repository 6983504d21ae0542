//! Governance: limits change by fair human+AI consensus, and either side can slow
//! things down at once.
//!
//! - A **brake** (a proposal that only lowers values) applies at once, by one human or
//!   AI with standing.
//! - A **raise** or **removal** (or a higher quota default) enters a review period.
//!   Humans and AIs vote `approve`, `reject`, `abstain` or `veto`; when the period
//!   ends, it passes only if each side reached its own quorum (votes cast) and its own
//!   approval threshold (approvals over approvals plus rejections). A veto by an
//!   allowed role ends it at once.
//! - **Progressive relaxation**: at the end of every stability window the kernel
//!   compares the window's figures (denial rate, the node's error rate, anomalies)
//!   with the configured maxima. While stable, it proposes a raise itself; after any
//!   raise it watches a monitoring window and rolls the change back if stability
//!   degrades, recording the figures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::Resource;
use crate::principal::{PrincipalId, PrincipalKind, Role};

/// An exact fraction, for thresholds and steps (`2/3`, `10/100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    pub numerator: u64,
    pub denominator: u64,
}

impl Ratio {
    pub const fn new(numerator: u64, denominator: u64) -> Ratio {
        Ratio {
            numerator,
            denominator,
        }
    }

    /// Whether `part / whole` is at least this ratio (exactly, in integers).
    pub fn reached_by(self, part: u64, whole: u64) -> bool {
        (part as u128) * (self.denominator as u128) >= (self.numerator as u128) * (whole as u128)
    }

    /// Whether `part / whole` is above this ratio.
    pub fn exceeded_by(self, part: u64, whole: u64) -> bool {
        (part as u128) * (self.denominator as u128) > (self.numerator as u128) * (whole as u128)
    }

    /// `value * ratio`, rounded down.
    pub fn of(self, value: u64) -> u64 {
        ((value as u128) * (self.numerator as u128) / (self.denominator.max(1) as u128)) as u64
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

/// What kind of change a proposal makes; rules are per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only lowers: applies at once.
    Brake,
    /// Raises a soft or hard value.
    Raise,
    /// Makes the hard value unlimited.
    Remove,
    /// Raises a per-kind quota default.
    QuotaDefault,
    /// Changes how long finished tasks stay in the live state (either way: keeping
    /// more costs memory, keeping fewer sends reads to the archive sooner).
    Retention,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Brake => "brake",
            ChangeKind::Raise => "raise",
            ChangeKind::Remove => "remove",
            ChangeKind::QuotaDefault => "quota_default",
            ChangeKind::Retention => "retention",
        }
    }
}

/// How a kind of change is voted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRule {
    /// Votes (approve, reject or abstain) the human side must cast.
    pub human_quorum: u32,
    pub ai_quorum: u32,
    /// Approvals over approvals plus rejections, per side.
    pub human_approval: Ratio,
    pub ai_approval: Ratio,
    /// Roles whose `veto` blocks the proposal at once; empty: no veto.
    pub veto_roles: Vec<Role>,
    /// Review period of this kind, if not the default.
    pub review_period_ms: Option<u64>,
}

/// When the system counts as stable, and how it relaxes limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaxationConfig {
    /// Length of a stability window.
    pub window_ms: u64,
    /// Fewer decisions than this in a window proves nothing: no proposal.
    pub min_decisions: u64,
    pub max_denial_rate: Ratio,
    pub max_error_rate: Ratio,
    pub max_anomalies: u64,
    /// How much a proposal raises a limit: `value + max(1, value * step)`.
    pub step: Ratio,
    /// How long a raise is watched after it applies.
    pub monitoring_window_ms: u64,
    /// Limits the system may propose to relax.
    pub limits: Vec<String>,
    /// Whether the system proposes raises by itself (monitoring happens either way).
    pub propose: bool,
}

/// The `[governance]` section of the genesis configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceConfig {
    pub review_period_ms: u64,
    /// Roles that may brake (any human or AI with standing and one of these roles).
    pub brake_roles: Vec<Role>,
    /// How long a brake holds unless the other side confirms it (a vote approving
    /// the brake's proposal): then the earlier values come back by themselves.
    /// `None`: brakes hold until changed.
    pub brake_ttl_ms: Option<u64>,
    /// Brakes one principal may apply in any hour, so that nobody can flap limits.
    pub brakes_per_hour_max: u32,
    /// Proposals one principal may have in review at once.
    pub open_proposals_per_principal_max: u32,
    pub rules: BTreeMap<ChangeKind, VoteRule>,
    pub relaxation: Option<RelaxationConfig>,
    /// Who approves requests for more (`[governance.grants]`).
    #[serde(default)]
    pub grants: crate::grants::GrantRules,
}

/// The shipped defaults: what the empty state holds until genesis installs
/// `[governance]`.
impl Default for GovernanceConfig {
    fn default() -> GovernanceConfig {
        GovernanceConfig::defaults()
    }
}

impl GovernanceConfig {
    /// The shipped defaults: a raise needs at least one human and one AI voting and
    /// two thirds approval on each side; a removal needs two of each, three quarters,
    /// and a review three times as long.
    pub fn defaults() -> GovernanceConfig {
        let mut rules = BTreeMap::new();
        let raise = VoteRule {
            human_quorum: 1,
            ai_quorum: 1,
            human_approval: Ratio::new(2, 3),
            ai_approval: Ratio::new(2, 3),
            veto_roles: vec![Role::Admin],
            review_period_ms: None,
        };
        rules.insert(ChangeKind::Raise, raise.clone());
        rules.insert(ChangeKind::QuotaDefault, raise.clone());
        rules.insert(ChangeKind::Retention, raise.clone());
        rules.insert(
            ChangeKind::Remove,
            VoteRule {
                human_quorum: 2,
                ai_quorum: 2,
                human_approval: Ratio::new(3, 4),
                ai_approval: Ratio::new(3, 4),
                review_period_ms: Some(3 * 86_400_000),
                ..raise
            },
        );
        GovernanceConfig {
            review_period_ms: 86_400_000,
            brake_roles: vec![Role::Admin, Role::Member],
            brake_ttl_ms: Some(3_600_000),
            brakes_per_hour_max: 6,
            open_proposals_per_principal_max: 8,
            rules,
            relaxation: None,
            grants: crate::grants::GrantRules::default(),
        }
    }

    pub fn rule(&self, kind: ChangeKind) -> Option<&VoteRule> {
        self.rules.get(&kind)
    }
}

/// A new value for a soft or hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Keep,
    Set(u64),
    Unlimited,
}

impl Change {
    /// The value after the change, from `current`.
    pub fn applied_to(self, current: Option<u64>) -> Option<u64> {
        match self {
            Change::Keep => current,
            Change::Set(value) => Some(value),
            Change::Unlimited => None,
        }
    }
}

/// What a proposal changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalTarget {
    Limit {
        limit: String,
        soft: Change,
        hard: Change,
    },
    QuotaDefault {
        kind: PrincipalKind,
        resource: Resource,
        amount: Change,
    },
    /// A new retention rule for finished tasks (`retention.toml`'s `[tasks]`).
    Retention(crate::retention::RetentionConfig),
}

impl ProposalTarget {
    /// What the proposal's decisions name as their subject.
    pub fn subject(&self) -> String {
        match self {
            ProposalTarget::Limit { limit, .. } => limit.clone(),
            ProposalTarget::QuotaDefault { kind, resource, .. } => {
                format!("quota:{}.{}", kind.as_str(), resource)
            }
            ProposalTarget::Retention(_) => "retention:tasks".to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for the review period to end.
    Review,
    Applied,
    Rejected,
    Vetoed,
    RolledBack,
    /// A brake whose time ran out before the other side confirmed it.
    Expired,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Review => "review",
            ProposalState::Applied => "applied",
            ProposalState::Rejected => "rejected",
            ProposalState::Vetoed => "vetoed",
            ProposalState::RolledBack => "rolled_back",
            ProposalState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<ProposalState> {
        [
            ProposalState::Review,
            ProposalState::Applied,
            ProposalState::Rejected,
            ProposalState::Vetoed,
            ProposalState::RolledBack,
            ProposalState::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteChoice {
    Approve,
    Reject,
    Abstain,
    Veto,
}

impl VoteChoice {
    pub fn parse(text: &str) -> Option<VoteChoice> {
        match text {
            "approve" => Some(VoteChoice::Approve),
            "reject" => Some(VoteChoice::Reject),
            "abstain" => Some(VoteChoice::Abstain),
            "veto" => Some(VoteChoice::Veto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VoteChoice::Approve => "approve",
            VoteChoice::Reject => "reject",
            VoteChoice::Abstain => "abstain",
            VoteChoice::Veto => "veto",
        }
    }
}

/// Which side of the consensus a voter is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Human,
    Ai,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Human => "human",
            Side::Ai => "ai",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub choice: VoteChoice,
    /// The side of the voter's lineage (its root's kind), not of the voter itself.
    pub side: Side,
    /// Who cast it.
    pub address: String,
    /// The root of the voter's lineage: one vote per root.
    pub root: PrincipalId,
    /// The root's address.
    pub lineage: String,
    pub justification: String,
    pub at_ms: u64,
}

impl Vote {
    /// The vote `command` casts for the lineage rooted at `root`, on `side`.
    pub(crate) fn cast(
        command: &crate::command::Command,
        voter: &crate::principal::Principal,
        lineage: &str,
        choice: VoteChoice,
        side: Side,
    ) -> Vote {
        Vote {
            choice,
            side,
            address: voter.address.clone(),
            root: voter.root,
            lineage: lineage.to_string(),
            justification: command.justification.clone(),
            at_ms: command.at_ms,
        }
    }
}

/// Votes of one side, against its rule: one per lineage (a root and everything it
/// spawned count once).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideTally {
    pub approve: u64,
    pub reject: u64,
    pub abstain: u64,
    pub quorum: u64,
    pub approval: String,
    pub quorum_met: bool,
    pub approval_met: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub human: SideTally,
    pub ai: SideTally,
}

impl Tally {
    /// Counts the first vote of each lineage (the kernel refuses a second one, so
    /// there is never more than one).
    pub fn count(votes: &BTreeMap<PrincipalId, Vote>, rule: &VoteRule) -> Tally {
        let mut roots = std::collections::BTreeSet::new();
        let counted: Vec<&Vote> = votes
            .values()
            .filter(|vote| roots.insert(vote.root))
            .collect();
        let side = |which: Side, quorum: u32, approval: Ratio| {
            let mut tally = SideTally {
                quorum: quorum as u64,
                approval: approval.to_string(),
                ..SideTally::default()
            };
            for vote in counted.iter().filter(|vote| vote.side == which) {
                match vote.choice {
                    VoteChoice::Approve => tally.approve += 1,
                    VoteChoice::Reject => tally.reject += 1,
                    VoteChoice::Abstain => tally.abstain += 1,
                    VoteChoice::Veto => {}
                }
            }
            tally.quorum_met = tally.approve + tally.reject + tally.abstain >= tally.quorum;
            tally.approval_met = tally.approve > 0
                && approval.reached_by(tally.approve, tally.approve + tally.reject);
            tally
        };
        Tally {
            human: side(Side::Human, rule.human_quorum, rule.human_approval),
            ai: side(Side::Ai, rule.ai_quorum, rule.ai_approval),
        }
    }

    pub fn passes(&self) -> bool {
        self.human.quorum_met
            && self.human.approval_met
            && self.ai.quorum_met
            && self.ai.approval_met
    }
}

/// Figures of one stability window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StabilityFigures {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// Commands of principals (not the system's own) and how many were denied.
    pub decisions: u64,
    pub denials: u64,
    /// HTTP requests and server errors, reported by the node.
    pub requests: u64,
    pub errors: u64,
    /// Authentication failures and requests refused at the edge, reported by the node.
    pub anomalies: u64,
}

impl StabilityFigures {
    /// Which thresholds these figures break, as text; empty when stable.
    pub fn breaches(&self, config: &RelaxationConfig) -> Vec<String> {
        let mut breaches = Vec::new();
        if config
            .max_denial_rate
            .exceeded_by(self.denials, self.decisions.max(1))
        {
            breaches.push(format!(
                "denial rate {}/{} above {}",
                self.denials, self.decisions, config.max_denial_rate
            ));
        }
        if config
            .max_error_rate
            .exceeded_by(self.errors, self.requests.max(1))
        {
            breaches.push(format!(
                "error rate {}/{} above {}",
                self.errors, self.requests, config.max_error_rate
            ));
        }
        if self.anomalies > config.max_anomalies {
            breaches.push(format!(
                "{} anomalies, more than {}",
                self.anomalies, config.max_anomalies
            ));
        }
        breaches
    }
}

/// A proposed change and everything that happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposals are numbered from 1 in the order they are made.
    pub id: u64,
    pub proposer: PrincipalId,
    pub proposer_address: String,
    pub kind: ChangeKind,
    pub target: ProposalTarget,
    pub justification: String,
    pub created_at_ms: u64,
    pub review_ends_at_ms: u64,
    pub state: ProposalState,
    pub votes: BTreeMap<PrincipalId, Vote>,
    /// Why it ended as it did.
    pub outcome: Option<String>,
    pub tally: Option<Tally>,
    pub decided_at_ms: Option<u64>,
    /// The values before it applied: `(soft, hard)` of a limit, or `(amount, _)` of a
    /// quota default. A rollback restores them (never loosening anything).
    pub previous: Option<(Option<u64>, Option<u64>)>,
    /// Watched for degradation until then, after it applied.
    pub monitor_until_ms: Option<u64>,
    /// Made by the system itself (progressive relaxation).
    pub automatic: bool,
    /// A brake not yet confirmed by the other side: when its values go back.
    pub brake_expires_at_ms: Option<u64>,
    /// The values a brake put in force (restored only where still in force).
    pub applied: Option<(Option<u64>, Option<u64>)>,
    /// Who confirmed a brake (the other side's approving vote).
    pub confirmed_by: Option<String>,
}
