"""Clients over TLS against a node serving HTTPS with a test CA.

Usage: python3 tls_clients.py https://localhost:PORT TOKEN CA_FILE

The official `openai` package (chat and a stream, through an httpx client that trusts
the CA) and Python's `websockets` over wss:// (subscribe, publish, receive). Prints one
line per check and "all checks passed"; exits non-zero on the first failure.
"""

import json
import ssl
import sys

import openai
from openai import OpenAI
from websockets.sync.client import connect


def check(name: str, condition: bool, detail) -> None:
    if not condition:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


def main() -> None:
    base, token, ca_file = sys.argv[1], sys.argv[2], sys.argv[3]
    # The package's own HTTP client (its name changed across versions), trusting the CA.
    http_client_class = getattr(openai, "DefaultHttpxClient", None) or getattr(openai, "DefaultHttpx2Client")
    client = OpenAI(base_url=f"{base}/v1", api_key=token, http_client=http_client_class(verify=ca_file))
    answer = client.chat.completions.create(
        model="colony-scripted", messages=[{"role": "user", "content": "hello over TLS"}], max_tokens=40
    )
    text = answer.choices[0].message.content
    check("openai chat over https", "[scripted]" in text, text)
    stream = client.chat.completions.create(
        model="colony-scripted",
        messages=[{"role": "user", "content": "stream over TLS"}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    check("openai stream over https", "".join(pieces) and usage is not None, (pieces, usage))

    # An unverified certificate is refused by a client that does not trust the CA.
    try:
        OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0).models.list()
        check("a client without the CA is refused", False, "it connected")
    except Exception as error:  # the openai package wraps the TLS failure
        check("a client without the CA is refused", "certificate" in repr(error).lower() or "connection" in repr(error).lower(), repr(error))

    context = ssl.create_default_context(cafile=ca_file)
    host = base.removeprefix("https://")
    with connect(f"wss://{host}/v1/bus", ssl=context, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"op": "sub", "sid": "s", "subject": "tls.>", "id": 1}))
        answer = json.loads(ws.recv(timeout=20))
        check("wss subscribe", answer.get("op") == "ok", answer)
        ws.send(json.dumps({"op": "pub", "subject": "tls.hello", "data": {"secure": True}, "id": 2}))
        seen = [json.loads(ws.recv(timeout=20)), json.loads(ws.recv(timeout=20))]
        message = next((frame for frame in seen if frame.get("op") == "msg"), None)
        check("wss message delivered", message is not None and message["data"] == {"secure": True}, seen)
    print("all checks passed")


if __name__ == "__main__":
    main()
