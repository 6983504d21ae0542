"""An OTLP/HTTP trace receiver for the tests: it accepts what an OpenTelemetry
exporter POSTs to /v1/traces, in `http/protobuf` (decoded with the official
`opentelemetry-proto` messages) or `http/json` (OTLP's JSON encoding: hex ids,
camelCase fields), answers as a collector does, and appends each span, flattened,
as one JSON line to the file it is given.

Usage: otlp_receiver.py OUT_FILE. Prints `listening PORT` once it listens, and
serves until it is killed.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = sys.argv[1]
LOCK = threading.Lock()
BODY_BYTES_MAX = 16 << 20


def proto_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [proto_value(v) for v in value.array_value.values]
    if kind == "int_value":
        return value.int_value
    return getattr(value, kind) if kind else None


def json_value(value):
    if "arrayValue" in value:
        return [json_value(v) for v in value["arrayValue"].get("values", [])]
    if "intValue" in value:
        return int(value["intValue"])  # int64 is a string in OTLP/JSON
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    return None


def from_proto(body):
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: proto_value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({
                    "encoding": "protobuf",
                    "resource": resource,
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "status": span.status.code,
                    "status_message": span.status.message,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "attributes": {a.key: proto_value(a.value) for a in span.attributes},
                })
    return spans


def from_json(body):
    request = json.loads(body)
    spans = []
    for resource_spans in request.get("resourceSpans", []):
        resource = {
            a["key"]: json_value(a["value"])
            for a in resource_spans.get("resource", {}).get("attributes", [])
        }
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                spans.append({
                    "encoding": "json",
                    "resource": resource,
                    "scope": scope_spans.get("scope", {}).get("name"),
                    "trace_id": span["traceId"].lower(),
                    "span_id": span["spanId"].lower(),
                    "parent_span_id": span.get("parentSpanId", "").lower(),
                    "name": span["name"],
                    "kind": span.get("kind", 0),
                    "status": status.get("code", 0),
                    "status_message": status.get("message", ""),
                    "start": int(span.get("startTimeUnixNano", 0)),
                    "end": int(span.get("endTimeUnixNano", 0)),
                    "attributes": {
                        a["key"]: json_value(a["value"]) for a in span.get("attributes", [])
                    },
                })
    return spans


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        if self.path != "/v1/traces" or length > BODY_BYTES_MAX:
            self.send_error(404 if self.path != "/v1/traces" else 413)
            return
        body = self.rfile.read(length)
        kind = self.headers.get("content-type", "")
        try:
            spans = from_json(body) if kind.startswith("application/json") else from_proto(body)
        except Exception as error:  # a malformed export is the test's failure
            self.send_error(400, str(error))
            return
        with LOCK, open(OUT, "a") as out:
            for span in spans:
                out.write(json.dumps(span) + "\n")
        if kind.startswith("application/json"):
            answer, answer_kind = b"{}", "application/json"
        else:
            answer = ExportTraceServiceResponse().SerializeToString()
            answer_kind = "application/x-protobuf"
        self.send_response(200)
        self.send_header("content-type", answer_kind)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
