"""The panel's controller without widgets or a kernel: what it shows (navigation) from one
snapshot per poll of a real workspace, its worker threads, and Generate in one worker."""

from __future__ import annotations

import ast
import os
import threading

from gemma_ft_widgets.ui import controller as controller_module
from gemma_ft_widgets.ui.controller import PanelController
from gemma_ft_widgets.ui.state_table import ACTIVE, ENDED, LOOKS, look

from .conftest import wait_for


def test_the_controller_module_builds_no_widgets():
    tree = ast.parse(open(controller_module.__file__, encoding="utf-8").read())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.split(".")[0] in ("ipywidgets", "traitlets", "bqplot")}


def test_every_state_has_one_look():
    from gemma_ft_widgets.runs import State

    assert set(LOOKS) == set(State)
    assert ACTIVE == ("STARTING", "RUNNING", "STOPPING") and set(ENDED) == {"FINISHED", "ABORTED", "FAILED", "ORPHANED"}
    assert look("IDLE").view == "form" and look("FAILED").stderr and look("ORPHANED").clean
    assert look("SOMETHING NEW").view == "dashboard"  # a newer state is still drawn


def test_a_missing_workspace_shows_the_form(tmp_path, sim_env):
    from gemma_ft_widgets.runs import RunManager

    ctl = PanelController(RunManager(str(tmp_path / "not-yet")))
    snap = ctl.poll()
    assert snap.shown is None and snap.runs == [] and snap.queue is None and snap.active == ""
    assert snap.workspace.state.value == "IDLE" and not os.path.exists(tmp_path / "not-yet")


def test_navigation_follows_a_new_run_and_forgets_a_deleted_pin(manager, make_config):
    ctl = PanelController(manager)
    assert ctl.poll().shown is None  # nothing yet: the form
    first = manager.start(make_config(max_steps=5))
    wait_for(lambda: manager.status(first.run_dir).state.value == "FINISHED", 60, what="the first run")
    snap = ctl.poll()
    assert snap.shown.run_dir == first.run_dir and snap.active == ""  # the newest run, ended
    ctl.navigate("form")
    assert ctl.poll().shown is None
    ctl.navigate("run", first.run_dir)
    assert ctl.poll().shown.run_dir == first.run_dir
    second = manager.start(make_config(max_steps=100_000))
    snap = ctl.poll()
    assert snap.active == second.run_dir and snap.shown.run_dir == second.run_dir and ctl.mode == "auto"
    manager.stop(force=True)
    ctl.navigate("run", first.run_dir)
    manager.delete(first.run_dir)
    snap = ctl.poll()
    assert snap.shown.run_dir == second.run_dir and (ctl.mode, ctl.pinned) == ("auto", "")
    assert ctl.playground_run(snap).run_dir == second.run_dir


def test_workers_report_errors_and_count_repeated_messages(manager):
    done = []
    ctl = PanelController(manager, on_done=lambda: done.append(1))
    release = threading.Event()
    ctl.spawn("slow", lambda: release.wait(10))
    assert ctl.busy("slow") and not ctl.busy("other") and not ctl.wait(0.1)
    release.set()

    def broken():
        raise OSError("disk hiccup")

    ctl.spawn("broken", broken)
    ctl.spawn("broken", broken)
    assert ctl.wait(10) and len(done) == 3 and not ctl.busy("slow")
    assert [(m, kind, n) for _, m, kind, n in ctl.messages] == [("broken failed: OSError: disk hiccup", "error", 2)]


class FakeSamplers:
    """Stands in for runs.warm_sampler.WarmSamplers (the real one: tests/test_warm_sampler.py)."""

    def __init__(self):
        self.threads = []

    def generate(self, run_dir, messages, checkpoint=None, model="tuned", on_progress=None, **settings):
        self.threads.append(threading.current_thread().name)
        on_progress(f"loading {model}")
        return {"text": f"{model} answer", "seconds": 0.1}


def test_generate_samples_in_the_calling_worker_and_tells_its_phase(manager):
    ctl = PanelController(manager)
    samplers, phases, got = FakeSamplers(), [], {}

    def work():
        got["answers"] = ctl.sample(samplers, "run", [{"content": "hi"}], [{"content": "hi"}], None, {},
                                    on_phase=lambda p: phases.append((p, ctl.sampling_phase())))

    ctl.spawn("sample", work)
    assert ctl.wait(10)
    assert samplers.threads == ["gft-sample", "gft-sample"]  # no thread of its own inside the worker
    assert got["answers"] == ({"text": "tuned answer", "seconds": 0.1}, {"text": "base answer", "seconds": 0.1})
    assert [p for p, _ in phases] == ["starting the sampler in a separate process", "loading tuned",
                                      "the base model", "loading base"]
    assert all(shown.startswith(p + "… ") and shown.endswith(" s") for p, shown in phases)
