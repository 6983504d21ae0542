//! Reaching the cluster's NATS servers (with the TLS and credentials of
//! `cluster.toml`), finding or creating the stream that holds the command log, and
//! where a node's data starts in it.

use std::sync::Arc;

use async_nats::jetstream;

use crate::config::{ClusterConfig, ENVELOPE_BYTES_MAX};
use crate::leader::Preferred;
use crate::ClusterError;

/// A client connected to one of the servers (waiting, bounded, for the first
/// connection); a reconnection goes where `preferred` says when it says
/// (`leader.rs`).
pub(crate) async fn connect(
    config: &ClusterConfig,
    preferred: Arc<Preferred>,
) -> Result<async_nats::Client, ClusterError> {
    let servers = config.servers.join(",");
    let addresses: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .filter_map(|url| url.parse().ok())
        .collect();
    let client = options(config)
        .await?
        .name(format!("colony {}", config.node_name))
        .connection_timeout(config.ack_timeout)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_to_server_callback(move |pool, _info| std::future::ready(preferred.pick(&pool)))
        .connect(addresses)
        .await
        .map_err(|error| ClusterError::Connect {
            servers: servers.clone(),
            message: error.to_string(),
        })?;
    // retry_on_initial_connect returns at once: wait (bounded) for the first one.
    let deadline = tokio::time::Instant::now() + config.ack_timeout * 2;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::Connect {
                servers,
                message: "no server answered".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(client)
}

/// The TLS and credentials of `cluster.toml`, for any connection of the node's.
pub(crate) async fn options(
    config: &ClusterConfig,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut options = async_nats::ConnectOptions::new();
    match &config.auth.credentials {
        Some(crate::config::NatsCredentials::CredsFile(path)) => {
            options = options.credentials_file(path).await.map_err(|error| {
                ClusterError::Config(format!(
                    "cluster.toml: credentials_file {}: {error}",
                    path.display()
                ))
            })?;
        }
        Some(crate::config::NatsCredentials::NkeySeed(seed)) => {
            options = options.nkey(seed.clone());
        }
        Some(crate::config::NatsCredentials::UserPassword(user, password)) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        None => {}
    }
    if let Some(ca) = &config.auth.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.auth.tls_client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.auth.require_tls {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// The command log's stream, created if it does not exist yet; a JetStream cluster
/// that has just started elects its leaders first, so creating is retried for up to
/// six `ack_timeout`s.
pub(crate) async fn command_stream(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<jetstream::stream::Stream, ClusterError> {
    let stream_error = |message: String| ClusterError::Stream {
        stream: config.stream.clone(),
        message,
    };
    // A JetStream cluster that has just started elects its leaders first.
    let deadline = tokio::time::Instant::now() + config.ack_timeout * 6;
    let stream = loop {
        let created = jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: config.stream.clone(),
                subjects: vec![config.commands_subject()],
                storage: jetstream::stream::StorageType::File,
                num_replicas: config.replicas,
                max_message_size: ENVELOPE_BYTES_MAX as i32,
                duplicate_window: std::time::Duration::from_secs(120),
                description: Some("Colony's command log: every node applies it in order".into()),
                ..Default::default()
            })
            .await;
        match created {
            Ok(stream) => break stream,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!("waiting for JetStream to take the stream: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(error) => return Err(stream_error(error.to_string())),
        }
    };
    Ok(stream)
}

/// Where this node's data left the stream: the next message to read, the
/// commands of it already applied (a node stopped in the middle of a message), and
/// the node's last command. Refuses data that is not a cluster's, that the stream
/// no longer holds the continuation of (compacted), or that is ahead of the stream.
pub(crate) fn where_to_start(
    state: &std::sync::RwLock<colony_kernel::State>,
    stream: &jetstream::stream::State,
    config: &ClusterConfig,
) -> Result<(u64, u16, u64), ClusterError> {
    let (place, local) = {
        let state = state.read().expect("state lock");
        (state.log_place(), state.last_seq)
    };
    if place.is_none() && local > 0 {
        return Err(ClusterError::NotClusterData { commands: local });
    }
    let (next_message, skip) = place.map_or((1, 0), |place| place.next());
    let applied_message = place.map_or(0, |place| place.message);
    if stream.last_sequence > 0 && next_message < stream.first_sequence {
        return Err(ClusterError::Compacted {
            local: applied_message,
            stream: config.stream.clone(),
            stream_first: stream.first_sequence,
        });
    }
    if applied_message > stream.last_sequence {
        return Err(ClusterError::DataAhead {
            local: applied_message,
            stream: config.stream.clone(),
            stream_last: stream.last_sequence,
        });
    }
    Ok((next_message, skip, local))
}
