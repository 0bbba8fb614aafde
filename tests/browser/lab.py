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

    def __init__(self, root_dir: str, home: str, env: dict | None = None, args: list | None = None,
                 xsrf: bool = False, app: str = "lab"):
        """`args`: more command-line options; `xsrf`: keep Jupyter's XSRF check (off by default,
        so tests may POST with the token alone); `app`: "lab", or "server" (no front end)."""
        self.root_dir, self.home = root_dir, home
        self.args, self.xsrf, self.app = list(args or []), xsrf, app
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = child_env(throwaway_dirs(home), env)
        self.log_path = os.path.join(home, f"lab-{self.port}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> LabServer:
        jupyter = [sys.executable, "-m", "jupyter"]
        if self.app == "lab":
            subprocess.run(jupyter + ["labextension", "disable",
                                      "@jupyterlab/apputils-extension:announcements"],
                           env=self.env, capture_output=True, check=False, timeout=120)
        cmd = jupyter + [self.app, "--no-browser", "--ip", "127.0.0.1", f"--port={self.port}",
                         f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
                         "--ServerApp.password=", "--allow-root"]
        cmd += ["--LabApp.news_url="] if self.app == "lab" else []
        cmd += [] if self.xsrf else ["--ServerApp.disable_check_xsrf=True"]
        cmd += self.args
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
        """Ctrl+C-like stop (SIGINT twice skips the confirmation), then the group if needed.

        Kernels the server failed to shut down are killed too (handles taken before the stop).
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        children = self.kernels()
        self.proc.send_signal(sig)
        if sig == signal.SIGINT:
            time.sleep(0.3)
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        reap(children)
        self._log.close()

    def kernels(self) -> list:
        """The server's kernel processes and their helpers, never a training run they started.

        jupyter_client starts each kernel in a session of its own; a run's supervisor is the
        kernel's child too, but in yet another session (that is what lets it outlive the
        kernel), so only descendants sharing their kernel's session count.
        """
        return own_tree(self.proc)

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
        if children:
            reap(children, grace=0)
        self._log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def own_tree(proc) -> list:
    """psutil handles of `proc`'s children and of their descendants in the same session."""
    import psutil

    if proc is None:
        return []
    out = []
    try:
        children = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    for child in children:
        out.append(child)
        try:
            sid = os.getsid(child.pid)
            for d in child.children(recursive=True):
                try:
                    if os.getsid(d.pid) == sid:
                        out.append(d)
                except OSError:
                    pass
        except (OSError, psutil.Error):
            pass
    return out


def child_env(dirs: dict, env: dict | None) -> dict:
    """os.environ plus the throw-away Jupyter folders plus `env`; a None value unsets a name.

    The package's own switches (GEMMA_FT_*) are never inherited from the shell that runs the
    tests: a test says what it wants, or gets the defaults.
    """
    out = {k: v for k, v in os.environ.items() if not k.startswith("GEMMA_FT_")}
    out.update(dirs)
    out["JUPYTER_PLATFORM_DIRS"] = "1"
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


def reap(procs, grace: float = 5.0) -> list:
    """Wait up to `grace` s for psutil processes to end, SIGKILL those left; returns them."""
    import psutil

    _gone, alive = psutil.wait_procs(list(procs), timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return alive


def throwaway_dirs(home: str) -> dict:
    dirs = {k: os.path.join(home, k.lower()) for k in
            ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    return dirs


class VoilaServer:
    """`voila NOTEBOOK` on 127.0.0.1, a free port, throw-away Jupyter folders, own session.

    `stop()` ends it with SIGTERM (Voilà shuts its kernels down), then kills whatever of its
    process tree is left.
    """

    def __init__(self, notebook: str, home: str, env: dict | None = None):
        self.notebook, self.home = os.path.abspath(notebook), home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = child_env(throwaway_dirs(home), env)
        self.log_path = os.path.join(home, f"voila-{self.port}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> VoilaServer:
        cmd = [sys.executable, "-m", "voila", os.path.basename(self.notebook), "--no-browser",
               f"--port={self.port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
               "--show_tracebacks=True"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=os.path.dirname(self.notebook), env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited: {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"voila did not listen in {timeout}s: {self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def processes(self) -> list:
        """Voilà's kernels and their helpers (not a run a kernel started: see `own_tree`)."""
        return own_tree(self.proc)

    def stop(self, timeout: float = 20) -> list:
        """SIGTERM, wait, then SIGKILL the group and any child left; returns the stragglers."""
        if self.proc is None:
            return []
        children = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        left = reap(children)
        self._log.close()
        return left


def have_chromium() -> bool:
    return os.path.exists(CHROMIUM) and shutil.which(CHROMIUM) is not None


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
