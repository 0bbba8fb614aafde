"""The Jupyter server extension (/gemma-ft/api/) in a real `jupyter server`, on runs started
from a terminal with the real CLI (simulated trainer): what it shows, that it holds no state
across a restart, and its security (authentication, XSRF, run names, stopping only the run
it names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from gemma_ft_widgets.runs import RunManager

from .browser.lab import LabServer
from .conftest import SIM_TRAINER, _cleanup, verified_processes, wait_for
from .jupyter_ext import install_into, package_env

pytestmark = pytest.mark.slow
API = "/gemma-ft/api"


def start_cli_run(workspace: str, config: dict, env: dict | None = None) -> str:
    """`gemma-ft start CONFIG --workspace WS`, as typed in a terminal; returns the run's name."""
    path = os.path.join(os.path.dirname(workspace), f"config-{len(os.listdir(os.path.dirname(workspace)))}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "start", path, "--workspace", workspace],
                         capture_output=True, text=True, timeout=60,
                         env=package_env({**os.environ, "GEMMA_FT_TRAINER": SIM_TRAINER, **(env or {})}))
    assert out.returncode == 0, out.stderr
    return os.path.basename(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def servers(tmp_path):
    """`servers(workspaces=None, args=())`: a `jupyter server` with XSRF checks on and the
    extension enabled; ended (and every run in tmp_path stopped) at teardown."""
    made, spaces = [], []

    def make(workspaces=None, args=()):
        home = tmp_path / f"jupyter-home-{len(made)}"
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        server = LabServer(str(root), str(home), env=package_env(), args=list(args), xsrf=True, app="server")
        install_into(server)
        if workspaces:
            spaces.extend(workspaces)
            with open(os.path.join(server.env["JUPYTER_CONFIG_DIR"], "jupyter_server_config.json"), "w") as f:
                json.dump({"GemmaFT": {"workspaces": list(workspaces)}}, f)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()
        server.kill()
    for ws in spaces:
        _cleanup(ws)


def get(server, path: str, **kw):
    return requests.get(server.url + API + path, headers={"Authorization": f"token {server.token}"},
                        timeout=20, **kw)


def post(server, path: str, body=None):
    return requests.post(server.url + API + path, headers={"Authorization": f"token {server.token}"},
                         json=body or {}, timeout=60)


def current(server, index: int = 0) -> dict | None:
    return get(server, "/workspaces").json()["workspaces"][index]["run"]


def test_api_follows_a_terminal_run_and_survives_a_server_restart(servers, tmp_path, make_config):
    ws = str(tmp_path / "ws")
    server = servers([ws])
    first = get(server, "/workspaces").json()["workspaces"]
    assert first == [{"index": 0, "path": ws, "exists": False, "run": None, "notice": None, "error": None}]

    # 1,000 steps of 0.05 s: long enough to outlast a server restart on a loaded machine (at 400
    # steps the run once finished before the restarted server answered, in a CI rehearsal).
    name = start_cli_run(ws, make_config(max_steps=1000), {"GEMMA_FT_SIM_STEP_TIME": "0.05"})
    run = wait_for(lambda: (lambda r: r if r and r["state"] == "RUNNING" and (r["step"] or 0) >= 3 else None)(
        current(server)), 30, 0.2, "the run to show RUNNING")
    assert run["name"] == name and run["max_steps"] == 1000 and run["active"]
    assert run["eta_s"] > 0 and run["step_time_s"] == pytest.approx(0.05) and not run["stalled"]
    later = wait_for(lambda: (lambda r: r if r["step"] > run["step"] + 5 else None)(current(server)), 30, 0.2,
                     "the step to move")
    assert later["loss"] is not None

    detail = get(server, f"/workspaces/0/runs/{name}").json()
    assert detail["status"]["run_name"] == name and detail["metrics"]["step"]["event"] == "step"
    assert detail["metrics"]["step"]["step"] >= later["step"]
    assert [r["run_name"] for r in get(server, "/workspaces/0/runs").json()["runs"]] == [name]

    # A restart: the new process answers from the files alone, and the run keeps moving.
    server.stop()
    server.start()
    again = current(server)
    assert again["name"] == name and again["state"] == "RUNNING" and again["step"] >= later["step"]
    done = wait_for(lambda: (lambda r: r if r["state"] == "FINISHED" else None)(current(server)), 120, 0.3,
                    "FINISHED")
    assert done["step"] == 1000 and done["eta_s"] is None
    notice = get(server, "/workspaces").json()["workspaces"][0]["notice"]
    assert notice["level"] == "success" and notice["key"] == f"{name}#1:FINISHED" and name in notice["text"]


def test_a_stalled_run_and_a_failed_one_get_their_notices(servers, tmp_path, make_config):
    ws = str(tmp_path / "ws")
    server = servers([ws], ["--GemmaFT.stall_min_seconds=1", "--GemmaFT.stall_factor=2"])
    name = start_cli_run(ws, make_config(max_steps=1000), {"GEMMA_FT_SIM_HANG": "5"})
    entry = wait_for(lambda: (lambda e: e if e["run"] and e["run"]["stalled"] else None)(
        get(server, "/workspaces").json()["workspaces"][0]), 30, 0.3, "the run to be reported stalled")
    assert entry["run"]["state"] == "RUNNING" and entry["run"]["step"] == 5 and entry["run"]["idle_s"] > 1
    assert entry["notice"]["level"] == "warning" and entry["notice"]["key"] == f"{name}#1:stalled@5"

    # The hung trainer is killed (SIGKILL, identity verified through the lock): FAILED.
    verified_processes(ws)["trainer"].kill()
    entry = wait_for(lambda: (lambda e: e if e["run"]["state"] == "FAILED" else None)(
        get(server, "/workspaces").json()["workspaces"][0]), 30, 0.3, "FAILED")
    assert entry["notice"]["level"] == "error" and "SIGKILL" in entry["notice"]["text"]


def login(server) -> requests.Session:
    """A browser-like session: the login form with the token, as a person would type it."""
    s = requests.Session()
    s.get(server.url + "/login", timeout=20)
    r = s.post(server.url + "/login", data={"password": server.token, "_xsrf": s.cookies.get("_xsrf")},
               timeout=20, allow_redirects=False)
    assert r.status_code in (302, 303), r.text[:300]
    assert s.get(server.url + API + "/workspaces", timeout=20).status_code == 200  # the cookie works
    return s


def test_security_auth_xsrf_names_and_stop_only_the_named_run(servers, tmp_path, make_config):
    ws1, ws2 = str(tmp_path / "ws1"), str(tmp_path / "ws2")
    outside = tmp_path / "outside"
    outside.mkdir()
    server = servers([ws1, ws2])
    old = start_cli_run(ws1, make_config(max_steps=3))
    wait_for(lambda: RunManager(ws1).status().state.value == "FINISHED", 30, 0.1, "the short run to finish")
    a = start_cli_run(ws1, make_config(max_steps=100000))
    # Another model, so another folder name: two runs started in the same second in two
    # workspaces are both tiny-<that second>, and `b` would name `a` in workspace 0.
    b = start_cli_run(ws2, make_config(model="tiny-random", max_steps=100000))
    for ws in (ws1, ws2):
        wait_for(lambda: RunManager(ws).status().state.value == "RUNNING", 30, 0.1, "RUNNING")
    trainer_b = RunManager(ws2).status().trainer_pid

    # Unauthenticated: every route is refused with 403 (no redirect to a login page).
    for path in ("/workspaces", "/workspaces/0/runs", f"/workspaces/0/runs/{a}"):
        r = requests.get(server.url + API + path, timeout=20, allow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    r = requests.post(server.url + API + f"/workspaces/0/runs/{a}/stop", json={}, timeout=20)
    assert r.status_code == 403
    r = requests.get(server.url + API + "/workspaces", headers={"Authorization": "token wrong"}, timeout=20)
    assert r.status_code == 403

    # Logged in with a cookie, a POST without the XSRF token is refused; the run goes on.
    s = login(server)
    r = s.post(server.url + API + f"/workspaces/0/runs/{a}/stop", json={}, timeout=20)
    assert r.status_code == 403 and "xsrf" in r.text.lower()
    assert RunManager(ws1).status().state.value == "RUNNING"

    # Names that are paths are refused before the file system is asked; a link out of the
    # workspace is not a run either.
    os.symlink(str(outside), os.path.join(ws1, "escape"))
    for bad, code in (("%2E%2E", 400), ("..%2F..%2Fetc", 400), ("%2Fetc%2Fpasswd", 400), (".lock", 400),
                      ("..%2Fws2%2F" + b, 400), ("escape", 404), ("no-such-run", 404)):
        for r in (get(server, f"/workspaces/0/runs/{bad}"), post(server, f"/workspaces/0/runs/{bad}/stop")):
            assert r.status_code == code, (bad, r.status_code, r.text)
    assert get(server, f"/workspaces/7/runs/{a}").status_code == 404
    assert post(server, f"/workspaces/0/runs/{b}/stop").status_code == 404  # b lives in workspace 1

    # Stopping the ended run stops nothing; stopping `a` (with the XSRF token) stops only `a`.
    r = post(server, f"/workspaces/0/runs/{old}/stop")
    assert r.status_code == 200 and r.json()["stopped"] is False
    assert RunManager(ws1).status().state.value == "RUNNING"
    r = s.post(server.url + API + f"/workspaces/0/runs/{a}/stop", json={}, timeout=60,
               headers={"X-XSRFToken": s.cookies.get("_xsrf")})
    assert r.status_code == 200, r.text
    assert r.json()["stopped"] is True and r.json()["state"] == "ABORTED"
    assert RunManager(ws1).status(a).state.value == "ABORTED"
    st_b = RunManager(ws2).status()
    assert st_b.state.value == "RUNNING" and st_b.trainer_pid == trainer_b and st_b.run_name == b
    wait_for(lambda: (RunManager(ws2).status().step or 0) > (st_b.step or 0), 20, 0.1, "b to keep training")
    assert post(server, f"/workspaces/0/runs/{a}/stop", {"force": "yes"}).status_code == 400
