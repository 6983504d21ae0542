//! Deploying, starting and stopping artifacts; what removing one gives back.

use super::*;
use crate::artifacts::{
    check_digest, check_name, Artifact, NewArtifact, ARTIFACTS_PER_DEPLOYER_MAX, ARTIFACT_BYTES_MAX,
};

/// The part of the state that holds the deployed artifacts' records, by their
/// principal. It encodes as the map the state held before it had parts: a
/// snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Deployed {
    by_principal: BTreeMap<PrincipalId, Artifact>,
}

impl Deployed {
    pub(super) fn get(&self, principal: PrincipalId) -> Option<&Artifact> {
        self.by_principal.get(&principal)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Artifact> {
        self.by_principal.values()
    }

    /// Artifact `principal` is to run, or not.
    fn set_run(&mut self, principal: PrincipalId, run: bool) {
        if let Some(artifact) = self.by_principal.get_mut(&principal) {
            artifact.run = run;
        }
    }

    fn add(&mut self, artifact: Artifact) {
        self.by_principal.insert(artifact.principal, artifact);
    }

    fn remove(&mut self, principal: PrincipalId) -> Option<Artifact> {
        self.by_principal.remove(&principal)
    }
}

impl State {
    /// A deploy, decided whole: the artifact principal is created under the actor,
    /// the module's bytes charged to the actor's `disk_bytes` (and counted toward
    /// `data_creation_bytes`), its own quotas set, and the record kept; or nothing.
    pub(super) fn deploy_artifact(
        &mut self,
        command: &Command,
        actor_address: &str,
        new: &NewArtifact,
    ) -> Event {
        const ACTION: &str = "artifact.deploy";
        let deployer = command.actor;
        if let Err(message) = check_name(&new.name).and_then(|()| check_digest(&new.digest)) {
            return Event::denied(ACTION, actor_address, invalid(message));
        }
        if new.bytes == 0 || new.bytes > ARTIFACT_BYTES_MAX {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!(
                    "a module is 1 to {ARTIFACT_BYTES_MAX} bytes, not {}",
                    new.bytes
                )),
            );
        }
        let live = self
            .artifacts
            .all()
            .filter(|artifact| artifact.deployer == deployer)
            .count();
        if live >= ARTIFACTS_PER_DEPLOYER_MAX {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!(
                    "a principal deploys at most {ARTIFACTS_PER_DEPLOYER_MAX} artifacts; stop and remove one first"
                )),
            );
        }
        let mut seen = Vec::new();
        for (resource, amount) in &new.quotas {
            if seen.contains(resource) {
                return Event::denied(
                    ACTION,
                    actor_address,
                    invalid(format!("{resource} is given twice")),
                );
            }
            seen.push(*resource);
            let own = self.book.balance(deployer, *resource).and_then(|b| b.quota);
            if let Some(own) = own.filter(|own| amount > own) {
                return Event::denied(
                    ACTION,
                    actor_address,
                    invalid(format!(
                        "cannot give an artifact {amount} {resource}: {actor_address}'s own quota is {own}"
                    )),
                );
            }
        }
        // Everything that can refuse is checked before anything changes.
        let chain = self.chain(deployer);
        if let Err(reason) = self.check_chain(&chain, Resource::DiskBytes, new.bytes) {
            return Event::denied(ACTION, actor_address, reason);
        }
        if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
            limit.roll_window(self.now_ms);
            if let Gate::Deny(reason) = limit.gate(new.bytes) {
                return Event::denied(ACTION, actor_address, reason);
            }
        }
        let request = CreatePrincipal {
            name: new.name.clone(),
            kind: PrincipalKind::Artifact,
            roles: Vec::new(),
            token_hash: new.token_hash,
            parent: Some(deployer),
            address: None,
            priority: crate::Priority::Normal,
            scopes: Vec::new(),
        };
        let created = self.create_principal_as(command, &request, None, false);
        let Effect::PrincipalCreated { id, address, .. } = created.effect else {
            return Event {
                action: ACTION,
                ..created
            };
        };
        let _ = self.count_kept_bytes(new.bytes, true);
        for member in &chain {
            if let Some(balance) = self.book.balance_mut(*member, Resource::DiskBytes) {
                balance.used = balance.used.saturating_add(new.bytes);
            }
        }
        for (resource, amount) in &new.quotas {
            self.book.balance_or_new(id, *resource).quota = Some(*amount);
        }
        self.artifacts.add(Artifact {
            principal: id,
            address: address.clone(),
            name: new.name.clone(),
            digest: new.digest.clone(),
            bytes: new.bytes,
            deployer,
            run: new.run,
            deployed_at_ms: command.at_ms,
        });
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::ArtifactDeployed {
                id,
                address,
                digest: new.digest.clone(),
            },
        )
        .with_warnings(created.warnings)
    }

    /// Starts or stops an artifact: its deployer, an ancestor of it, or an admin.
    pub(super) fn set_artifact_run(
        &mut self,
        command: &Command,
        artifact: PrincipalId,
        run: bool,
    ) -> Event {
        let action = command.body.name();
        let Some(record) = self.artifacts.get(artifact) else {
            return Event::denied(
                action,
                artifact.to_string(),
                not_found("artifact", artifact),
            );
        };
        let address = record.address.clone();
        let actor_is_admin = self.principals.known(command.actor).is_admin();
        if !actor_is_admin && !self.chain(artifact).contains(&command.actor) {
            return Event::denied(
                action,
                address,
                forbidden(
                    "an artifact is started and stopped by its deployer, an ancestor, or an admin",
                ),
            );
        }
        self.artifacts.set_run(artifact, run);
        Event::allowed(
            action,
            address.clone(),
            Effect::ArtifactRun { address, run },
        )
    }

    /// A removed artifact's module no longer takes its deployer's disk.
    pub(super) fn forget_artifact(&mut self, principal: PrincipalId) {
        let Some(artifact) = self.artifacts.remove(principal) else {
            return;
        };
        for member in self.chain(artifact.deployer) {
            if let Some(balance) = self.book.balance_mut(member, Resource::DiskBytes) {
                balance.used = balance.used.saturating_sub(artifact.bytes);
            }
        }
    }

    /// Every artifact, by principal.
    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        self.artifacts.all()
    }

    /// One artifact, by its principal.
    pub fn artifact(&self, principal: PrincipalId) -> Option<&Artifact> {
        self.artifacts.get(principal)
    }
}
