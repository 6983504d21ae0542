//! `colony cluster show|admit|remove`: a cluster's nodes, and which of them may write
//! its log (every command a node proposes is signed with its key; the keys are
//! admitted by admins, each admission a logged decision).

use std::process::ExitCode;

use clap::Subcommand;
use colony_api::cluster::{ClusterView, NodeKeyRequest};

use crate::commands::{get, post};
use crate::output::rows;
use crate::{Change, Remote};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// This node's view: its key, the admitted nodes, the nodes heard from.
    Show {
        #[command(flatten)]
        remote: Remote,
    },
    /// Admit a node's key (its node.pub, printed by `colony up`): its commands are
    /// applied from then on. Admins only.
    Admit {
        /// The node's name (`--node-name`).
        name: String,
        /// Standard base64 of its Ed25519 public key.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Remove a node's key: its commands are refused from then on (never the last).
    Remove {
        #[arg(long)]
        key: String,
        #[command(flatten)]
        change: Change,
    },
}

fn show(view: &ClusterView) {
    println!(
        "{} node{}; this node's key {}",
        view.mode,
        view.node
            .as_ref()
            .map(|name| format!(" {name}"))
            .unwrap_or_default(),
        view.public_key
    );
    if view.admitted.is_empty() {
        println!("no admitted nodes (an embedded node signs no commands)");
        return;
    }
    rows(
        &["NODE", "KEY", "ADMITTED", "BY", "HIGHEST"],
        &view.admitted,
        |node| {
            vec![
                node.name.clone(),
                node.public_key.clone(),
                node.admitted_at.clone(),
                node.admitted_by.clone(),
                node.highest_seq.to_string(),
            ]
        },
    );
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Show { remote } => get(&remote, "/v1/cluster", show).await,
        ClusterCommand::Admit { name, key, change } => {
            let body = NodeKeyRequest {
                name: Some(name),
                public_key: key,
                justification: Some(change.justification.clone()),
            };
            post(&change.remote, "/v1/cluster/nodes", &body, show).await
        }
        ClusterCommand::Remove { key, change } => {
            let body = NodeKeyRequest {
                name: None,
                public_key: key,
                justification: Some(change.justification.clone()),
            };
            post(&change.remote, "/v1/cluster/nodes/remove", &body, show).await
        }
    }
}
