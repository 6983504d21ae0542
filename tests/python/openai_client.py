"""The official `openai` package pointed at Colony's gateway.

Usage: python3 openai_client.py http://127.0.0.1:7700/v1 TOKEN

A chat, a stream (with the usage chunk), and the budget error once the budget is
spent, as the package surfaces it (RateLimitError with Colony's code). Exits non-zero
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
