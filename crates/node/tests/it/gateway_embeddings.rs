//! Issue 29: embeddings through the gateway (`POST /v1/embeddings`), reserved before
//! and charged the input tokens after, to the micro-dollar; bounded input; a call
//! the budget cannot cover never reaches the upstream; the scripted provider embeds
//! offline.

use serde_json::{json, Value};

use super::gateway::{ai, call, setup, wait_for_budget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_reserved_then_charged_their_input_tokens() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "embedder").await;
    let (status, headers, text) = call(
        &s.base,
        "/v1/embeddings",
        &token,
        json!({"model": "mock-mini", "input": ["alpha", "beta", "gamma"]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["data"].as_array().unwrap().len(), 3);
    assert_eq!(answer["usage"]["prompt_tokens"], 15);
    // 15 input tokens at $1 per million: 15 micro-dollars, nothing for output.
    assert_eq!(headers["x-colony-cost-micro-usd"], "15");
    let budget = wait_for_budget(&s.base, &token, 15).await;
    assert_eq!(budget["reserved"], 0);

    // The scripted provider embeds offline, the same input the same way.
    let embed = |input: Value| {
        let (base, token) = (s.base.clone(), token.clone());
        async move {
            let (status, _, text) = call(
                &base,
                "/v1/embeddings",
                &token,
                json!({"model": "colony-scripted", "input": input}),
                &[],
            )
            .await;
            assert_eq!(status, 200, "{text}");
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let (once, again) = (
        embed(json!("same words")).await,
        embed(json!("same words")).await,
    );
    assert_eq!(once["data"][0]["embedding"], again["data"][0]["embedding"]);
    assert_ne!(
        once["data"][0]["embedding"],
        embed(json!("other words")).await["data"][0]["embedding"]
    );

    // Bounded where it enters, refused before any upstream is called.
    let calls_before = s.mock.calls.lock().unwrap().values().sum::<u64>();
    for (body, why) in [
        (json!({"model": "mock-mini"}), "input` is required"),
        (json!({"model": "mock-mini", "input": ""}), "non-empty"),
        (
            json!({"model": "mock-mini", "input": vec!["x"; 2049]}),
            "1 to 2048 inputs",
        ),
        (json!({"model": "no-such-model", "input": "x"}), "no model"),
        (
            json!({"model": "pricey", "input": "x".repeat(10_000)}),
            "llm_budget_usd",
        ),
    ] {
        let (status, _, text) = call(&s.base, "/v1/embeddings", &token, body, &[]).await;
        assert!((400..500).contains(&status), "{status} {text}");
        assert!(text.contains(why), "{why}: {text}");
    }
    assert_eq!(
        s.mock.calls.lock().unwrap().values().sum::<u64>(),
        calls_before,
        "no refused call reached the upstream"
    );
}
