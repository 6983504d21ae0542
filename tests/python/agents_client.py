"""The OpenAI Agents SDK (`openai-agents`) running an agent with one function tool
through Colony's gateway (the Responses API, its default), against the mock upstream.

Usage: python3 agents_client.py http://127.0.0.1:7700/v1 TOKEN

The model asks for the tool, the SDK runs it, the model answers with its result:
two Responses calls, each charged through Colony. Prints "all checks passed".
"""

import sys

from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI

BASE, TOKEN = sys.argv[1], sys.argv[2]


def check(condition, what):
    if not condition:
        print("FAILED", what)
        sys.exit(1)
    print("ok", what)


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def main():
    # The SDK's traces would go to OpenAI: off (Colony records the calls itself).
    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=BASE, api_key=TOKEN, max_retries=0))
    agent = Agent(name="forecaster", instructions="Use the weather tool.", model="mock-mini", tools=[weather])
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    check("sunny" in str(result.final_output), f"the tool's result reached the answer: {result.final_output!r}")
    check(len(result.raw_responses) == 2, f"two model turns: {len(result.raw_responses)}")
    print("all checks passed")


main()
