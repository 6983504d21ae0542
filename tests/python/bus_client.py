"""A bus client written from docs/protocol.md alone, with Python's `websockets`.

Usage: python3 bus_client.py ws://127.0.0.1:7700/v1/bus TOKEN

Connects with the token, subscribes (plain, wildcard, queue group), publishes with and
without ids, does a request-reply, sends malformed frames and checks that the session
goes on, replays a stream from a sequence number, acknowledges, and prints one line
per check. Exits non-zero on the first failure.
"""

import json
import sys

from websockets.sync.client import connect


def main() -> None:
    url, token = sys.argv[1], sys.argv[2]
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:

        def send(frame: dict) -> None:
            ws.send(json.dumps(frame))

        held = []  # frames read while waiting for an answer, in order

        def recv() -> dict:
            if held:
                return held.pop(0)
            return json.loads(ws.recv(timeout=20))

        def request(frame: dict, frame_id) -> dict:
            frame["id"] = frame_id
            send(frame)
            while True:
                answer = json.loads(ws.recv(timeout=20))
                if answer.get("id") == frame_id and answer["op"] != "msg":
                    return answer
                held.append(answer)

        def check(name: str, condition: bool, detail) -> None:
            if not condition:
                print(f"FAILED {name}: {detail}")
                sys.exit(1)
            print(f"ok {name}")

        answer = request({"op": "sub", "sid": "all-work", "subject": "work.>"}, "s1")
        check("subscribe", answer == {"op": "ok", "id": "s1", "sid": "all-work"}, answer)

        answer = request({"op": "pub", "subject": "work.py.test", "data": {"hello": "from python"}}, 1)
        check("publish answered", answer == {"op": "ok", "id": 1, "delivered": 1}, answer)
        msg = recv()
        check(
            "message delivered",
            msg["op"] == "msg" and msg["sid"] == "all-work" and msg["data"] == {"hello": "from python"}
            and msg["subject"] == "work.py.test" and msg["priority"] == "normal",
            msg,
        )

        send({"op": "pub", "subject": "work.py.fast", "data": 2, "priority": "critical",
              "headers": {"trace": "abc"}})
        msg = recv()
        check("headers and priority", msg["priority"] == "critical" and msg["headers"] == {"trace": "abc"}, msg)

        request({"op": "sub", "sid": "q1", "subject": "jobs.*", "queue": "g"}, "s2")
        answer = request({"op": "pub", "subject": "jobs.one", "data": "job"}, 2)
        check("queue group member gets it", answer["delivered"] == 1, answer)
        check("queue message", recv()["sid"] == "q1", "")

        request({"op": "sub", "sid": "inbox", "subject": "agents.1.1.inbox.>"}, "s3")
        send({"op": "pub", "subject": "work.py.ask", "data": "question", "reply_to": "agents.1.1.inbox.r1"})
        asked = recv()
        check("request carries reply_to", asked.get("reply_to") == "agents.1.1.inbox.r1", asked)
        send({"op": "pub", "subject": asked["reply_to"], "data": "answer"})
        reply = recv()
        check("reply arrives", reply["sid"] == "inbox" and reply["data"] == "answer", reply)

        ws.send("this is not json")
        err = recv()
        check("malformed frame gets err", err["op"] == "err" and err["error"]["code"] == "bad_frame", err)
        answer = request({"op": "pub", "subject": "a..b", "data": 1}, "bad")
        check("invalid subject gets err with id", answer["op"] == "err" and answer["error"]["code"] == "invalid", answer)
        answer = request({"op": "ping"}, "still-there")
        check("session goes on", answer == {"op": "pong", "id": "still-there"}, answer)

        answer = request({"op": "pub", "subject": "py.log.a", "data": {"n": 1}}, "st1")
        check("stream publish stored", answer.get("stream") == "pylog" and answer.get("seq") == 1, answer)
        request({"op": "pub", "subject": "py.log.b", "data": {"n": 2}}, "st2")
        answer = request({"op": "sub", "sid": "replay", "subject": "py.log.>", "stream": "pylog", "from_seq": 1}, "s4")
        check("stream subscription", answer.get("from_seq") == 1, answer)
        for n in (1, 2):
            msg = recv()
            check(f"replayed {n}", msg["seq"] == n and msg["data"] == {"n": n} and msg["delivery"] == 1, msg)
            answer = request({"op": "ack", "sid": "replay", "seq": n}, f"ack{n}")
            check(f"ack {n}", answer == {"op": "ok", "id": f"ack{n}"}, answer)

        answer = request({"op": "unsub", "sid": "all-work"}, "u")
        check("unsubscribe", answer == {"op": "ok", "id": "u"}, answer)
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
