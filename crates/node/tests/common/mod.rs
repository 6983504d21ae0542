//! Starting a real node for the node's integration tests.
#![allow(dead_code)]

use std::path::Path;

use colony_node::{Node, NodeConfig};

/// The shipped genesis files copied to a new directory, with some replaced.
pub fn genesis_dir(replaced: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in [
        "limits.toml",
        "quotas.toml",
        "governance.toml",
        "tasks.toml",
    ] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    for (file, text) in replaced {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    dir
}

/// A node on a free loopback port over `data`, with genesis from `config`.
pub fn node_config(data: &Path, config: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        config_dir: config.to_path_buf(),
        config_dir_required: true,
        ..NodeConfig::default()
    }
}

/// Starts a node; returns it with its base URL and the admin token.
pub async fn start(data: &Path, config: &Path) -> (Node, String, String) {
    let node = Node::start(node_config(data, config)).await.unwrap();
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let base = format!("http://{}", node.local_addr());
    (node, base, admin)
}
