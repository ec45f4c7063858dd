#!/usr/bin/env python3
"""A webhook receiver for tranche's events (Standard Webhooks), stdlib only.

For each POST it checks, before believing a byte of the body:

- the signature: `webhook-signature` holds one or more space-separated
  `v1,<base64>` values; one must equal the HMAC-SHA256, keyed with the
  secret's bytes, of `{webhook-id}.{webhook-timestamp}.{raw body}`
  (compared in constant time);
- the timestamp: more than 5 minutes off this machine's clock is refused,
  so that a captured request cannot be replayed later;
- the id: delivery is at least once, so an event may come again; a
  `webhook-id` already recorded is answered 200 again and not recorded twice.

An accepted event is appended to `--out`, one JSON object a line
(`webhook_id`, `received_at`, `event`), and answered 204 at once: real work
belongs in a queue behind the receiver, since tranche retries anything that
is not a 2xx within its timeout.

    WEBHOOK_SECRET=whsec_... python3 examples/webhook_receiver.py --port 9000 --out events.jsonl

Answers: 204 accepted, 200 a duplicate, 400 missing or malformed headers or
body, 401 a wrong signature or a stale timestamp.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 5 * 60  # seconds a timestamp may be off
MAX_BODY = 1 << 20  # an event is a few KiB


def secret_key(secret):
    if not secret.startswith("whsec_"):
        raise ValueError("the secret starts with whsec_")
    try:
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    except binascii.Error as e:
        raise ValueError(f"the secret after whsec_ is not base64: {e}") from None


def verify(key, headers, body, now=None):
    """Returns None if the request is genuine and fresh, else (status, why)."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return 400, "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return 400, "webhook-timestamp is not an integer"
    if abs((now or time.time()) - sent) > TOLERANCE:
        return 401, "webhook-timestamp too far from now"
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for signature in signatures.split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return None
    return 401, "no valid signature"


class Store:
    """The JSONL file of accepted events and the ids in it (read back at
    start, so a restart still dedupes)."""

    def __init__(self, path):
        self.path, self.lock, self.seen = path, threading.Lock(), set()
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.seen = {json.loads(line)["webhook_id"] for line in f if line.strip()}

    def add(self, msg_id, event):
        """Records the event; False if its id was recorded before."""
        with self.lock:
            if msg_id in self.seen:
                return False
            line = {"webhook_id": msg_id, "received_at": time.time(), "event": event}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
            self.seen.add(msg_id)
            return True


def handler(key, store):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = self.headers.get("content-length", "")
            if not length.isdigit() or int(length) > MAX_BODY:
                return self.answer(400, "a body with a Content-Length up to 1 MiB")
            body = self.rfile.read(int(length))
            refused = verify(key, self.headers, body)
            if refused:
                print(f"refused status={refused[0]} why={refused[1]!r}", flush=True)
                return self.answer(*refused)
            msg_id = self.headers["webhook-id"]
            try:
                event = json.loads(body)
                kind = event["type"]
            except (ValueError, KeyError, TypeError):
                return self.answer(400, "the body is not an event")
            # The signed id is the one to dedupe on (tranche sends the
            # event's id there).
            if not store.add(msg_id, event):
                print(f"duplicate {kind} id={msg_id}", flush=True)
                return self.answer(200, "already received")
            print(f"accepted {kind} id={msg_id} upload={event.get('upload_id')}", flush=True)
            self.answer(204)

        def answer(self, status, message=None):
            body = json.dumps({"message": message}).encode() if message else b""
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # one line per event is printed above instead

    return Handler


def main(argv=None):
    p = argparse.ArgumentParser(description="Receive and verify tranche's webhooks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"),
                   help="whsec_... (env WEBHOOK_SECRET)")
    p.add_argument("--out", default="events.jsonl", help="JSONL file of accepted events")
    args = p.parse_args(argv)
    if not args.secret:
        p.error("--secret or WEBHOOK_SECRET is required")
    try:
        key = secret_key(args.secret)
    except ValueError as e:
        p.error(str(e))
    server = ThreadingHTTPServer((args.host, args.port), handler(key, Store(args.out)))
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
