//! Delivering alerts to webhooks: one bounded queue and one task per webhook, so a
//! slow or failing receiver delays only its own deliveries; each body signed with
//! HMAC-SHA256; failures retried with doubling backoff; what never arrives kept as a
//! dead letter (in memory, the latest few, and appended to a file).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::{Format, WebhookConfig};

/// Deliveries waiting per webhook; past it a delivery is a dead letter at once.
pub const WEBHOOK_QUEUE_MAX: usize = 1_024;
/// Dead letters kept in memory (the file keeps more).
pub const DEAD_LETTERS_KEPT: usize = 256;
/// The dead-letter file grows to this size at most; past it, dead letters are only
/// kept in memory (and logged).
pub const DEAD_LETTER_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The header carrying `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-colony-signature";

/// One alert to deliver.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `alert-<id>` or `report-<until_ms>` (also sent as `X-Colony-Delivery`, for
    /// receivers to drop repeats: a delivery may arrive more than once).
    pub id: String,
    /// The JSON body for `format = "json"`.
    pub json: String,
    /// One line a person reads (Slack's `text`).
    pub text: String,
}

/// A delivery that never arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub delivery: String,
    /// The webhook's scheme and host (its path may be a secret).
    pub webhook: String,
    pub attempts: u32,
    pub error: String,
    pub at_ms: u64,
    pub body: String,
}

struct DeadLetters {
    kept: Mutex<VecDeque<DeadLetter>>,
    file: Option<PathBuf>,
}

impl DeadLetters {
    fn add(&self, letter: DeadLetter) {
        tracing::warn!(
            webhook = %letter.webhook,
            delivery = %letter.delivery,
            attempts = letter.attempts,
            "an alert was not delivered: {}",
            letter.error
        );
        if let Some(file) = &self.file {
            if let Err(error) = append(file, &letter) {
                tracing::warn!("cannot keep a dead letter in {}: {error}", file.display());
            }
        }
        let mut kept = self.kept.lock().expect("dead letters lock");
        if kept.len() == DEAD_LETTERS_KEPT {
            kept.pop_front();
        }
        kept.push_back(letter);
    }
}

fn append(file: &std::path::Path, letter: &DeadLetter) -> std::io::Result<()> {
    let size = std::fs::metadata(file).map_or(0, |m| m.len());
    if size >= DEAD_LETTER_FILE_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "the file holds its maximum of {DEAD_LETTER_FILE_BYTES_MAX} bytes"
        )));
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_string(letter).map_err(std::io::Error::other)?;
    line.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(line.as_bytes())
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The webhooks alerts go to.
pub struct Webhooks {
    queues: Vec<(String, mpsc::Sender<Delivery>)>,
    dead: Arc<DeadLetters>,
    now_ms: fn() -> u64,
}

impl Webhooks {
    /// Starts one delivery task per webhook (on the current tokio runtime); dead
    /// letters are appended to `dead_letter_file` when given.
    pub fn start(
        configs: &[WebhookConfig],
        dead_letter_file: Option<PathBuf>,
        now_ms: fn() -> u64,
    ) -> Webhooks {
        let dead = Arc::new(DeadLetters {
            kept: Mutex::new(VecDeque::new()),
            file: dead_letter_file,
        });
        let queues = configs
            .iter()
            .map(|config| {
                let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE_MAX);
                tokio::spawn(deliver_all(config.clone(), rx, Arc::clone(&dead), now_ms));
                (config.origin(), tx)
            })
            .collect();
        Webhooks {
            queues,
            dead,
            now_ms,
        }
    }

    /// Queues `delivery` for every webhook; never waits. A full queue makes it a
    /// dead letter for that webhook.
    pub fn send(&self, delivery: &Delivery) {
        for (origin, queue) in &self.queues {
            if let Err(error) = queue.try_send(delivery.clone()) {
                let reason = match error {
                    mpsc::error::TrySendError::Full(_) => {
                        format!("its queue holds its maximum of {WEBHOOK_QUEUE_MAX} deliveries")
                    }
                    mpsc::error::TrySendError::Closed(_) => "its delivery task has ended".into(),
                };
                self.dead.add(DeadLetter {
                    delivery: delivery.id.clone(),
                    webhook: origin.clone(),
                    attempts: 0,
                    error: reason,
                    at_ms: (self.now_ms)(),
                    body: delivery.json.clone(),
                });
            }
        }
    }

    /// The latest dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead
            .kept
            .lock()
            .expect("dead letters lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

async fn deliver_all(
    config: WebhookConfig,
    mut queue: mpsc::Receiver<Delivery>,
    dead: Arc<DeadLetters>,
    now_ms: fn() -> u64,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .user_agent(concat!("colony/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(webhook = %config.origin(), "cannot make an HTTP client: {error}");
            return;
        }
    };
    while let Some(delivery) = queue.recv().await {
        let body = match config.format {
            Format::Json => delivery.json.clone(),
            Format::Slack => serde_json::json!({ "text": delivery.text }).to_string(),
        };
        let mut wait = config.backoff_ms;
        let mut last_error = String::new();
        let mut delivered = false;
        for attempt in 1..=config.attempts {
            match post(&client, &config, &delivery, &body).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(error) => last_error = error,
            }
            if attempt < config.attempts {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                wait = wait.saturating_mul(2).min(config.backoff_max_ms);
            }
        }
        if !delivered {
            dead.add(DeadLetter {
                delivery: delivery.id.clone(),
                webhook: config.origin(),
                attempts: config.attempts,
                error: last_error,
                at_ms: now_ms(),
                body,
            });
        }
    }
}

async fn post(
    client: &reqwest::Client,
    config: &WebhookConfig,
    delivery: &Delivery,
    body: &str,
) -> Result<(), String> {
    let mut request = client
        .post(&config.url)
        .header("content-type", "application/json")
        .header("x-colony-delivery", &delivery.id)
        .body(body.to_string());
    if let Some(secret) = &config.secret {
        request = request.header(SIGNATURE_HEADER, sign(secret, body.as_bytes()));
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("the webhook answered {}", response.status())),
        // Without the URL, whose path may be a secret.
        Err(error) => Err(format!("the request failed: {}", error.without_url())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
