"""A real JupyterLab server and a real Chromium, for the browser tests.

The server runs on 127.0.0.1 on a free port with throw-away config, data and runtime folders;
Chromium is Debian's, driven by Playwright (never `playwright install`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

CHROMIUM = os.environ.get("GEMMA_FT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` in its own process group; `stop()` / `kill()` end it and its kernels."""

    def __init__(self, root_dir: str, home: str, env: dict | None = None):
        self.root_dir, self.home = root_dir, home
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        dirs = {k: os.path.join(home, k.lower()) for k in
                ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}
        for d in dirs.values():
            os.makedirs(d, exist_ok=True)
        self.env = {**os.environ, **dirs, "JUPYTER_PLATFORM_DIRS": "1", **(env or {})}
        self.log_path = os.path.join(home, f"lab-{self.port}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "LabServer":
        jupyter = [sys.executable, "-m", "jupyter"]
        subprocess.run(jupyter + ["labextension", "disable",
                                  "@jupyterlab/apputils-extension:announcements"],
                       env=self.env, capture_output=True, check=False, timeout=120)
        cmd = jupyter + ["lab", "--no-browser", "--ip", "127.0.0.1", f"--port={self.port}",
                         f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
                         "--ServerApp.password=", "--LabApp.news_url=",
                         "--ServerApp.disable_check_xsrf=True", "--allow-root"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.tail()}")
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer in {timeout}s: {self.tail()}")

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text else None

    def lab_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def delete_sessions(self) -> None:
        try:
            for s in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{s['id']}")
        except OSError:
            pass

    def tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGINT, timeout: float = 30) -> None:
        """Ctrl+C-like stop (SIGINT twice skips the confirmation), then the group if needed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        if sig == signal.SIGINT:
            time.sleep(0.3)
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kernels(self) -> list:
        """The server's kernel processes (jupyter_client starts each in a session of its own)."""
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self, kernels_too: bool = True) -> None:
        """SIGKILL the server's process group (it leads it: we started it with setsid).

        Its kernels live in sessions of their own and survive that, like after a real crash;
        `kernels_too` ends them as well (psutil handles from before the kill, so no pid reuse).
        """
        if self.proc is None:
            return
        children = self.kernels() if kernels_too else []
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        for child in children:
            try:
                child.kill()
            except Exception:
                pass


def have_chromium() -> bool:
    return os.path.exists(CHROMIUM) and shutil.which(CHROMIUM) is not None


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
