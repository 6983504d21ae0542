"""The official `anthropic` package pointed at Colony's gateway.

Usage: python3 anthropic_client.py http://127.0.0.1:7700 TOKEN

For an Anthropic upstream (relayed) and an OpenAI-compatible one (translated): a
message, a stream read with the package's own stream helper (text and final usage),
then the budget error once the budget is spent, as the package surfaces it. Exits
non-zero on the first failure.
"""

import sys

import anthropic
from anthropic import Anthropic


def check(name: str, condition: bool, detail) -> None:
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


def main() -> None:
    base_url, token = sys.argv[1], sys.argv[2]
    client = Anthropic(base_url=base_url, api_key=token, max_retries=0)

    for model in ["mock-claude", "mock-mini"]:
        message = client.messages.create(
            model=model,
            max_tokens=50,
            system="be brief",
            messages=[{"role": "user", "content": "hello from python"}],
        )
        check(f"{model}: message", message.content[0].text == "mock answer: hello from python", message)
        check(
            f"{model}: usage",
            message.usage.input_tokens == 20 and message.usage.output_tokens == 12,
            message.usage,
        )
        with client.messages.stream(
            model=model,
            max_tokens=50,
            system="be brief",
            messages=[{"role": "user", "content": "stream please"}],
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        check(f"{model}: streamed text", text == "mock answer: stream please", text)
        check(
            f"{model}: streamed usage",
            final.usage.input_tokens == 20 and final.usage.output_tokens == 12,
            final.usage,
        )
        check(f"{model}: stop reason", final.stop_reason == "end_turn", final.stop_reason)

    first = client.messages.create(
        model="dear", max_tokens=12, messages=[{"role": "user", "content": "spend"}]
    )
    check("an expensive call within the budget", first.usage.output_tokens == 12, first)
    try:
        client.messages.create(
            model="dear", max_tokens=12, messages=[{"role": "user", "content": "spend more"}]
        )
    except anthropic.RateLimitError as error:
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("error", {})
        check("budget error code", detail.get("code") == "insufficient_resource", body)
        check("budget error says why", "llm_budget_usd" in str(error), str(error))
    else:
        check("the budget error was raised", False, "no error")
    print("anthropic client: all checks passed")


if __name__ == "__main__":
    main()
