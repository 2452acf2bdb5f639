"""A stand-in OpenTelemetry collector for the bench: accepts OTLP/HTTP exports and drops them.

    python -m bench.otlp_sink PORT

Every POST (``/v1/traces``) is answered 200 with an empty ``ExportTraceServiceResponse``, so the gateway's
exporter does all its real work (batching, protobuf encoding, the HTTP request) and nothing else is measured.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Sink).serve_forever()


if __name__ == "__main__":
    main()
