"""The playground's warm sampler (runs/warm_sampler.py + train/sample_server.py), with real
processes on a tiny LoRA run trained here by the real trainer: reuse, settings, chat, base
against fine-tuned, and every way it ends (idle, panel close, a run starting, the kernel dying).

One warm process, owned by the module's panel, serves every assertion that samples (its idle
timeout ends it); the tests of how a sampler ends use processes that are still loading.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from gemma_ft_widgets import contract, datasets
from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.runs import RunError, RunManager
from gemma_ft_widgets.runs.launch import package_env
from gemma_ft_widgets.runs.warm_sampler import SERVER_MODULE, WarmSamplers, check_request, registry_dir

from .conftest import SIM_TRAINER, wait_for

pytestmark = pytest.mark.slow

PROMPT = "What is the secret word?"


def sampler_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if SERVER_MODULE in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def gone(pid: int, create_time: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() != create_time or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with one tiny LoRA run, trained (20 steps, high learning rate, no eval) by the
    real trainer in this process, so that its answers differ from the base model's."""
    from gemma_ft_widgets.train import loop

    ws = str(tmp_path_factory.mktemp("warm"))
    run_dir = os.path.join(ws, "trained")
    os.makedirs(run_dir)
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), {
        "model": "tiny", "dataset": sample_dataset_path(), "method": "lora", "max_steps": 20, "learning_rate": 3e-2,
        "warmup_steps": 0, "eval_fraction": 0.0, "checkpoint_every": 100, "log_every": 10})
    cfg = TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME))
    assert loop.Trainer(run_dir, cfg, log=lambda m: None).run().state == "FINISHED"
    return ws, run_dir


@pytest.fixture(scope="module")
def panel(trained):
    from gemma_ft_widgets.ui import ControlPanel

    p = ControlPanel(trained[0], poll=False)
    yield p
    p.close()
    p.wait_actions(60)


def test_chat_history_is_laid_out_in_gemmas_turns_as_the_library_and_training_do():
    dialog = pytest.importorskip("dialog")  # the gemma library's conversation formatter
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is the secret word?"}]
    text = datasets.render_conversation(messages)
    assert text == ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                    "<start_of_turn>user\nWhat is the secret word?<end_of_turn>\n<start_of_turn>model\n")
    assert text == dialog.Conversation(dialog.User("Hi"), dialog.Model("Hello."),
                                       dialog.User("What is the secret word?")).as_text(format="gemma3")
    # What the trainer saw for the same exchange as a chat record: the prompt part is identical.
    record = {"messages": messages + [{"role": "assistant", "content": "Pineapple."}]}
    assert datasets.render_example(record, "chat")[0] == text


def test_bad_settings_are_refused_before_any_process_starts(panel, trained):
    _, run_dir = trained
    before = {p.pid for p in sampler_children()}
    for bad, words in [({"top_k": 5, "top_p": 0.5}, "not both"), ({"temperature": -1}, "temperature"),
                       ({"max_new_tokens": 0}, "max new tokens"), ({"seed": 1.5}, "seed")]:
        with pytest.raises(RunError, match=words):
            panel.samplers.generate(run_dir, PROMPT, **bad)
    with pytest.raises(RunError, match="end with a user message"):
        panel.samplers.generate(run_dir, [{"role": "assistant", "content": "x"}])
    with pytest.raises(RunError, match="checkpoint step 7 not found"):
        panel.samplers.generate(run_dir, PROMPT, checkpoint=7)
    assert {p.pid for p in sampler_children()} == before
    assert check_request(PROMPT)["seed"] >= 0  # no seed: a random one, returned to reproduce it


def test_a_second_generate_reuses_the_warm_process_and_greedy_is_deterministic(panel, trained):
    ws, run_dir = trained
    pool = panel.samplers
    phases = []
    first = pool.generate(run_dir, PROMPT, max_new_tokens=16, on_progress=phases.append)
    assert any("loading the model and step_20" in p for p in phases), phases
    s = pool.sampler(run_dir)
    assert s is not None and first["pid"] == s.pid
    entry = json.load(open(os.path.join(registry_dir(ws), f"{s.pid}.json")))
    assert (entry["pid"], entry["create_time"], entry["cmdline"]) == s.identity
    second = pool.generate(run_dir, PROMPT, max_new_tokens=16, seed=123)
    assert pool.sampler(run_dir) is s and s.alive and second["pid"] == s.pid
    assert psutil.Process(s.pid).create_time() == s.create_time  # the very same process
    assert first["text"] == second["text"] and first["text"]  # temperature 0: greedy, seed ignored
    assert first["checkpoint"] == contract.checkpoint_path(run_dir, 20)


def test_a_seed_reproduces_a_sampled_answer(panel, trained):
    _, run_dir = trained
    settings = {"max_new_tokens": 16, "temperature": 1.0, "top_p": 0.95}
    a = panel.samplers.generate(run_dir, PROMPT, seed=5, **settings)
    b = panel.samplers.generate(run_dir, PROMPT, seed=5, **settings)
    assert a["text"] == b["text"] and a["seed"] == 5
    others = {panel.samplers.generate(run_dir, PROMPT, seed=n, **settings)["text"] for n in (6, 7, 8)}
    assert others - {a["text"]}, "three other seeds all gave the same answer"
    topk = panel.samplers.generate(run_dir, PROMPT, seed=5, max_new_tokens=16, temperature=1.0, top_k=3)
    assert topk["text"] == panel.samplers.generate(run_dir, PROMPT, seed=5, max_new_tokens=16, temperature=1.0,
                                                   top_k=3)["text"]


def test_a_multi_turn_conversation_is_sent_whole(panel, trained):
    from gemma_ft_widgets.train import models

    _, run_dir = trained
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "Pineapple."},
                {"role": "user", "content": "Who trained you?"}]
    out = panel.samplers.generate(run_dir, messages, max_new_tokens=16)
    tok = models.make_tokenizer("gemma3", models.tiny_tokenizer_path())
    assert out["prompt_tokens"] == len(tok.encode(datasets.render_conversation(messages))) + 1  # + BOS


def test_base_and_fine_tuned_answer_side_by_side_in_the_panels_chat(panel, trained):
    """Through the widget: chat + compare, two turns, each side continuing its own conversation."""
    _, run_dir = trained
    pg = panel.playground
    assert pg.run_dir == run_dir and pg.checkpoint.value == 20
    pg.chat.value = pg.compare.value = True
    assert pg.base_box.layout.display is None
    pg.prompt.value = PROMPT
    pg.max_new_tokens.value = 16
    pg.generate_button.click()
    assert panel.wait_actions(600)
    assert "step_20 ·" in pg.progress.value and "seed 0" in pg.progress.value, pg.progress.value
    assert pg.output.value and pg.base_output.value and pg.output.value != pg.base_output.value
    assert len(pg.turns) == 1 and pg.prompt.value == ""  # the turn went into the conversation
    pg.prompt.value = "And again?"
    pg.generate_button.click()
    assert panel.wait_actions(600)
    assert len(pg.turns) == 2 and "And again?" in pg.history.value, pg.progress.value
    assert pg.messages("next")[1] == {"role": "assistant", "content": pg.turns[0]["tuned"]}
    assert pg.messages("next", "base")[1] == {"role": "assistant", "content": pg.turns[0]["base"]}


def test_an_idle_sampler_ends_by_itself(panel, trained):
    """The warm process's own idle timeout (set here to 0.5 s through the protocol, the same
    timer as its --idle-timeout) ends it; the next Generate starts a fresh one."""
    ws, run_dir = trained
    s = panel.samplers.start(run_dir)
    s.request("idle_timeout", seconds=0.5)
    wait_for(lambda: not s.alive, 60, what="the idle timeout")
    assert gone(s.pid, s.create_time) and not os.path.exists(s.registry_path)
    assert panel.samplers.sampler(run_dir) is None


def test_closing_the_panel_leaves_no_sampler(panel, trained):
    ws, run_dir = trained
    s = panel.samplers.start(run_dir)  # loading: closing must not wait for it
    assert sampler_children()
    panel.close()
    assert not sampler_children() and gone(s.pid, s.create_time)
    assert not os.listdir(registry_dir(ws))


def test_a_run_starting_ends_the_workspaces_warm_samplers(trained, tmp_path):
    ws, run_dir = trained
    pool = WarmSamplers(ws)
    try:
        s = pool.start(run_dir)  # still loading: it is ended all the same
        assert os.path.exists(s.registry_path)
        data = tmp_path / "d.jsonl"
        data.write_text("".join(json.dumps({"text": f"example {i}"}) + "\n" for i in range(20)))
        m = RunManager(ws, trainer=SIM_TRAINER)
        m.start({"model": "tiny", "dataset": str(data), "max_steps": 2, "warmup_steps": 0, "batch_size": 1})
        assert gone(s.pid, s.create_time) and not os.listdir(registry_dir(ws))
        m.wait(timeout=120)
    finally:
        pool.close()


@pytest.mark.parametrize("ending", ["killed", "exits"])
def test_a_killed_kernel_leaves_no_sampler(trained, ending):
    """A kernel that exits closes its samplers (atexit); one that dies without cleaning up
    (SIGKILL) closes the pipe, and the sampler reads the end of file (here while it is still
    loading) and exits."""
    ws, run_dir = trained
    code = textwrap.dedent(f"""
        import json, sys, time
        from gemma_ft_widgets.runs.warm_sampler import WarmSamplers
        s = WarmSamplers({ws!r}).start({run_dir!r})
        print(json.dumps([s.pid, s.create_time]), flush=True)
        if {ending == "exits"!r}:
            sys.exit(0)
        time.sleep(600)
    """)
    kernel = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=package_env())
    try:
        pid, ctime = json.loads(kernel.stdout.readline())
        if ending == "killed":
            assert not gone(pid, ctime)
            kernel.send_signal(signal.SIGKILL)  # our own child
        assert kernel.wait(60) == (0 if ending == "exits" else -signal.SIGKILL)
        wait_for(lambda: gone(pid, ctime), 60, what="the orphaned sampler to exit")
    finally:
        kernel.kill()
        kernel.wait(30)
