"""The `gemma-ft` command: happy paths and every error path, with real runs underneath."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from gemma_ft_widgets import cli, contract
from gemma_ft_widgets.runs import RunManager, State, lockfile

from .conftest import needs_mount, wait_for, wait_state, wait_step

LONG = 100_000


@pytest.fixture
def gft(capsys, workspace):
    """Run `gemma-ft ARGS --workspace WS` in-process: (exit code, stdout, stderr)."""

    def run(*args, ws=workspace):
        code = cli.main([*map(str, args)] + (["--workspace", str(ws)] if ws is not None else []))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def config_file(tmp_path, make_config):
    def write(**overrides) -> str:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(make_config(**overrides)))
        return str(path)

    return write


def gemma_ft_subprocess(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# -- the commands ----------------------------------------------------------------------------
def test_start_status_list_logs_stop_resume(gft, config_file, workspace):
    code, out, err = gft("start", config_file(max_steps=LONG))
    assert code == 0, err
    run_dir = out.strip()
    assert os.path.isdir(run_dir) and os.path.dirname(run_dir) == workspace

    m = RunManager(workspace)
    wait_step(m, 2)
    code, out, _ = gft("status", "--json")
    st = json.loads(out)
    assert code == 0 and {"state", "run_dir", "step", "max_steps", "loss", "reason"} <= set(st)
    assert st["state"] == "RUNNING" and st["run_dir"] == run_dir and st["max_steps"] == LONG
    code, out, _ = gft("status")
    assert code == 0 and "RUNNING" in out and os.path.basename(run_dir) in out

    code, out, _ = gft("list", "--json")
    assert code == 0 and [r["run_dir"] for r in json.loads(out)] == [run_dir]
    code, out, _ = gft("list")
    assert code == 0 and "RUNNING" in out

    code, out, _ = gft("logs")
    assert code == 0 and "simulated trainer" in out
    code, out, _ = gft("logs", os.path.basename(run_dir), "--stream", "status")
    assert code == 0 and "STARTING" in out

    code, out, _ = gft("stop", "--timeout", "20")
    assert code == 0 and "SIGINT" in out and "ABORTED" in out
    code, _, err = gft("stop")
    assert code == 1 and "nothing to stop" in err

    code, out, _ = gft("resume")
    assert code == 0 and out.strip() == run_dir
    wait_for(lambda: m.status().attempt == 2 and m.status().state == State.RUNNING, what="attempt 2 running")
    code, out, _ = gft("stop", "--force")
    assert code == 0 and "SIGKILL" in out
    assert m.status().state == State.ABORTED


def test_start_is_a_subprocess_that_returns_while_the_run_goes_on(workspace, config_file):
    out = gemma_ft_subprocess("start", config_file(max_steps=30), "--workspace", workspace)
    assert out.returncode == 0, out.stderr
    assert "STARTING" in out.stderr or "RUNNING" in out.stderr
    m = RunManager(workspace)
    assert wait_state(m, State.FINISHED).run_dir == out.stdout.strip()
    follow = gemma_ft_subprocess("logs", "--follow", "--stream", "status", "--workspace", workspace)
    assert follow.returncode == 0 and "FINISHED" in follow.stdout


def test_logs_follow_ends_with_the_run(workspace, config_file, tmp_path):
    code = cli.main(["start", config_file(max_steps=40), "--workspace", workspace])
    assert code == 0
    follow = gemma_ft_subprocess("logs", "--follow", "--stream", "status", "--workspace", workspace)
    assert follow.returncode == 0 and follow.stdout.strip().splitlines()[-1].split()[1] == "FINISHED"


def test_workspace_from_environment(sim_env, workspace, config_file, capsys):
    sim_env.setenv(contract.WORKSPACE_ENV, workspace)
    assert cli.main(["start", config_file(max_steps=3)]) == 0
    run_dir = capsys.readouterr().out.strip()
    wait_state(RunManager(workspace), State.FINISHED)
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == run_dir


def test_without_a_workspace_runs_go_to_gemma_ft_runs_in_the_current_folder(sim_env, tmp_path, config_file,
                                                                            capsys):
    sim_env.chdir(tmp_path)  # sim_env has removed GEMMA_FT_WORKSPACE
    assert cli.main(["start", config_file(max_steps=3)]) == 0
    run_dir = capsys.readouterr().out.strip()
    assert os.path.dirname(run_dir) == str(tmp_path / "gemma_ft_runs")
    wait_state(RunManager(str(tmp_path / "gemma_ft_runs")), State.FINISHED)
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == run_dir


def test_clean_and_delete(gft, config_file, workspace):
    code, out, _ = gft("start", config_file(max_steps=LONG, checkpoint_every=2))
    run_dir = out.strip()
    m = RunManager(workspace)
    wait_step(m, 3)
    code, _, err = gft("clean")
    assert code == 1 and "active" in err
    code, _, err = gft("delete", os.path.basename(run_dir), "--yes")
    assert code == 1 and "active" in err
    os.killpg(lockfile.read_lock(workspace).data["pgid"], signal.SIGKILL)
    wait_state(m, State.ORPHANED)
    code, out, _ = gft("clean")
    assert code == 0 and "every file is kept" in out and os.path.isdir(run_dir)
    code, out, _ = gft("status")
    assert "ORPHANED" in out and "resume" in out
    code, _, err = gft("delete", os.path.basename(run_dir))  # stdin is not a terminal here
    assert code == 1 and "--yes" in err and os.path.isdir(run_dir)
    code, out, _ = gft("delete", os.path.basename(run_dir), "--yes")
    assert code == 0 and not os.path.exists(run_dir)
    code, out, _ = gft("status", "--json")
    assert json.loads(out)["state"] == "IDLE"


# -- error paths -----------------------------------------------------------------------------
def test_invalid_config_exits_nonzero_and_creates_nothing(gft, tmp_path, make_config, sim_env):
    ws = tmp_path / "fresh"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make_config(max_steps=-1, lora_rank="big")))
    code, _, err = gft("start", bad, ws=ws)
    assert code == 1 and "max_steps" in err and "lora_rank" in err
    code, _, err = gft("start", tmp_path / "missing.json", ws=ws)
    assert code == 1 and "not found" in err
    (tmp_path / "garbage.json").write_text("{not json")
    code, _, err = gft("start", tmp_path / "garbage.json", ws=ws)
    assert code == 1 and "cannot read" in err
    assert not ws.exists()


def test_start_while_a_run_is_active(gft, config_file):
    code, out, _ = gft("start", config_file(max_steps=LONG))
    assert code == 0
    code, _, err = gft("start", config_file())
    assert code == 1 and "already active" in err and os.path.basename(out.strip()) in err and "gemma-ft stop" in err


@pytest.mark.parametrize("args", [["status", "nope"], ["logs", "nope"], ["resume", "nope"],
                                  ["delete", "nope", "--yes"], ["export", "nope", "--out", "x"],
                                  ["sample", "nope", "hello"], ["logs", "../ws"], ["delete", "/etc", "--yes"]])
def test_unknown_run(gft, config_file, args):
    assert gft("start", config_file(max_steps=2))[0] == 0
    code, _, err = gft(*args)
    assert code == 1 and "unknown run" in err


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["list"], ["logs"], ["stop"], ["resume"],
                                  ["clean"], ["delete", "x", "--yes"], ["export", "x", "--out", "y"],
                                  ["sample", "hello"]])
def test_workspace_that_does_not_exist(gft, tmp_path, args):
    missing = tmp_path / "no-such-workspace"
    code, _, err = gft(*args, ws=missing)
    assert code == 1 and "does not exist" in err and str(missing) in err
    assert not missing.exists()


def test_start_in_a_workspace_whose_parent_does_not_exist(gft, config_file, tmp_path):
    code, _, err = gft("start", config_file(), ws=tmp_path / "a" / "b")
    assert code == 1 and "does not exist" in err


@pytest.fixture
def read_only_workspace(tmp_path):
    """A workspace this process cannot write: chmod for a user, a read-only mount for root."""
    ws = tmp_path / "ro"
    ws.mkdir()
    if os.geteuid() != 0:
        ws.chmod(0o555)
        yield ws
        ws.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ws)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        needs_mount(f"root can write anywhere and cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    try:
        yield ws
    finally:
        subprocess.run(["umount", str(ws)], check=False)


@pytest.mark.parametrize("args", [["stop"], ["resume"], ["clean"], ["start", "CONFIG"]])
def test_workspace_that_is_not_writable(gft, read_only_workspace, config_file, args):
    args = [config_file() if a == "CONFIG" else a for a in args]
    code, _, err = gft(*args, ws=read_only_workspace)
    assert code == 1 and "not writable" in err


def test_nothing_to_stop_or_resume(gft, config_file, workspace):
    code, _, err = gft("stop")
    assert code == 1 and "nothing to stop" in err
    code, _, err = gft("resume")
    assert code == 1 and "nothing to resume" in err
    code, _, err = gft("clean")
    assert code == 1 and "nothing to clean" in err
    assert gft("start", config_file(max_steps=3))[0] == 0
    wait_state(RunManager(workspace), State.FINISHED)
    code, _, err = gft("resume")
    assert code == 1 and "nothing to resume" in err and "FINISHED" in err
    code, _, err = gft("stop")
    assert code == 1 and "nothing to stop" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["delete"])
    assert e.value.code == 2


def test_console_script_help():
    out = gemma_ft_subprocess("--help")
    assert out.returncode == 0
    for command in ("start", "status", "list", "logs", "stop", "resume", "clean", "delete", "demo", "export",
                    "sample"):
        assert command in out.stdout


def test_sample_refuses_an_empty_prompt_before_starting_anything(gft, config_file):
    assert gft("start", config_file(max_steps=2))[0] == 0
    code, out, err = gft("sample", "   ")
    assert code == 1 and "the prompt is empty" in err and out == ""


def test_demo_follows_a_run_to_the_end(workspace):
    from gemma_ft_widgets.config import sample_dataset_path

    assert os.path.exists(sample_dataset_path()), "the packaged sample dataset is missing"
    out = gemma_ft_subprocess("demo", "--steps", "20", "--workspace", workspace, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[FINISHED]" in out.stdout
    assert f'ControlPanel(workspace="{workspace}")' in out.stdout
    assert RunManager(workspace).status().state == State.FINISHED


def test_every_remedy_is_a_gemma_ft_command_with_the_workspace():
    """What the CLI (and the server) tell a user to do about a refusal: the command, with the
    run and the workspace it needs, quoted for a shell."""
    from gemma_ft_widgets import remedies
    from gemma_ft_widgets.runs import Code, Remedy, RunError

    texts = {r: remedies.command_text(r, "r 1", "/my ws") for r in Remedy}
    assert texts[Remedy.STOP] == "stop it with `gemma-ft stop --workspace '/my ws'`"
    assert texts[Remedy.RESTORE_LOCK] == "restore its lock with `gemma-ft restore-lock 'r 1' --workspace '/my ws'`"
    assert all("gemma-ft" in t for r, t in texts.items() if r != Remedy.NEW_RUN)
    e = RunError("run r1 is active", Code.ACTIVE, (Remedy.STOP,), "r1", "/ws")
    assert remedies.error_text(e) == "run r1 is active; stop it with `gemma-ft stop --workspace /ws`"
