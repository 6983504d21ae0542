//! Genesis: the first command installs the limits, quotas, governance, task and
//! anomaly configuration, the system principal and the first admin.

use super::*;

impl State {
    pub(super) fn genesis(&mut self, command: &Command, genesis: &Genesis) -> Event {
        const ACTION: &str = "genesis";
        if self.is_initialized() {
            return Event::denied(ACTION, "kernel", invalid("genesis was already applied"));
        }
        if command.actor != PrincipalId::SYSTEM {
            return Event::denied(
                ACTION,
                "kernel",
                forbidden("only the system applies genesis"),
            );
        }
        if let Err(why) = genesis.retention.check() {
            return Event::denied(ACTION, "kernel", invalid(format!("retention: {why}")));
        }
        let set_via = format!("genesis ({})", genesis.source);
        let mut specs: BTreeMap<String, LimitSpec> = genesis
            .limits
            .iter()
            .map(|spec| (spec.name.clone(), spec.clone()))
            .collect();
        // A built-in limit that the configuration leaves out exists, unlimited, so
        // that governance can set it later and `colony limits` shows it.
        for builtin in BUILTIN_LIMITS {
            specs
                .entry(builtin.name.to_string())
                .or_insert_with(|| LimitSpec {
                    name: builtin.name.to_string(),
                    unit: builtin.unit.to_string(),
                    description: builtin.description.to_string(),
                    soft: None,
                    hard: None,
                    on_soft: OnSoft::Warn,
                    window_ms: builtin.default_window_ms,
                    queue_max: 1_000,
                    brake_floor: 0,
                });
        }
        for (name, spec) in specs {
            let limit = Limit::new(
                spec,
                SYSTEM_ADDRESS.to_string(),
                command.at_ms,
                set_via.clone(),
            );
            let name = LimitName::parse(&name).expect("genesis names built-in limits only");
            self.limits.add(name, limit);
        }
        self.quotas = genesis.quotas.clone();
        self.governance
            .configure(genesis.governance.clone(), command.at_ms);
        self.anomaly.configure(genesis.anomaly.clone());
        self.tasks.configure(genesis.tasks.clone());
        self.retention = genesis.retention.clone();
        let system = Principal {
            id: PrincipalId::SYSTEM,
            address: SYSTEM_ADDRESS.to_string(),
            name: "colony".to_string(),
            kind: PrincipalKind::System,
            roles: vec![Role::Admin],
            standing: true,
            parent: None,
            created_at_ms: command.at_ms,
            created_by: PrincipalId::SYSTEM,
            root: PrincipalId::SYSTEM,
            token_hash: [0; 32],
        };
        self.directory.enter(system.address.clone(), system.id);
        self.principals.add(system);
        self.principals.start_ids_at(1);
        let mut admin_request = CreatePrincipal::new(
            genesis.admin_name.clone(),
            PrincipalKind::Human,
            genesis.admin_token_hash,
        );
        admin_request.roles = vec![Role::Admin, Role::Member];
        admin_request.address = Some(ADMIN_ADDRESS.to_string());
        let admin = self.insert_principal(command, &admin_request);
        let mut event = Event::allowed(
            ACTION,
            "kernel",
            Effect::GenesisApplied {
                limits: self.limits.len(),
                admin: admin.clone(),
            },
        );
        event.subject = admin;
        event
    }
}
