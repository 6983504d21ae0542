//! Issue 29: OpenAI's Responses API through the gateway (`POST /v1/responses`),
//! plain and streamed, reserved before and charged its usage after, to the
//! micro-dollar; an Anthropic model (no Responses API) and a request that cannot be
//! priced are refused before anything is spent; the scripted provider answers.

use serde_json::{json, Value};

use super::gateway::{ai, call, setup, wait_for_budget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_reserved_then_charged_their_usage_plain_and_streamed() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "responder").await;
    let (status, headers, text) = call(
        &s.base,
        "/v1/responses",
        &token,
        json!({"model": "mock-mini", "input": "hello there", "max_output_tokens": 50}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "mock answer: hello there"
    );
    // 10 input tokens at $1/M + 12 output at $2/M = 34 micro-dollars.
    assert_eq!(headers["x-colony-cost-micro-usd"], "34");
    wait_for_budget(&s.base, &token, 34).await;

    // The stored response, for its owner only; deleted at its upstream, then gone.
    let id = answer["id"].as_str().unwrap().to_string();
    let path = format!("/v1/responses/{id}");
    let (status, kept) =
        crate::common::send(reqwest::Method::GET, &s.base, &token, &path, None).await;
    assert_eq!(
        (status, kept["id"].as_str()),
        (200, Some(id.as_str())),
        "{kept}"
    );
    let other = ai(&s.base, &s.admin, "someone-else").await;
    let (status, _) = crate::common::send(reqwest::Method::GET, &s.base, &other, &path, None).await;
    assert_eq!(status, 404, "another principal's response is not found");
    let (status, deleted) =
        crate::common::send(reqwest::Method::DELETE, &s.base, &token, &path, None).await;
    assert_eq!(
        (status, &deleted["deleted"]),
        (200, &json!(true)),
        "{deleted}"
    );
    let (status, _) = crate::common::send(reqwest::Method::GET, &s.base, &token, &path, None).await;
    assert_eq!(status, 404, "forgotten once deleted");

    // Streamed: the events pass through; the usage of `response.completed` is charged.
    let (status, _, events) = call(
        &s.base,
        "/v1/responses",
        &token,
        json!({"model": "mock-mini", "input": [{"role": "user", "content": "stream it"}],
               "max_output_tokens": 50, "stream": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{events}");
    assert!(
        events.contains("response.output_text.delta") && events.contains("response.completed"),
        "{events}"
    );
    wait_for_budget(&s.base, &token, 68).await;
    // A streamed response is kept at its upstream too: GET finds it for its owner.
    let created: Value = events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "response.created")
        .expect("response.created");
    let streamed_id = created["response"]["id"].as_str().unwrap().to_string();
    let (status, kept) = crate::common::send(
        reqwest::Method::GET,
        &s.base,
        &token,
        &format!("/v1/responses/{streamed_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{kept}");

    // Offline: the scripted provider answers in the Responses shape.
    let (status, _, text) = call(
        &s.base,
        "/v1/responses",
        &token,
        json!({"model": "colony-scripted", "input": "hi"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("[scripted]"), "{text}");
    let scripted: Value = serde_json::from_str(&text).unwrap();
    let spent = 68 + {
        // colony-scripted here: $1 per million in, $2 out.
        let (input, output) = (
            scripted["usage"]["input_tokens"].as_u64().unwrap(),
            scripted["usage"]["output_tokens"].as_u64().unwrap(),
        );
        input + 2 * output
    };
    wait_for_budget(&s.base, &token, spent).await;

    // Refused before anything is spent or any upstream called.
    let calls_before = s.mock.calls.lock().unwrap().values().sum::<u64>();
    for (body, status_wanted, why) in [
        (
            json!({"model": "mock-claude", "input": "hi"}),
            502,
            "no Responses API",
        ),
        (
            json!({"model": "mock-mini", "input": "hi", "previous_response_id": "resp_1"}),
            400,
            "previous_response_id",
        ),
        (json!({"model": "mock-mini"}), 400, "`input`"),
    ] {
        let (status, _, text) = call(&s.base, "/v1/responses", &token, body, &[]).await;
        assert_eq!(status, status_wanted, "{text}");
        assert!(text.contains(why), "{why}: {text}");
    }
    assert_eq!(
        s.mock.calls.lock().unwrap().values().sum::<u64>(),
        calls_before
    );
    wait_for_budget(&s.base, &token, spent).await;
}
