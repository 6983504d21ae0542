//! Permission escalation: asking for more, approval by the right people, application
//! at once, the end at the ttl, and the news on the bus.

use crate::common;

use common::bus::{Client, PATIENCE};
use common::send;
use serde_json::{json, Value};

async fn post(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    send(reqwest::Method::POST, base, token, path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_is_granted_by_an_admin_and_ends_by_itself() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (agent, primary) =
        common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (_, human) =
        common::create_principal(&base, &admin, "reviewer", "human", &["member"]).await;
    let (_, made) = post(
        &base,
        &primary,
        &format!("/v1/principals/{agent}/tokens"),
        json!({"name": "narrow", "scopes": ["read", "governance"], "justification": "a narrow token"}),
    )
    .await;
    let narrow = made["token"].as_str().unwrap().to_string();
    // The news on the bus, for whoever listens.
    let mut listener = Client::connect(&node, &human).await;
    listener.sub("g", "colony.grants.>").await;

    let reserve = json!({"resource": "io_ops", "amount": 1, "justification": "work"});
    let (status, _) = post(&base, &narrow, "/v1/ledger/reserve", reserve.clone()).await;
    assert_eq!(status, 403, "no ledger scope yet");
    let (status, grant) = post(
        &base,
        &narrow,
        "/v1/grants",
        json!({"scope": "ledger", "ttl": 300, "justification": "I must reserve for the batch job"}),
    )
    .await;
    assert_eq!(status, 201, "{grant}");
    assert_eq!(grant["state"], "pending");
    let id = grant["id"].as_u64().unwrap();
    let heard = tokio::time::timeout(PATIENCE, listener.recv())
        .await
        .unwrap();
    assert_eq!(
        heard["subject"],
        format!("colony.grants.requested.{agent}"),
        "{heard}"
    );

    let why = json!({"justification": "reviewed"});
    let (status, own) = post(
        &base,
        &primary,
        &format!("/v1/grants/{id}/approve"),
        why.clone(),
    )
    .await;
    assert_eq!(status, 403, "nobody approves their own: {own}");
    let (status, member) = post(
        &base,
        &human,
        &format!("/v1/grants/{id}/approve"),
        why.clone(),
    )
    .await;
    assert_eq!(status, 403, "scopes are an admin's to grant: {member}");
    let (status, approved) = post(&base, &admin, &format!("/v1/grants/{id}/approve"), why).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["state"], "active");
    let (status, reserved) = post(&base, &narrow, "/v1/ledger/reserve", reserve.clone()).await;
    assert_eq!(status, 201, "the scope holds at once: {reserved}");

    // At its ttl it ends by itself (the node ticks at the due time).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, now) = send(
            reqwest::Method::GET,
            &base,
            &admin,
            &format!("/v1/grants/{id}"),
            None,
        )
        .await;
        if now["state"] == "expired" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the grant never expired: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = post(&base, &narrow, "/v1/ledger/reserve", reserve).await;
    assert_eq!(status, 403, "the scope is gone again");
    let decision = common::bus::wait_for_decision(&base, &admin, "grant.expire", &agent).await;
    assert_eq!(decision["decision"], "allowed");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_up_to_the_bound_take_a_human_and_above_it_both_sides() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, agent) = common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (_, human) =
        common::create_principal(&base, &admin, "reviewer", "human", &["member"]).await;
    let (_, other_ai) = common::create_principal(&base, &admin, "peer", "ai", &["member"]).await;
    let quota = |me: &Value| me["balances"]["io_ops"]["quota"].as_u64().unwrap();
    let (_, before) = send(reqwest::Method::GET, &base, &agent, "/v1/ledger/me", None).await;

    let (_, small) = post(
        &base,
        &agent,
        "/v1/grants",
        json!({"quota": {"resource": "io_ops", "amount": 100}, "ttl": "1h", "justification": "a busy hour"}),
    )
    .await;
    let id = small["id"].as_u64().unwrap();
    let why = json!({"justification": "fine"});
    let (status, _) = post(
        &base,
        &other_ai,
        &format!("/v1/grants/{id}/approve"),
        why.clone(),
    )
    .await;
    assert_eq!(status, 403, "below the bound a human approves");
    let (status, approved) = post(
        &base,
        &human,
        &format!("/v1/grants/{id}/approve"),
        why.clone(),
    )
    .await;
    assert_eq!((status, approved["state"].as_str()), (200, Some("active")));
    let (_, after) = send(reqwest::Method::GET, &base, &agent, "/v1/ledger/me", None).await;
    assert_eq!(quota(&after), quota(&before) + 100);

    let (_, large) = post(
        &base,
        &agent,
        "/v1/grants",
        json!({"quota": {"resource": "io_ops", "amount": 50000}, "ttl": "1h", "justification": "a migration"}),
    )
    .await;
    let id = large["id"].as_u64().unwrap();
    let (_, half) = post(
        &base,
        &human,
        &format!("/v1/grants/{id}/approve"),
        why.clone(),
    )
    .await;
    assert_eq!(
        half["state"], "pending",
        "above the bound one side is not enough: {half}"
    );
    assert_eq!(half["approvals"][0]["side"], "human");
    let (_, both) = post(
        &base,
        &other_ai,
        &format!("/v1/grants/{id}/approve"),
        why.clone(),
    )
    .await;
    assert_eq!(both["state"], "active", "{both}");
    let (_, last) = send(reqwest::Method::GET, &base, &agent, "/v1/ledger/me", None).await;
    assert_eq!(quota(&last), quota(&before) + 100 + 50_000);

    // Denied is denied; a role is an admin's to give.
    let (_, role) = post(
        &base,
        &agent,
        "/v1/grants",
        json!({"role": "admin", "ttl": "10m", "justification": "rotate keys"}),
    )
    .await;
    let id = role["id"].as_u64().unwrap();
    let (status, _) = post(&base, &human, &format!("/v1/grants/{id}/deny"), why.clone()).await;
    assert_eq!(status, 403);
    let (status, denied) = post(&base, &admin, &format!("/v1/grants/{id}/deny"), why).await;
    assert_eq!((status, denied["state"].as_str()), (200, Some("denied")));
    let (status, bad) = post(
        &base,
        &agent,
        "/v1/grants",
        json!({"scope": "ledger", "role": "admin", "ttl": 1, "justification": "both"}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    node.shutdown().await.unwrap();
}
