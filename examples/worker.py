#!/usr/bin/env python3
"""A worker for tranche's Redis stream of events.

It reads the stream with a consumer group, and for each `upload.completed`
downloads the file, checks its SHA-256 against the event's, and reports
where it stands to tranche (`PUT /api/v1/uploads/{id}/processing`):
queued, processing (with progress), then completed (with a result) or
failed (with a message). Only then does it acknowledge (`XACK`) the entry.
Other event types are acknowledged at once.

Delivery is at least once, end to end: tranche may put an event on the
stream twice (same event `id`), and an entry that a worker read but never
acknowledged (it died, or tranche did not answer) is claimed again by a
worker after `--claim-idle` (`XAUTOCLAIM`). So the work must be
idempotent: an event id already handled here is acknowledged without work,
an upload whose processing tranche already shows `completed` is skipped,
and doing it all again anyway is harmless: the outcome depends only on the
file's bytes, so a second run reports the same state and result.

    pip install -r examples/requirements.txt
    TRANCHE_API_KEY=... python3 examples/worker.py \\
        --redis-url redis://127.0.0.1:6379 --tranche-url http://127.0.0.1:8080

Logs are one short line per step on stderr (`key=value`).
"""

import argparse
import collections
import functools
import hashlib
import http.client
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import redis

CHUNK = 1 << 20  # bytes read (and hashed) at a time while downloading


def log(msg, **fields):
    parts = [msg] + [f"{k}={v}" for k, v in fields.items()]
    print("worker: " + " ".join(parts), file=sys.stderr, flush=True)


class Transient(Exception):
    """tranche or the network failed: leave the entry pending, retry later."""


class Gone(Exception):
    """The upload or its file no longer exists: nothing left to do."""


class Stop(Exception):
    """SIGTERM or SIGINT while waiting for entries."""


class Tranche:
    """The two calls the worker makes to tranche, over the stdlib's urllib."""

    def __init__(self, base_url, api_key, timeout):
        self.base = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _request(self, method, url, body=None):
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode(errors="replace")
            try:
                code = json.loads(detail).get("error")
            except (ValueError, AttributeError):
                code = None
            # 404 upload_not_found or file_not_found: deleted since; 409: not
            # completed (any more). Retrying cannot help, so these end the
            # work on this event. A 404 "not_found" is a path this tranche
            # does not know (one older than the worker): retried instead.
            if e.code in (404, 409, 410) and code != "not_found":
                raise Gone(f"{method} {url}: {e.code} {detail}") from None
            # 401/403 (a wrong key), 429, 5xx: worth another try later.
            raise Transient(f"{method} {url}: {e.code} {detail}") from None
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            raise Transient(f"{method} {url}: {e!r}") from None

    def url(self, path_or_url):
        # file.url is relative unless tranche has public_url: then it is
        # absolute and the key goes there too (tranche named it).
        if path_or_url.startswith("/"):
            return self.base + path_or_url
        return urllib.parse.urljoin(self.base + "/", path_or_url)

    def upload(self, upload_id):
        with self._request("GET", self.url(f"/api/v1/uploads/{upload_id}")) as r:
            return json.load(r)

    def report(self, upload_id, state, **fields):
        body = {"state": state, **{k: v for k, v in fields.items() if v is not None}}
        url = self.url(f"/api/v1/uploads/{upload_id}/processing")
        with self._request("PUT", url, body) as r:
            r.read()

    def download(self, url):
        return self._request("GET", self.url(url))


def check_file(tranche, upload_id, file, alive):
    """Downloads the file, hashing as it streams; reports progress (and
    calls `alive`) at most once a second. Returns (sha256, bytes)."""
    size = file.get("size") or 0
    digest, got, last = hashlib.sha256(), 0, time.monotonic()
    tranche.report(upload_id, "processing", progress=0.0, message="downloading")
    try:
        with tranche.download(file["url"]) as body:
            while block := body.read(CHUNK):
                digest.update(block)
                got += len(block)
                if time.monotonic() - last >= 1.0:
                    last = time.monotonic()
                    alive()
                    if size:
                        tranche.report(upload_id, "processing", progress=min(got / size, 1.0))
    except (OSError, http.client.HTTPException) as e:  # cut mid-body: IncompleteRead
        raise Transient(f"download {file['url']}: {e!r}") from None
    return digest.hexdigest(), got


def process_completed(tranche, event, alive):
    upload_id = event["upload_id"]
    file = event["data"]["file"]
    current = tranche.upload(upload_id).get("processing") or {}
    if current.get("state") == "completed":
        log("skip", upload=upload_id, why="already_completed")
        return
    tranche.report(upload_id, "queued")
    sha256, size = check_file(tranche, upload_id, file, alive)
    if sha256 != file["sha256"]:
        message = f"sha256 mismatch: downloaded {sha256}, event says {file['sha256']}"
        tranche.report(upload_id, "failed", message=message, result={"sha256": sha256, "bytes": size})
        log("failed", upload=upload_id, why="sha256_mismatch", bytes=size)
        return
    tranche.report(upload_id, "completed", progress=1.0, result={"sha256": sha256, "bytes": size})
    log("completed", upload=upload_id, bytes=size, sha256=sha256[:12])


class Worker:
    def __init__(self, args):
        self.args = args
        self.redis = redis.Redis.from_url(args.redis_url, decode_responses=True)
        self.tranche = Tranche(args.tranche_url, args.api_key, args.http_timeout)
        # Event ids handled here lately: tranche's own redeliveries of an
        # event come as new entries with the same id.
        self.done = collections.OrderedDict()
        self.handled = 0
        self.stopping = False
        # Whether a signal should let the current step finish (see main).
        self.busy = True

    def ensure_group(self):
        try:
            # From the stream's start ("0"), not "$": events added before
            # the group existed are work too, and redoing one is harmless.
            self.redis.xgroup_create(self.args.stream, self.args.group, id="0", mkstream=True)
            log("group_created", stream=self.args.stream, group=self.args.group)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def handle(self, entry_id, fields):
        """Works on one entry; acknowledges it unless it should be retried."""
        event_id, kind = fields.get("id"), fields.get("type")
        try:
            if event_id in self.done:
                log("duplicate", entry=entry_id, event=event_id)
            elif kind == "upload.completed":
                alive = functools.partial(self.keep, entry_id)
                process_completed(self.tranche, json.loads(fields["event"]), alive)
            else:
                log("ack", entry=entry_id, type=kind)
        except Transient as e:
            # Not acknowledged: XAUTOCLAIM hands it out again after
            # --claim-idle, to this worker or another.
            log("retry_later", entry=entry_id, error=e)
            return
        except Gone as e:
            log("gone", entry=entry_id, error=e)
        except (KeyError, TypeError, ValueError) as e:
            # An entry that cannot be read never will be: retrying it
            # forever would only block the ones behind it.
            log("malformed", entry=entry_id, error=repr(e))
        except Exception as e:  # a bug here: keep serving the other entries
            log("error", entry=entry_id, error=repr(e))
            return
        self.redis.xack(self.args.stream, self.args.group, entry_id)
        if event_id:
            self.done[event_id] = True
            while len(self.done) > 10000:
                self.done.popitem(last=False)

    def keep(self, entry_id):
        """Resets the entry's idle time, so that other workers do not claim
        it while a long download is still going (XCLAIM to ourselves)."""
        self.redis.xclaim(
            self.args.stream, self.args.group, self.args.consumer,
            min_idle_time=0, message_ids=[entry_id], justid=True,
        )

    def claim(self):
        """Entries other consumers read and never acknowledged (dead ones),
        idle for at least --claim-idle."""
        entries, start = [], "0-0"
        while True:
            reply = self.redis.xautoclaim(
                self.args.stream, self.args.group, self.args.consumer,
                min_idle_time=self.args.claim_idle, start_id=start, count=100,
            )
            start, found = reply[0], reply[1]
            # Entries trimmed from the stream since come back empty.
            entries += [(i, f) for i, f in found if f]
            if start == "0-0":
                return entries

    def read(self):
        self.busy = False
        if self.stopping:
            raise Stop
        try:
            reply = self.redis.xreadgroup(
                self.args.group, self.args.consumer, {self.args.stream: ">"},
                count=10, block=self.args.block,
            )
        finally:
            self.busy = True
        return reply[0][1] if reply else []

    def pause(self, seconds):
        self.busy = False
        if self.stopping:
            raise Stop
        time.sleep(seconds)
        self.busy = True

    def run(self):
        while True:
            try:
                return self.loop()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                # Redis away (a restart, a failover): what was read and not
                # acknowledged stays pending there; wait and go on.
                log("redis_unavailable", error=e)
                self.pause(1.0)

    def loop(self):
        self.ensure_group()
        log("started", stream=self.args.stream, group=self.args.group, consumer=self.args.consumer)
        next_claim, idle_since = 0.0, time.monotonic()
        while not self.stopping:
            entries = []
            if time.monotonic() >= next_claim:
                entries = self.claim()
                next_claim = time.monotonic() + self.args.claim_idle / 2000
                for entry_id, _ in entries:
                    log("claimed", entry=entry_id)
            if not entries:
                entries = self.read()
            if not entries:
                if self.args.once:
                    break
                if self.args.idle_exit and time.monotonic() - idle_since >= self.args.idle_exit:
                    log("idle_exit", seconds=self.args.idle_exit)
                    break
                continue
            for entry_id, fields in entries:
                self.handle(entry_id, fields)
                self.handled += 1
                if self.args.max_events and self.handled >= self.args.max_events:
                    return
                if self.stopping:
                    break
            idle_since = time.monotonic()


def parse_args(argv):
    env = os.environ.get
    p = argparse.ArgumentParser(description="Process tranche's upload.completed events from a Redis stream.")
    p.add_argument("--redis-url", default=env("REDIS_URL", "redis://127.0.0.1:6379"))
    p.add_argument("--stream", default="tranche:events")
    p.add_argument("--group", default="workers")
    p.add_argument("--consumer", default=f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument("--tranche-url", default=env("TRANCHE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--api-key", default=env("TRANCHE_API_KEY"), help="env TRANCHE_API_KEY")
    p.add_argument("--claim-idle", type=int, default=60000, metavar="MS",
                   help="claim entries pending this long with another consumer (default 60000)")
    p.add_argument("--block", type=int, default=2000, metavar="MS", help="XREADGROUP BLOCK")
    p.add_argument("--http-timeout", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--once", action="store_true", help="exit at the first read that finds nothing")
    p.add_argument("--max-events", type=int, default=0, metavar="N", help="exit after N entries")
    p.add_argument("--idle-exit", type=float, default=0, metavar="SECONDS",
                   help="exit after this long without entries (default: never)")
    return p.parse_args(argv)


def main(argv=None):
    worker = Worker(parse_args(argv))

    def stop(signum, _frame):
        log("stopping", signal=signal.Signals(signum).name)
        worker.stopping = True
        # Waiting for entries: stop now. Working on one: finish it first,
        # so that it is acknowledged rather than done again elsewhere.
        if not worker.busy:
            raise Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    except Stop:
        pass
    except redis.RedisError as e:
        log("redis_error", error=e)
        return 1
    log("exit", handled=worker.handled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
