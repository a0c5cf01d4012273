"""A reference receiver for privacy-service webhooks: copy it, replace the DATA lookups with your system's.

    PRIVACY_SIGNING_KEY=pss_...  RECEIVER_DATA=customers.json  python examples/receiver.py 8090

It verifies each webhook (HMAC-SHA256 over "<timestamp>.<body>", timestamp within the replay window),
answers 202 at once, acts once per Idempotency-Key (webhooks are delivered at least once), then posts
its signed answer to the request's status_callback_url: access data for access/portability, or just
"completed" after erasing or correcting. RECEIVER_DATA maps an identity value to that customer's data.
Standard library only; keep the seen-keys set in a database in production.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.request
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KEY = os.environ["PRIVACY_SIGNING_KEY"].encode()
WINDOW = int(os.environ.get("PRIVACY_REPLAY_WINDOW", "300"))
DATA: dict[str, Any] = (
    json.loads(Path(os.environ["RECEIVER_DATA"]).read_text()) if "RECEIVER_DATA" in os.environ else {}
)
seen: set[str] = set()
lock = threading.Lock()


def sign(timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(KEY, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verified(headers: Message, body: bytes) -> bool:
    timestamp = headers.get("X-Privacy-Timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > WINDOW:
        return False  # unsigned, or stale: a replay outside the window
    presented = headers.get("X-Privacy-Signature", "").split(",")
    return any(hmac.compare_digest(sign(timestamp, body), value.strip()) for value in presented)


def answer(request: dict[str, Any], key_id: str) -> None:
    values = [identity["identity_value"] for identity in request["subject_identities"]]
    customer = next((value for value in values if value in DATA), None)
    body: dict[str, Any] = {"request_status": "completed", "subject_request_id": request["subject_request_id"]}
    if request["subject_request_type"] in ("access", "portability"):
        body["data"] = DATA.get(customer, {})
    elif request["subject_request_type"] == "erasure" and customer is not None:
        del DATA[customer]
    raw = json.dumps(body).encode()
    for attempt in range(5):  # signed afresh each time: a new timestamp is not a replay
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Privacy-Key-Id": key_id,
            "X-Privacy-Timestamp": timestamp,
            "X-Privacy-Signature": sign(timestamp, raw),
        }
        try:
            post = urllib.request.Request(request["status_callback_url"], raw, headers, method="POST")  # noqa: S310
            with urllib.request.urlopen(post, timeout=10):  # noqa: S310
                return
        except OSError:
            time.sleep(2**attempt)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verified(self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        key = self.headers["Idempotency-Key"]
        with lock:
            first = key not in seen
            seen.add(key)
        self.send_response(202)
        self.end_headers()
        print(json.dumps({"idempotency_key": key, "first": first}), flush=True)
        if first:
            request = json.loads(body)
            threading.Thread(target=answer, args=(request, self.headers["X-Privacy-Key-Id"]), daemon=True).start()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: print only what we choose."""


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
