"""A webhook receiver for the tests: verifies every delivery with the
`standardwebhooks` library from PyPI (not ferry's code), records it, and
answers what the test scripted.

Run: python3 webhook_receiver.py. It prints "listening on 127.0.0.1:PORT" on
standard error.

Control (JSON bodies):
  POST /_secrets  {"/path": ["whsec_…", …]}  the secrets a path's deliveries
                  may be signed with (any one of them must verify)
  POST /_script   {"/path": [[503, {"Retry-After": "1"}], [200, {}]]}
                  answers for a path's next deliveries, in turn; once they
                  are used up, 200
  GET  /_deliveries  every delivery so far, oldest first:
                  {"path", "id", "timestamp", "verified", "error", "payload",
                   "answered"}
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

lock = threading.Lock()
secrets = {}
scripts = {}
deliveries = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def answer(self, status, headers=None, body=b""):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_deliveries":
            with lock:
                out = json.dumps(deliveries).encode()
            self.answer(200, {"Content-Type": "application/json"}, out)
        else:
            self.answer(404)

    def do_POST(self):
        raw = self.body()
        if self.path in ("/_secrets", "/_script"):
            table = secrets if self.path == "/_secrets" else scripts
            with lock:
                table.update(json.loads(raw))
            self.answer(204)
            return
        headers = {k: v for k, v in self.headers.items()}
        with lock:
            keys = list(secrets.get(self.path, []))
            script = scripts.get(self.path, [])
            status, extra = script.pop(0) if script else (200, {})
        verified, error, payload = False, None, None
        for key in keys:
            try:
                payload = Webhook(key).verify(raw, headers)
                verified, error = True, None
                break
            except WebhookVerificationError as e:
                error = str(e)
        if not keys:
            error = "no secret for this path"
        with lock:
            deliveries.append(
                {
                    "path": self.path,
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "verified": verified,
                    "error": error,
                    "payload": payload,
                    "answered": status,
                }
            )
        self.answer(status, extra, b"receiver says: not stored")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
