//! Who may publish and subscribe to which subjects.
//!
//! - Everyone may publish and subscribe under its own `agents.<address>.>`.
//! - Everyone may publish to another principal's inbox: `agents.<address>.inbox`
//!   and below (`agents.<address>.inbox.>`, where request-reply answers go).
//! - Roles grant more (`bus.toml`, `[roles.<role>]`); by default admins may use every
//!   subject, members `work.>` and `public.>`, observers only read.
//! - `colony.>` is the system's: nobody else publishes there.

use colony_kernel::subject::{covers, matches};
use colony_kernel::Role;

use super::config::BusConfig;

/// Why an action is not allowed, for the client.
pub fn may_publish(
    config: &BusConfig,
    address: &str,
    roles: &[Role],
    subject: &str,
) -> Result<(), String> {
    if subject == "colony" || subject.starts_with("colony.") {
        return Err(format!(
            "{subject} is under colony.>, where only the system publishes"
        ));
    }
    if own_subject(address, subject) || is_inbox(subject) {
        return Ok(());
    }
    for role in roles {
        if let Some(grants) = config.grants.get(role) {
            if grants
                .publish
                .iter()
                .any(|pattern| matches(pattern, subject))
            {
                return Ok(());
            }
        }
    }
    Err(format!(
        "{address} may not publish to {subject}: its own subjects are agents.{address}.>, \
         any agent's inbox is agents.<address>.inbox, and its roles grant {}",
        granted(config, roles, |g| &g.publish)
    ))
}

pub fn may_subscribe(
    config: &BusConfig,
    address: &str,
    roles: &[Role],
    pattern: &str,
) -> Result<(), String> {
    if covers(&format!("agents.{address}.>"), pattern) {
        return Ok(());
    }
    for role in roles {
        if let Some(grants) = config.grants.get(role) {
            if grants.subscribe.iter().any(|outer| covers(outer, pattern)) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "{address} may not subscribe to {pattern}: its own subjects are agents.{address}.>, \
         and its roles grant {}",
        granted(config, roles, |g| &g.subscribe)
    ))
}

fn own_subject(address: &str, subject: &str) -> bool {
    subject
        .strip_prefix("agents.")
        .and_then(|rest| rest.strip_prefix(address))
        .is_some_and(|rest| rest.starts_with('.'))
}

/// `agents.<address>.inbox[.…]` where the address is all-digit tokens.
fn is_inbox(subject: &str) -> bool {
    let Some(rest) = subject.strip_prefix("agents.") else {
        return false;
    };
    for (address_tokens, token) in rest.split('.').enumerate() {
        if token == "inbox" {
            return address_tokens > 0;
        }
        if !token.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    false
}

fn granted(
    config: &BusConfig,
    roles: &[Role],
    pick: impl Fn(&super::config::Grants) -> &Vec<String>,
) -> String {
    let patterns: Vec<&str> = roles
        .iter()
        .filter_map(|role| config.grants.get(role))
        .flat_map(|g| pick(g).iter().map(String::as_str))
        .collect();
    if patterns.is_empty() {
        "nothing more".into()
    } else {
        patterns.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_table() {
        let config = BusConfig::default();
        let member = [Role::Member];
        let table: &[(&str, &[Role], &str, bool)] = &[
            ("2.7", &member, "agents.2.7.notes", true),
            ("2.7", &member, "agents.2.7.inbox", true),
            ("2.7", &member, "agents.2.8.inbox", true),
            ("2.7", &member, "agents.0.4.12.inbox.reply-1", true),
            ("2.7", &member, "agents.2.8.notes", false),
            ("2.7", &member, "agents.2.70.notes", false),
            ("2.7", &member, "agents.x.inbox", false),
            ("2.7", &member, "agents.inbox", false),
            ("2.7", &member, "work.code.review", true),
            ("2.7", &member, "secret.plans", false),
            ("2.7", &[], "work.code.review", false),
            ("2.7", &[Role::Observer], "public.chat", false),
            ("1.1", &[Role::Admin], "anything.at.all", true),
            ("1.1", &[Role::Admin], "colony.events.decision.x", false),
        ];
        for &(address, roles, subject, expected) in table {
            assert_eq!(
                may_publish(&config, address, roles, subject).is_ok(),
                expected,
                "{address} {roles:?} publish {subject}"
            );
        }
    }

    #[test]
    fn subscribe_table() {
        let config = BusConfig::default();
        let table: &[(&str, &[Role], &str, bool)] = &[
            ("2.7", &[Role::Member], "agents.2.7.>", true),
            ("2.7", &[Role::Member], "agents.2.7.inbox", true),
            ("2.7", &[Role::Member], "agents.2.8.inbox", false),
            ("2.7", &[Role::Member], "agents.*.*.inbox", false),
            ("2.7", &[Role::Member], "agents.>", false),
            ("2.7", &[Role::Member], "colony.events.>", true),
            ("2.7", &[Role::Member], "colony.dlq.>", false),
            ("2.7", &[Role::Member], "work.*.review", true),
            ("2.7", &[Role::Member], ">", false),
            ("2.7", &[Role::Observer], "public.>", true),
            ("2.7", &[Role::Observer], "work.>", false),
            ("1.1", &[Role::Admin], ">", true),
        ];
        for &(address, roles, pattern, expected) in table {
            assert_eq!(
                may_subscribe(&config, address, roles, pattern).is_ok(),
                expected,
                "{address} {roles:?} subscribe {pattern}"
            );
        }
    }
}
