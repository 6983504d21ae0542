"""The official `openai` package pointed at Colony's gateway.

Usage: python3 openai_client.py http://127.0.0.1:7700/v1 TOKEN

A chat, a stream (with the usage chunk), embeddings and the Responses API (plain and
streamed) charged to the micro-dollar, and the budget error once the budget is spent, as the package surfaces it (RateLimitError with Colony's code). Exits non-zero
on the first failure.
"""

import sys

import openai
from openai import OpenAI


def check(name: str, condition: bool, detail) -> None:
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


def ledger_used(base_url: str, token: str) -> int:
    """The caller's llm_budget_usd used, in micro-dollars, once nothing is reserved
    (settlements are decided just after the answer)."""
    import json
    import time
    import urllib.request

    deadline = time.time() + 10
    while True:
        request = urllib.request.Request(
            base_url.removesuffix("/v1") + "/v1/ledger/me", headers={"Authorization": f"Bearer {token}"}
        )
        budget = json.load(urllib.request.urlopen(request))["balances"]["llm_budget_usd"]
        if budget["reserved"] == 0 or time.time() > deadline:
            return budget["used"]
        time.sleep(0.02)


def main() -> None:
    base_url, token = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key=token, max_retries=0)

    models = [m.id for m in client.models.list()]
    check("models listed", "mock-mini" in models and "auto" in models, models)

    chat = client.chat.completions.create(
        model="mock-mini",
        messages=[{"role": "user", "content": "hello from python"}],
        max_tokens=50,
    )
    check("chat answered", chat.choices[0].message.content.startswith("mock answer"), chat)
    check("chat usage", chat.usage.prompt_tokens == 10 and chat.usage.completion_tokens == 12, chat.usage)

    pieces, usage = [], None
    for chunk in client.chat.completions.create(
        model="mock-mini",
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=50,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    check("stream content", "".join(pieces).startswith("mock answer: stream please"), pieces)
    check("stream usage", usage is not None and usage.completion_tokens == 12, usage)

    # Embeddings: two inputs, 5 tokens each at the mock, $1/M: 10 micro-dollars.
    before = ledger_used(base_url, token)
    embedded = client.embeddings.create(model="mock-mini", input=["alpha", "beta"])
    check("embeddings answered", len(embedded.data) == 2 and len(embedded.data[0].embedding) == 8, embedded)
    check("embeddings usage", embedded.usage.prompt_tokens == 10, embedded.usage)
    check("embeddings charged exactly", ledger_used(base_url, token) - before == 10, ledger_used(base_url, token))

    # The Responses API, plain and streamed: 10 input tokens at $1/M + 12 output at
    # $2/M = 34 micro-dollars each.
    before = ledger_used(base_url, token)
    response = client.responses.create(model="mock-mini", input="hello responses", max_output_tokens=50)
    check("responses answered", response.output_text.startswith("mock answer"), response)
    check("responses usage", response.usage.input_tokens == 10 and response.usage.output_tokens == 12, response.usage)
    check("responses charged exactly", ledger_used(base_url, token) - before == 34, ledger_used(base_url, token))
    before = ledger_used(base_url, token)
    completed, deltas = None, []
    for event in client.responses.create(model="mock-mini", input="stream responses", max_output_tokens=50, stream=True):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    check("responses streamed", "".join(deltas).startswith("mock answer: stream responses"), deltas)
    check("responses stream usage", completed is not None and completed.usage.output_tokens == 12, completed)
    check("responses stream charged exactly", ledger_used(base_url, token) - before == 34, ledger_used(base_url, token))

    first = client.chat.completions.create(
        model="dear", messages=[{"role": "user", "content": "spend"}], max_tokens=12
    )
    check("an expensive call within the budget", first.usage.completion_tokens == 12, first)
    try:
        client.chat.completions.create(
            model="dear", messages=[{"role": "user", "content": "spend more"}], max_tokens=12
        )
    except openai.RateLimitError as error:
        body = error.body if isinstance(error.body, dict) else {}
        check("budget error code", error.code == "insufficient_resource", (error.code, body))
        check("budget error says why", "llm_budget_usd" in str(error), str(error))
        check("budget error numbers", body.get("colony", {}).get("resource") == "llm_budget_usd", body)
    else:
        check("the budget error was raised", False, "no error")
    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
