//! What kind of change a proposal makes (a brake, a raise, a removal, a quota
//! default, a retention rule), checked against the values in force: the kind picks
//! the vote rule in `governance.rs`.

use super::governance::*;
use super::{invalid, not_found, State};
use crate::event::Reason;
use crate::governance::{ChangeKind, ProposalTarget};
use crate::principal::PrincipalKind;

impl State {
    /// Whether a change only tightens (a brake) or what it loosens; validates it.
    pub(super) fn classify(&self, target: &ProposalTarget) -> Result<ChangeKind, Reason> {
        match target {
            ProposalTarget::Limit { limit, soft, hard } => {
                let Some(current) = self.limit(limit) else {
                    return Err(not_found("limit", limit));
                };
                let (soft_now, hard_now) = (current.spec.soft, current.spec.hard);
                let (soft_new, hard_new) = (soft.applied_to(soft_now), hard.applied_to(hard_now));
                if let (Some(soft_value), Some(hard_value)) = (soft_new, hard_new) {
                    if soft_value > hard_value {
                        return Err(invalid(format!(
                            "soft ({soft_value}) would be above hard ({hard_value})"
                        )));
                    }
                }
                if (soft_new, hard_new) == (soft_now, hard_now) {
                    return Err(invalid(format!("{limit} already has these values")));
                }
                Ok(
                    if !looser(soft_new, soft_now) && !looser(hard_new, hard_now) {
                        ChangeKind::Brake
                    } else if hard_new.is_none() && hard_now.is_some() {
                        ChangeKind::Remove
                    } else {
                        ChangeKind::Raise
                    },
                )
            }
            ProposalTarget::QuotaDefault {
                kind,
                resource,
                amount,
            } => {
                if *kind == PrincipalKind::System {
                    return Err(invalid("the system has no quotas"));
                }
                let current = self.quotas.default_quota(*kind, *resource);
                let new = amount.applied_to(current);
                if new == current {
                    return Err(invalid("the default already has this value"));
                }
                Ok(if looser(new, current) {
                    ChangeKind::QuotaDefault
                } else {
                    ChangeKind::Brake
                })
            }
            ProposalTarget::Retention(rule) => {
                rule.check().map_err(invalid)?;
                if self.retention == *rule {
                    return Err(invalid("the retention rule already has these values"));
                }
                Ok(ChangeKind::Retention)
            }
        }
    }
}
