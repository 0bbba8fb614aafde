"""The run queue, sweeps and webhooks, with real supervisors, trainers (simulated), signals,
subprocess CLIs and a real HTTP server on localhost."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs import RunManager, State
from gemma_ft_widgets.runs import queue as runqueue

from .conftest import verified_processes, wait_for, wait_state

SECRET = "s3cr3t-T0KEN-9f8e7d"


def gemma_ft(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def ended(manager: RunManager, n: int, timeout=60):
    """Wait until n runs exist and none is active; return their statuses, oldest first."""
    def check():
        runs = manager.runs()
        return runs if len(runs) >= n and not any(r.active for r in runs) and \
            not runqueue.read(manager.workspace).entries else None
    return sorted(wait_for(check, timeout, what=f"{n} ended runs"), key=lambda r: r.started_at)


class Hooks:
    """A localhost webhook receiver: records each POST; `mode` answers ok, 500 or hangs."""

    def __init__(self, mode="ok"):
        self.mode, self.posts = mode, []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hooks.posts.append({"path": self.path, "body": json.loads(body), "at": time.time()})
                if hooks.mode == "hang":
                    time.sleep(30)
                self.send_response(500 if hooks.mode == "500" else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/{SECRET}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks():
    made = []

    def make(mode="ok"):
        made.append(Hooks(mode))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_three_queued_runs_finish_in_order_never_two_at_once(manager, make_config, workspace):
    entries = [manager.queue.add(make_config(max_steps=30), name=f"q{i}") for i in range(3)]
    seen_active, followed = [], []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = manager.runs()
        seen_active.append([r.run_name for r in runs if r.active])
        out = gemma_ft("status", "--json", "--workspace", workspace)
        st = json.loads(out.stdout)
        if st.get("run_name") and (not followed or followed[-1] != st["run_name"]):
            followed.append(st["run_name"])
        if len(runs) == 3 and not any(r.active for r in runs):
            break
    assert all(len(a) <= 1 for a in seen_active), [a for a in seen_active if len(a) > 1]
    runs = ended(manager, 3)
    assert [r.state for r in runs] == [State.FINISHED] * 3
    assert [r.queue_id for r in runs] == [e.id for e in entries]  # started in queue order
    assert [r.run_name.split("-")[0] for r in runs] == ["q0", "q1", "q2"]
    assert [f.split("-")[0] for f in followed] == ["q0", "q1", "q2"]  # `status` followed each
    for a, b in zip(runs, runs[1:]):
        assert a.ended_at <= b.started_at
    assert runqueue.read(workspace).entries == []


def test_a_killed_run_pauses_the_queue_as_orphaned_and_resume_goes_on(manager, make_config, workspace):
    first = manager.queue.add(make_config(max_steps=150), name="first")
    second = manager.queue.add(make_config(max_steps=10), name="second")
    st = wait_state(manager, State.RUNNING)
    procs = verified_processes(workspace)  # pid + create time + cmdline checked
    assert set(procs) >= {"supervisor", "trainer"}
    for p in procs.values():
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(procs.values()), timeout=10)
    st = wait_state(manager, State.ORPHANED)
    assert st.queue_id == first.id
    q = manager.queue.list()
    assert [e.id for e in q.entries] == [second.id] and "ORPHANED" in q.blocked
    assert manager.queue.advance() is None
    out = gemma_ft("queue", "list", "--workspace", workspace)
    assert "is ORPHANED" in out.stdout and "gemma-ft resume" in out.stdout and "gemma-ft queue resume" in out.stdout
    time.sleep(1)
    assert len(manager.runs()) == 1  # nothing started past the orphan

    manager.resume(st.run_name)
    runs = ended(manager, 2)
    assert [(r.run_name.split("-")[0], r.state) for r in runs] == [("first", State.FINISHED), ("second", State.FINISHED)]
    assert runs[0].attempt == 2


def test_a_failed_run_pauses_the_queue_unless_the_policy_continues(manager, make_config, workspace, sim_env):
    sim_env.setenv("GEMMA_FT_SIM_CRASH_AT", "5")
    manager.queue.add(make_config(max_steps=10), name="a")
    manager.queue.add(make_config(max_steps=10), name="b")
    wait_for(lambda: manager.queue.list().paused, 30, what="the queue to pause")
    q = manager.queue.list()
    assert q.pause_reason.startswith("a-") and "ended FAILED" in q.pause_reason and len(q.entries) == 1
    assert len(manager.runs()) == 1
    manager.queue.set_policy("continue")
    manager.queue.add(make_config(max_steps=10), name="c")
    run = manager.queue.resume()
    assert run is not None and run.name.startswith("b-")
    runs = ended(manager, 3)
    assert [r.state for r in runs] == [State.FAILED] * 3  # every run crashes at step 5; none paused it


def test_eight_racing_adds_and_a_racing_start_lose_nothing_and_run_one(make_config, workspace, tmp_path):
    config = tmp_path / "long.json"
    config.write_text(json.dumps(make_config(max_steps=100_000)))
    procs = [subprocess.Popen([sys.executable, "-m", "gemma_ft_widgets.cli", "queue", "add", str(config),
                               "--workspace", workspace], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    procs.append(subprocess.Popen([sys.executable, "-m", "gemma_ft_widgets.cli", "start", str(config),
                                   "--workspace", workspace], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
    outs = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    ids = [out.split()[1] for code, out, _ in outs[:8]]
    assert all(code == 0 for code, _, _ in outs[:8]), outs
    m = RunManager(workspace)
    q = m.queue.list()
    accounted = [e.id for e in q.entries] + [s["id"] for s in q.started]
    assert sorted(accounted) == sorted(ids)  # no lost entry, none twice
    runs = m.runs()
    assert len([r for r in runs if r.active]) == 1 and len(runs) == 1
    start_code, _, start_err = outs[8]
    if start_code == 0:  # the Start won: every queued entry still waits
        assert q.started == [] and len(q.entries) == 8
    else:
        assert "already active" in start_err and len(q.started) == 1 and len(q.entries) == 7
    m.queue.pause()
    m.stop(force=True)


def test_a_2x2_sweep_gives_four_runs_in_one_group(make_config, workspace, tmp_path):
    config = tmp_path / "base.json"
    config.write_text(json.dumps(make_config(max_steps=8)))
    out = gemma_ft("sweep", config, "--grid", "learning_rate=1e-3,2e-3", "lora_rank=4,8", "--name", "grid1",
                   "--workspace", workspace)
    assert out.returncode == 0, out.stderr
    assert "queued 4 runs as group grid1" in out.stdout
    runs = ended(RunManager(workspace), 4)
    assert {r.group for r in runs} == {"grid1"} and all(r.state == State.FINISHED for r in runs)
    points = set()
    for r in runs:
        cfg = json.load(open(os.path.join(r.run_dir, contract.CONFIG_NAME)))
        points.add((cfg["learning_rate"], cfg["lora_rank"]))
        assert r.run_name.startswith(f"grid1-lr{cfg['learning_rate']}-r{cfg['lora_rank']}")
    assert points == {(1e-3, 4), (1e-3, 8), (2e-3, 4), (2e-3, 8)}


@pytest.mark.parametrize("grid, message", [
    (["learning_rate=1e-3,abc"], "learning_rate: expected a number, got 'abc'"),
    (["lora_rnk=4,8"], "lora_rnk: unknown field"),
    (["learning_rate=1e-3,-1"], "learning_rate: must be > 0, got -1.0"),
    (["max_steps=" + ",".join(str(i) for i in range(1, 10)), "lora_rank=" + ",".join(str(i) for i in range(1, 9))],
     "the grid has 72 points (more than 64); add --yes"),
])
def test_bad_sweeps_are_refused_and_leave_the_queue_untouched(manager, make_config, workspace, tmp_path,
                                                             grid, message):
    manager.queue.pause()  # a queue with content, to compare byte for byte
    manager.queue.add(make_config(max_steps=5), name="waiting")
    path = os.path.join(workspace, contract.QUEUE_NAME)
    before = open(path, "rb").read()
    config = tmp_path / "base.json"
    config.write_text(json.dumps(make_config(max_steps=8)))
    out = gemma_ft("sweep", config, "--grid", *grid, "--workspace", workspace)
    assert out.returncode == 1 and message in out.stderr, out.stderr
    assert open(path, "rb").read() == before
    assert len(manager.runs()) == 0


def test_a_bad_queued_config_is_refused_before_anything_is_queued(manager, workspace, tmp_path, dataset):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"model": "tiny", "dataset": dataset, "learning_rate": "fast", "notify": "ftp://x"}))
    out = gemma_ft("queue", "add", config, "--workspace", workspace)
    assert out.returncode == 1
    assert "learning_rate: expected a number" in out.stderr and "notify: must be an http" in out.stderr
    assert not os.path.exists(os.path.join(workspace, contract.QUEUE_NAME))
    assert "no queued entry 'nope'" in gemma_ft("queue", "remove", "nope", "--workspace", workspace).stderr


def test_one_webhook_per_ended_run_with_its_numbers_and_no_secret_in_any_log(manager, make_config, workspace, hooks):
    hook = hooks()
    for i in range(3):
        manager.queue.add(make_config(max_steps=20, notify=hook.url), name=f"n{i}")
    runs = ended(manager, 3)
    wait_for(lambda: len(hook.posts) >= 3, 20, what="three webhooks")
    time.sleep(1.5)  # a duplicate would arrive by now
    assert len(hook.posts) == 3 and {p["path"] for p in hook.posts} == {f"/hook/{SECRET}"}
    bodies = {p["body"]["run"]: p["body"] for p in hook.posts}
    assert set(bodies) == {r.run_name for r in runs}
    for r in runs:
        b = bodies[r.run_name]
        assert b["state"] == "FINISHED" and b["steps"] == 20 and b["max_steps"] == 20
        assert b["final_eval_loss"] == pytest.approx(r.eval_loss) and b["best_eval_loss"] <= b["final_eval_loss"]
        assert b["elapsed_s"] > 0 and b["text"].startswith(f"gemma-ft: {r.run_name} FINISHED") and b["content"] == b["text"]
        status_log = open(os.path.join(r.run_dir, contract.STATUS_LOG_NAME)).read()
        assert f"NOTIFY webhook sent to http://127.0.0.1:{hook.server.server_port}/… (HTTP 200)" in status_log
    logs = []
    for root, _, files in os.walk(workspace):
        logs += [os.path.join(root, f) for f in files if f.endswith(".log")]
    assert logs and not [p for p in logs if SECRET in open(p, errors="replace").read()]
    for args in (("status",), ("list",), ("queue", "list", "--json"), ("logs", "--stream", "status")):
        assert SECRET not in gemma_ft(*args, "--workspace", workspace).stdout


@pytest.mark.parametrize("mode", ["hang", "500"])
def test_a_failing_webhook_never_delays_the_next_queued_run(manager, make_config, workspace, hooks, mode):
    from gemma_ft_widgets.runs import notify

    hook = hooks(mode)
    manager.queue.add(make_config(max_steps=10, notify=hook.url), name="one")
    manager.queue.add(make_config(max_steps=10), name="two")
    runs = ended(manager, 2)
    one, two = runs
    gap = contract_time(two.started_at) - contract_time(one.ended_at)
    assert 0 <= gap < notify.TIMEOUT_S, gap  # well under a webhook's timeout, let alone its retry
    assert one.state == two.state == State.FINISHED
    log = os.path.join(one.run_dir, contract.STATUS_LOG_NAME)
    expect = "timed out" if mode == "hang" else "HTTP 500"
    wait_for(lambda: expect in open(log).read(), 2 * notify.TIMEOUT_S * notify.TRIES + 10, what="the NOTIFY line")
    line = [x for x in open(log) if " NOTIFY " in x][0]
    assert "failed after 2 tries" in line and SECRET not in line
    assert RunManager(workspace).status(one.run_name).state == State.FINISHED  # the run's result is untouched


def contract_time(iso: str) -> float:
    from gemma_ft_widgets.runs.status import parse_iso

    return parse_iso(iso)


def test_an_orphaned_run_sends_one_webhook_when_first_seen(manager, make_config, workspace, hooks):
    hook = hooks()
    manager.start(make_config(max_steps=100_000, notify=hook.url))
    wait_state(manager, State.RUNNING)
    procs = verified_processes(workspace)
    for p in procs.values():
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(procs.values()), timeout=10)
    for _ in range(5):
        assert manager.status().state == State.ORPHANED
    wait_for(lambda: hook.posts, 20, what="the ORPHANED webhook")
    time.sleep(1.5)
    assert len(hook.posts) == 1 and hook.posts[0]["body"]["state"] == "ORPHANED"


def test_the_panel_queues_shows_pauses_and_resumes(manager, make_config, make_panel, workspace):
    manager.start(make_config(max_steps=100_000))
    wait_state(manager, State.RUNNING)
    panel = make_panel()
    panel.refresh()
    form = panel.form
    form.set_values(make_config(max_steps=10))
    form.validate()
    assert form.start_button.disabled and not form.queue_button.disabled
    assert "Add to queue" in form.blocked_note.value
    form.queue_button.click()
    panel.wait_actions(30)
    entry = runqueue.read(workspace).entries[0]
    assert f"Queued {entry.id}" in form.message.value
    panel.refresh()
    assert panel.sections.get_title(2) == "Queue (1)"
    assert entry.id in panel.queue_view.table.value and "waiting for" in panel.queue_view.summary.value
    panel.queue_view.pause_button.click()
    panel.wait_actions(30)
    panel.refresh()
    assert panel.sections.get_title(2) == "Queue (1) · paused" and "Paused" in panel.queue_view.summary.value
    manager.stop(force=True)
    wait_state(manager, State.ABORTED)
    panel.refresh()
    panel.wait_actions(10)
    assert len(manager.runs()) == 1  # paused: nothing starts
    panel.queue_view.resume_button.click()
    panel.wait_actions(30)
    runs = ended(manager, 2)
    assert runs[1].queue_id == entry.id and runs[1].state == State.FINISHED


def test_a_panel_starts_the_head_of_a_queue_nobody_advanced(manager, make_config, make_panel, workspace):
    """A supervisor killed before it could advance leaves a queue with a free slot: the next
    look starts its head."""
    manager.queue.pause()
    entry = manager.queue.add(make_config(max_steps=10))
    with runqueue.editing(workspace) as q:  # unpaused behind everyone's back: nobody advances
        q.paused = False
    assert manager.runs() == []
    panel = make_panel()
    panel.refresh()
    panel.wait_actions(30)
    runs = ended(manager, 1)
    assert runs[0].queue_id == entry.id


def test_an_entry_whose_dataset_went_away_pauses_the_queue_with_the_reason(manager, make_config, tmp_path,
                                                                          dataset):
    manager.queue.pause()
    gone = tmp_path / "gone.jsonl"
    gone.write_text(open(dataset).read())
    entry = manager.queue.add(make_config(dataset=str(gone), max_steps=5))
    gone.unlink()
    assert manager.queue.resume() is None
    q = manager.queue.list()
    assert q.paused and q.pause_reason.startswith(f"queued entry {entry.id} cannot start: dataset:")
    assert [e.id for e in q.entries] == [entry.id] and manager.runs() == []  # kept, nothing started


def test_queue_resume_goes_on_past_an_orphaned_run_and_keeps_its_files(manager, make_config, workspace):
    manager.queue.add(make_config(max_steps=100_000), name="stuck")
    manager.queue.add(make_config(max_steps=10), name="next")
    st = wait_state(manager, State.RUNNING)
    procs = verified_processes(workspace)
    for p in procs.values():
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(list(procs.values()), timeout=10)
    assert wait_state(manager, State.ORPHANED).run_name == st.run_name
    out = gemma_ft("queue", "resume", "--workspace", workspace)
    assert out.returncode == 0 and "started next-" in out.stdout
    runs = ended(manager, 2)
    stuck = [r for r in runs if r.run_name == st.run_name][0]
    assert stuck.state == State.ORPHANED and os.path.getsize(os.path.join(stuck.run_dir, contract.METRICS_NAME))
    assert [r.state for r in runs if r.run_name != st.run_name] == [State.FINISHED]


def test_the_panel_queues_a_sweep_as_one_group(manager, make_config, make_panel, workspace):
    manager.start(make_config(max_steps=100_000))
    wait_state(manager, State.RUNNING)
    panel = make_panel()
    form = panel.form
    form.set_values(make_config(max_steps=10))
    form.sweep_grid.value = "learning_rate=1e-3,2e-3 lora_rank=4,8"
    form.validate()
    assert form.queue_button.description == "Queue sweep"
    form.queue_button.click()
    panel.wait_actions(30)
    q = runqueue.read(workspace)
    assert len(q.entries) == 4 and len({e.group for e in q.entries}) == 1
    assert {(e.config["learning_rate"], e.config["lora_rank"]) for e in q.entries} == \
        {(1e-3, 4), (1e-3, 8), (2e-3, 4), (2e-3, 8)}
    assert "Queued a sweep of 4 runs as group sweep-" in form.message.value
    form.sweep_grid.value = "learning_rate=1e-3,oops"
    form.queue_button.click()
    panel.wait_actions(30)
    assert "Not queued" in form.message.value and "expected a number" in form.message.value
    assert len(runqueue.read(workspace).entries) == 4  # untouched
    manager.queue.pause()
    manager.stop(force=True)
