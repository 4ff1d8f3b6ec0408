"""Independent OTLP receiver for the end-to-end tests (shares no code with the agent's encoder).

Decodes OTLP with the official `opentelemetry-proto` messages, served over gRPC (grpcio) and
HTTP (protobuf or JSON), and appends one JSON line per export request to $OTLP_SINK_OUT:
{"signal": "traces", "transport": "grpc", "body": <MessageToDict(request)>}.

Environment: OTLP_SINK_OUT (required), OTLP_SINK_GRPC_PORT, OTLP_SINK_HTTP_PORT (default 4317/4318).
Source: shared/peers.md section 1.1, plus hex -> base64 id conversion for OTLP/JSON.
"""
import base64
import gzip
import json
import os
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as lgrpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

OUT = os.environ["OTLP_SINK_OUT"]
HOST = "127.0.0.1"
GRPC_PORT = int(os.environ.get("OTLP_SINK_GRPC_PORT", "4317"))
HTTP_PORT = int(os.environ.get("OTLP_SINK_HTTP_PORT", "4318"))
_lock = threading.Lock()


def record(signal, transport, req):
    line = json.dumps({"signal": signal, "transport": transport, "body": MessageToDict(req)})
    with _lock, open(OUT, "a") as f:
        f.write(line + "\n")
        f.flush()


class Traces(tgrpc.TraceServiceServicer):
    def Export(self, req, ctx):
        record("traces", "grpc", req)
        return tpb.ExportTraceServiceResponse()


class Metrics(mgrpc.MetricsServiceServicer):
    def Export(self, req, ctx):
        record("metrics", "grpc", req)
        return mpb.ExportMetricsServiceResponse()


class Logs(lgrpc.LogsServiceServicer):
    def Export(self, req, ctx):
        record("logs", "grpc", req)
        return lpb.ExportLogsServiceResponse()


ROUTES = {
    "/v1/traces": ("traces", tpb.ExportTraceServiceRequest, tpb.ExportTraceServiceResponse),
    "/v1/metrics": ("metrics", mpb.ExportMetricsServiceRequest, mpb.ExportMetricsServiceResponse),
    "/v1/logs": ("logs", lpb.ExportLogsServiceRequest, lpb.ExportLogsServiceResponse),
}
ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def hex_ids_to_base64(node):
    """OTLP/JSON spells ids in hex; protobuf's json_format expects base64."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode() if k in ID_KEYS and isinstance(v, str) else hex_ids_to_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [hex_ids_to_base64(v) for v in node]
    return node


class Http(BaseHTTPRequestHandler):
    def do_POST(self):
        route = ROUTES.get(self.path)
        if not route:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = route[1]()
        is_json = "json" in self.headers.get("Content-Type", "")
        if is_json:
            ParseDict(hex_ids_to_base64(json.loads(body)), req)
        else:
            req.ParseFromString(body)
        record(route[0], "http-json" if is_json else "http-protobuf", req)
        resp = b"{}" if is_json else route[2]().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if is_json else "application/x-protobuf")
        self.send_header("Content-Length", str(len(resp)))
        self.end_headers()
        self.wfile.write(resp)

    def log_message(self, *args):
        pass


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
tgrpc.add_TraceServiceServicer_to_server(Traces(), server)
mgrpc.add_MetricsServiceServicer_to_server(Metrics(), server)
lgrpc.add_LogsServiceServicer_to_server(Logs(), server)
server.add_insecure_port(f"{HOST}:{GRPC_PORT}")
server.start()
ThreadingHTTPServer((HOST, HTTP_PORT), Http).serve_forever()
