"""One server process under test: started with its output in a log file, timed to ready (a GET
that answers 200), measured (VmHWM), always stopped; or one already running (Managed.running).
Our service, llama-server, llama-cpp-python's server and Open WebUI all start through it."""

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse

from . import log


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Managed:
    """One server process: started, timed to ready, measured (VmHWM), always stopped.

    key names it in progress lines and its log file (LOG_DIR/KEY.log, unless log_path names
    another); ready_path is what must answer 200. cwd, env: the process's. quiet: no progress
    lines. ask_model_id: read the first id of GET /v1/models once ready (ours refuses other model
    names). poll: seconds between readiness tries. group: stop signals go to its whole process
    group (a server with children of its own)."""

    def __init__(self, key, label, command, port, ready_path, log_dir=None, env=None, *,
                 log_path=None, host="127.0.0.1", cwd=None, quiet=False, ask_model_id=True,
                 poll=0.05, stop_timeout=20, group=False):
        self.key, self.label, self.command, self.port = key, label, command, port
        self.host = host
        self.ready_path = ready_path
        self.log_path = log_path or (os.path.join(log_dir, f"{key}.log") if log_dir else None)
        self.env, self.cwd = env, cwd
        self.quiet, self.ask_model_id, self.poll = quiet, ask_model_id, poll
        self.stop_timeout, self.group = stop_timeout, group
        self.proc = None
        self.ready_seconds = None
        self.extra_body = {}
        self.model_id = None

    @classmethod
    def running(cls, url, key="server", ready_path="/health", **options):
        """A server already running at url (http://HOST:PORT): start() only waits for it."""
        parts = urllib.parse.urlsplit(url)
        return cls(key, url, None, parts.port or 80, ready_path, host=parts.hostname, **options)

    @property
    def started_here(self):
        return self.command is not None

    def say(self, message):
        if not self.quiet:
            log(message)

    def start(self, timeout):
        """Starts the process (unless running elsewhere) and waits until ready_path answers 200;
        RuntimeError (with the log's tail) when it exits first or is not ready within timeout."""
        started = time.monotonic()
        if self.started_here:
            self.say(f"[{self.key}] starting: {' '.join(self.command)}\n  log: {self.log_path}")
            with open(self.log_path, "wb") as logf:
                started = time.monotonic()
                self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                             start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before ready:\n"
                                   + self.log_tail())
            try:
                status, _ = self.get(self.ready_path, timeout=5)
                if status == 200:
                    self.ready_seconds = time.monotonic() - started
                    self.say(f"[{self.key}] ready after {self.ready_seconds:.2f} s")
                    if self.ask_model_id:
                        self.model_id = self._model_id()
                    return
            except OSError:
                pass  # not listening yet: the port is bound only after the model loaded
            time.sleep(self.poll)
        raise RuntimeError(f"{self.label}: not ready within {timeout:.0f} s\n" + self.log_tail())

    def _model_id(self):
        """The first id GET /v1/models lists (ours refuses other model names)."""
        try:
            status, body = self.get("/v1/models", timeout=30)
            if status == 200:
                return json.loads(body)["data"][0]["id"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            pass
        return None

    def _signal(self, sig):
        try:
            if self.group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def terminate(self):
        """Asks the process to stop (SIGTERM) without waiting: stop() then waits."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGTERM)

    def stop(self):
        """Stops the process: SIGTERM, then SIGKILL after stop_timeout seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait()

    def vm_hwm_mib(self):
        """Peak resident memory of the running process (MiB), from /proc/PID/status."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def log_tail(self, lines=25):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def connection(self, timeout):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path, timeout=30):
        conn = self.connection(timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", errors="replace")
        finally:
            conn.close()

    def post_json(self, path, body, timeout=60):
        """(status, parsed JSON answer or None)."""
        conn = self.connection(timeout)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", errors="replace")
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, None

    def metrics(self):
        """The server's Prometheus samples as {name: value}, or None without /metrics."""
        try:
            status, body = self.get("/metrics")
        except OSError:
            return None
        if status != 200:
            return None
        samples = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
        return samples
