"""An HTTP receiver for the delivery tests. Every POST is appended to OUT as
a JSON line {at, path, id, timestamp, valid, status, body}, where `valid`
says whether the request checks out, independently of cspulse's code:

- /slack...: a Slack incoming-webhook payload (Block Kit: a `text`, and
  `blocks` each with a known `type`);
- any other path: a Standard Webhooks signature (webhook-id,
  webhook-timestamp within 5 minutes, webhook-signature `v1,<base64
  HMAC-SHA256 of "id.timestamp.body">` keyed with the decoded secret).

Behaviour by path: /flaky/N/... answers 503 to the first N requests of each
webhook-id; /down/... always 500; /slow/... waits 5 s before answering 200;
anything else 200.

usage: webhook_receiver.py PORT SECRET OUT
"""
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SECRET, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
KEY = base64.b64decode(SECRET[len("whsec_"):])
LOCK = threading.Lock()
SEEN = {}
BLOCK_TYPES = {"header", "section", "context", "actions", "divider"}


def signature_ok(headers, body):
    mid, ts, sig = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
    if not (mid and ts and sig):
        return False
    try:
        if abs(time.time() - int(ts)) > 300:
            return False
    except ValueError:
        return False
    expected = base64.b64encode(hmac.new(KEY, f"{mid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s.split(",", 1)[1], expected) for s in sig.split() if s.startswith("v1,"))


def slack_ok(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    blocks = doc.get("blocks")
    return (
        isinstance(doc.get("text"), str)
        and isinstance(blocks, list)
        and 0 < len(blocks) <= 50
        and all(isinstance(b, dict) and b.get("type") in BLOCK_TYPES for b in blocks)
    )


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        valid = slack_ok(body) if path.startswith("/slack") else signature_ok(headers, body)
        mid = headers.get("webhook-id")
        parts = path.strip("/").split("/")
        status = 200
        with LOCK:
            n = SEEN.get((path, mid), 0) + 1
            SEEN[(path, mid)] = n
        if parts[0] == "flaky" and len(parts) > 1 and n <= int(parts[1]):
            status = 503
        elif parts[0] == "down":
            status = 500
        elif parts[0] == "slow":
            time.sleep(5)
        record = {"at": time.time(), "path": path, "id": mid, "timestamp": headers.get("webhook-timestamp"),
                  "valid": valid, "status": status, "body": body.decode("utf-8", "replace")}
        with LOCK:
            with open(OUT, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print("ready", flush=True)
    server.serve_forever()
