//! Issue 29: a client that leaves in the middle of a stream is charged for what was
//! generated (the input bound and the text delivered), never zero, on each streaming
//! route (chat completions and the Responses API). The upstream here sends a few
//! events and then holds the stream open.

use std::time::Duration;

use axum::body::Body;
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::json;

use crate::common;

/// An upstream that starts each stream and never finishes it.
async fn stalling_upstream() -> String {
    let chat = || async {
        let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"partial words \"},\"finish_reason\":null}]}\n\n";
        stalled(first)
    };
    let responses = || async {
        let first = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"partial words \",\"sequence_number\":0}\n\n";
        stalled(first)
    };
    let router = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn stalled(first: &'static str) -> axum::response::Response {
    let events = futures_util::stream::iter([Ok::<_, std::io::Error>(first.to_string())])
        .chain(futures_util::stream::pending());
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_charged_for_what_was_generated() {
    let upstream = stalling_upstream().await;
    let providers = format!(
        "[gateway]\ndefault_model = \"slow\"\ntimeout = \"60s\"\n\n\
         [[upstreams]]\nname = \"slow\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
         [[models]]\nname = \"slow\"\nupstream = \"slow\"\ninput_usd_per_million = \"1.00\"\noutput_usd_per_million = \"2.00\"\nmax_output_tokens = 100\n"
    );
    let started = common::start_with_gateway(&providers, &|_| None).await;
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "slow", "messages": [{"role": "user", "content": "go"}], "stream": true}),
        ),
        (
            "/v1/responses",
            json!({"model": "slow", "input": "go", "stream": true}),
        ),
    ] {
        let (address, token) =
            common::create_principal(&started.base, &started.admin, "leaver", "ai", &[]).await;
        let response = http
            .post(format!("{}{path}", started.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let mut stream = response.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&first).contains("partial words"),
            "{path}"
        );
        drop(stream); // the client leaves
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let budget = loop {
            let me = common::get_json(&started.base, &token, "/v1/ledger/me").await;
            let budget = me["balances"]["llm_budget_usd"].clone();
            if budget["reserved"] == 0 {
                break budget;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: never settled: {budget}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            budget["used"].as_u64().unwrap() > 0,
            "{path}: charged nothing: {budget}"
        );
        let audit = common::get_json(
            &started.base,
            &started.admin,
            &format!("/v1/audit?actor={address}&limit=100"),
        )
        .await;
        assert!(
            audit.to_string().contains("the caller left mid-stream"),
            "{path}: {audit}"
        );
    }
}

/// An upstream that starts a whole answer and breaks it off.
async fn breaking_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = [0u8; 16 << 10];
                let _read = stream.read(&mut request).await;
                let _sent = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":\"cut")
                    .await;
                // Closed with 990 bytes of the answer missing.
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_breaks_off_after_the_upstream_started_is_charged_its_bound() {
    let upstream = breaking_upstream().await;
    let providers = format!(
        "[gateway]\ndefault_model = \"cut\"\ntimeout = \"60s\"\n\n\
         [[upstreams]]\nname = \"cut\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
         [[models]]\nname = \"cut\"\nupstream = \"cut\"\ninput_usd_per_million = \"1.00\"\noutput_usd_per_million = \"2.00\"\nmax_output_tokens = 100\n"
    );
    let started = common::start_with_gateway(&providers, &|_| None).await;
    let (_, token) =
        common::create_principal(&started.base, &started.admin, "cut", "ai", &[]).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "cut", "messages": [{"role": "user", "content": "go"}], "max_tokens": 10}),
        ),
        (
            "/v1/responses",
            json!({"model": "cut", "input": "go", "max_output_tokens": 10}),
        ),
        ("/v1/embeddings", json!({"model": "cut", "input": "go"})),
    ] {
        let before = common::get_json(&started.base, &token, "/v1/ledger/me").await["balances"]
            ["llm_budget_usd"]["used"]
            .as_u64()
            .unwrap();
        let (status, answer) = common::send(
            reqwest::Method::POST,
            &started.base,
            &token,
            path,
            Some(body),
        )
        .await;
        assert_eq!(status, 502, "{path}: {answer}");
        assert!(answer.to_string().contains("broke off"), "{path}: {answer}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let me = common::get_json(&started.base, &token, "/v1/ledger/me").await;
            let budget = &me["balances"]["llm_budget_usd"];
            if budget["reserved"] == 0 && budget["used"].as_u64().unwrap() > before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: charged nothing: {budget}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
