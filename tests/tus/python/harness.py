"""The real tranche binary for the tuspy tests: a child process on a free
loopback port with a temp data directory, on the store the run asks for
(TUS_TEST_STORE=embedded|redis; a Redis store gets a private redis-server)."""

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

import requests

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../.."))


def tranche_bin():
    # Not TRANCHE_*: the server reads every such variable as a setting.
    path = os.environ.get("TUS_TRANCHE_BIN", os.path.join(REPO, "target/debug/tranche"))
    if not os.path.exists(path):
        raise RuntimeError(f"no tranche binary at {path}: run through `cargo test --test tus_clients`")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def _wait(ready, what, proc, log_path):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    with open(log_path, errors="replace") as f:
        raise RuntimeError(f"{what} did not come up:\n{f.read()}")


class Redis:
    """A private redis-server without persistence, killed at stop()."""

    def __init__(self, workdir):
        self.port = free_port()
        self.log = os.path.join(workdir, "redis.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", workdir],
                stdout=log, stderr=subprocess.STDOUT,
            )
        _wait(self._pong, "redis-server", self.proc, self.log)

    def _pong(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Tranche:
    def __init__(self, env=None, api_key=None):
        self.workdir = tempfile.mkdtemp(prefix="tranche-tuspy-")
        self.data_dir = os.path.join(self.workdir, "data")
        os.mkdir(self.data_dir)
        self.api_key = api_key
        self.redis = None
        self.env = {
            "TRANCHE_WORKERS": "2",
            "TRANCHE_SHUTDOWN_TIMEOUT": "1s",
            "TRANCHE_LIMITS__RESERVE_FREE_BYTES": "1MiB",
            "TRANCHE_LOG__LEVEL": "info" if os.environ.get("TEST_LOG") else "warn",
            **(env or {}),
        }
        store = os.environ.get("TUS_TEST_STORE", "embedded")
        if store == "redis":
            self.redis = Redis(self.workdir)
            self.env["TRANCHE_STORE__TYPE"] = "redis"
            self.env["TRANCHE_STORE__URL"] = self.redis.url
        elif store != "embedded":
            raise RuntimeError(f"TUS_TEST_STORE={store}: embedded or redis")
        self.port = free_port()
        self.log = os.path.join(self.workdir, "tranche.log")
        self.proc = None
        self._spawn()

    def _spawn(self):
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TRANCHE_")}
        with open(self.log, "a") as log:
            # cwd in the data directory: no stray ./config.toml is read.
            self.proc = subprocess.Popen(
                [tranche_bin(), "serve", "--bind", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir],
                cwd=self.data_dir, env={**inherited, **self.env},
                stdout=subprocess.DEVNULL, stderr=log,
            )
        _wait(self._healthy, "tranche", self.proc, self.log)

    def kill(self):
        """SIGKILL, as in a crash: no graceful shutdown."""
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        """Starts it again on the same port, data directory and store."""
        self._spawn()

    def _healthy(self):
        try:
            return requests.get(self.url("/healthz"), timeout=1).ok
        except requests.RequestException:
            return False

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def endpoint(self):
        return self.url("/files/")

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def completed(self, upload_id, within=30):
        """The upload once API v1 shows it completed (assembly may lag the last PATCH)."""
        deadline = time.monotonic() + within
        while True:
            res = requests.get(self.url(f"/api/v1/uploads/{upload_id}"), headers=self.headers, timeout=10)
            res.raise_for_status()
            upload = res.json()
            if upload["status"] == "completed" or time.monotonic() > deadline:
                return upload
            if upload["status"] in ("failed", "aborted"):
                return upload
            time.sleep(0.1)

    def download(self, upload_id):
        res = requests.get(self.url(f"/api/v1/files/{upload_id}"), headers=self.headers, timeout=60)
        res.raise_for_status()
        return res.content

    def stop(self):
        try:
            self.kill()
        finally:
            if self.redis:
                self.redis.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
