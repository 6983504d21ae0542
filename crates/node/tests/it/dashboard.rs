//! The dashboard's page and overview against a real node (the page in a real browser
//! is crates/colony/tests/it/dashboard.rs).

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_strict_policy_and_the_overview_counts() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let http = reqwest::Client::new();

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("/dashboard/app.js"));
    for file in ["app.js", "app.css", "icon.svg"] {
        let response = http
            .get(format!("{base}/dashboard/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
    }
    let missing = http
        .get(format!("{base}/dashboard/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The overview needs a token like any read.
    let anonymous = http
        .get(format!("{base}/v1/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    common::create_principal(&base, &admin, "a1", "ai", &["member"]).await;
    common::create_principal(&base, &admin, "a2", "ai", &["member"]).await;
    let overview = common::get_json(&base, &admin, "/v1/dashboard").await;
    assert_eq!(overview["principals"]["ai"], 2);
    assert_eq!(overview["principals"]["human"], 1);
    let ai = overview["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "ai_accounts")
        .unwrap();
    assert_eq!(ai["usage"], 2);
    // The sampler takes its first sample as the node starts.
    let history = overview["history"].as_array().unwrap();
    let points = history.iter().find(|h| h["name"] == "ai_accounts").unwrap()["points"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!points.is_empty());
    let last = points.last().unwrap()[0].as_u64().unwrap();
    let newer = common::get_json(&base, &admin, &format!("/v1/dashboard?since_ms={last}")).await;
    for series in newer["history"].as_array().unwrap() {
        for point in series["points"].as_array().unwrap() {
            assert!(point[0].as_u64().unwrap() > last);
        }
    }
    let bad = http
        .get(format!("{base}/v1/dashboard?since_ms=yesterday"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    node.shutdown().await.unwrap();
}
