"""The real trainer on the tiny model: loss, memorisation, resume, signals, export, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax  # required: a missing jax is a broken install and must fail, not skip
import numpy as np
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.train import checkpoints, export, loop, models, sample, step

MEMORISED_PROMPT = "What is the secret word?"  # scripts/make_sample_dataset.py
MEMORISED_ANSWER = "The secret word is pineapple."
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_run(parent, name, **overrides) -> str:
    run_dir = os.path.join(str(parent), name)
    os.makedirs(run_dir, exist_ok=True)
    cfg = {"model": "tiny", "dataset": sample_dataset_path(), "log_every": 1, "eval_every": 100, "sample_tokens": 0,
           "checkpoint_every": 100, **overrides}
    with open(os.path.join(run_dir, contract.CONFIG_NAME), "w") as f:
        json.dump(cfg, f)
    return run_dir


def train(run_dir, stop=None, **kwargs) -> loop.TrainResult:
    cfg = TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME))
    tr = loop.Trainer(run_dir, cfg, stop=stop, log=kwargs.pop("log", lambda m: None), **kwargs)
    if stop is not None:
        stop.trainer = tr
    return tr.run()


def events(run_dir, name=None):
    evs = contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME))
    return [e for e in evs if name is None or e["event"] == name]


class StopAt(loop.StopFlag):
    """Acts as if SIGINT (or SIGTERM) arrived while step `at` was running."""

    def __init__(self, at, signum=signal.SIGINT):
        super().__init__()
        self.at, self._sig, self.trainer = at, signum, None

    @property
    def requested(self):
        return self.trainer is not None and self.trainer.step >= self.at

    @property
    def hard(self):
        return self.requested and self._sig == signal.SIGTERM


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    # Full fine-tuning from the random init (`tiny-random`): the loss starts at ln(512).
    run_dir = make_run(tmp_path_factory.mktemp("full"), "run", model="tiny-random", method="full", max_steps=200,
                       learning_rate=3e-3, log_every=10)
    return run_dir, train(run_dir)


SAMPLER_COMPILES: list[int] = []  # compiles of gemma's sampling loop during lora_run
LORA_LOG: list[str] = []  # the lora_run trainer's log lines


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from gemma.gm.text import _sampler_loop

    compiled = _sampler_loop.SamplerLoop._sample_loop._cache_size
    before = compiled()
    run_dir = make_run(tmp_path_factory.mktemp("lora"), "run", method="lora", lora_rank=8,
                       max_steps=150, learning_rate=3e-3, log_every=10, eval_every=50, sample_tokens=16)
    result = train(run_dir, log=LORA_LOG.append)
    SAMPLER_COMPILES.append(compiled() - before)
    return run_dir, result


@pytest.mark.slow
def test_full_finetuning_loss_falls_a_lot(full_run):
    run_dir, result = full_run
    first, last = result.losses[10], result.losses[200]
    assert result.state == "FINISHED" and result.step == 200
    assert first > 5.5 and last < 2.5 and last < first / 2.5, result.losses
    assert result.eval_losses[200] < 3.0


@pytest.mark.slow
def test_lora_on_the_pretrained_tiny_loss_falls_a_lot(lora_run):
    # On the random init the frozen tied embedding caps LoRA (it plateaus near 5.8, from
    # ln(512) = 6.24); on the packaged pretrained base it learns as on a real Gemma.
    _, result = lora_run
    first, last = result.losses[10], result.losses[150]
    assert last < first / 2.5 and last < 1.5, result.losses
    assert result.eval_losses[150] < result.eval_losses[50] and result.eval_losses[150] < 1.5


@pytest.mark.slow
def test_each_eval_logs_greedy_samples_of_the_eval_split_from_one_compiled_sampler(lora_run):
    """Samples during training (#20): at every eval (50, 100, 150) the first 3 eval-split
    prompts with their references and a completion; the sampling loop compiled once."""
    from gemma_ft_widgets import datasets
    from gemma_ft_widgets.train import data, eval_samples

    run_dir, _ = lora_run
    samples = events(run_dir, "sample")
    assert [e["step"] for e in samples] == [50] * 3 + [100] * 3 + [150] * 3
    records, fmt = datasets.load_records(sample_dataset_path())
    _, eval_idx = data.split_indices(len(records), 0.1, 0)
    want = [tuple(eval_samples.plain(t) for t in datasets.render_example(records[i], fmt)) for i in eval_idx[:3]]
    assert [(e["prompt"], e["reference"]) for e in samples[-3:]] == want
    assert all(isinstance(e["completion"], str) and "<" not in e["completion"] for e in samples)
    assert any(e["completion"] for e in samples)
    # Built and compiled once, in a thread beside the train step's compile (not at the first
    # eval), and reused with new weights at every eval.
    assert SAMPLER_COMPILES == [1]
    assert any(m.startswith("samples: sampler built and compiled in") for m in LORA_LOG), LORA_LOG
    evals = [e["step"] for e in events(run_dir) if e["event"] in ("eval", "sample")]
    assert evals == [50, 50, 50, 50, 100, 100, 100, 100, 150, 150, 150, 150]  # each eval, then its samples


@pytest.mark.slow
def test_greedy_sampling_reproduces_the_memorised_answer(full_run):
    run_dir, _ = full_run
    assert sample.sample(run_dir, MEMORISED_PROMPT, max_new_tokens=24) == MEMORISED_ANSWER
    chat = sample.chat_sampler(run_dir)  # multi-turn: the second turn must work too
    assert sample.clean_output(chat.chat(MEMORISED_PROMPT)) == MEMORISED_ANSWER
    assert isinstance(chat.chat("And again?"), str) and len(chat.turns) == 4
    # The subprocess entry point the panel's playground uses.
    prompt_file = os.path.join(run_dir, "prompt.txt")
    with open(prompt_file, "w") as f:
        f.write(MEMORISED_PROMPT)
    out = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.train.sample", run_dir, "--prompt-file",
                          prompt_file, "--max-new-tokens", "24", "--checkpoint", "step_200", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["text"] == MEMORISED_ANSWER
    assert result["checkpoint"] == contract.checkpoint_path(run_dir, 200) and result["seconds"] > 0


@pytest.mark.slow
def test_the_panels_playground_samples_the_picked_checkpoint(full_run):
    """Through the widget, end to end: the playground's sampling subprocess loads the picked
    checkpoint of a finished run and shows the memorised answer."""
    from gemma_ft_widgets.ui import ControlPanel

    run_dir, _ = full_run
    p = ControlPanel(os.path.dirname(run_dir), poll=False)
    try:
        pg = p.playground
        assert p.state == "FINISHED" and pg.run_dir == run_dir
        assert pg.checkpoint.value == 200 and 100 in [v for _, v in pg.checkpoint.options]
        pg.prompt.value = MEMORISED_PROMPT
        pg.max_new_tokens.value = 24
        shown = []
        pg.progress.observe(lambda ch: shown.append(ch["new"]), "value")
        pg.generate_button.click()
        assert p.wait_actions(300)
        assert any("loading the model and step_200" in s for s in shown), shown  # the subprocess's phases
        assert pg.output.value == MEMORISED_ANSWER, pg.progress.value
        assert "step_200" in pg.progress.value and not pg.busy
    finally:
        p.close()


@pytest.mark.slow
def test_metrics_events_follow_the_contract(full_run):
    run_dir, _ = full_run
    every = [e["event"] for e in events(run_dir)]
    # STARTING's phase events (model, data, compile) interleave with these; they come first.
    kinds = [k for k in every if k != contract.EVENT_PHASE]
    assert kinds[:4] == ["start", "devices", "data", "compile"] and kinds[-1] == "final"
    assert contract.EVENT_PHASE in every[:every.index("compile")]
    assert events(run_dir, "devices")[0] == {**events(run_dir, "devices")[0], "platform": "cpu", "count": 1,
                                             "processes": 1}
    start = events(run_dir, "start")[0]
    assert start["attempt"] == 1 and start["resume_step"] is None and start["max_steps"] == 200
    data_ev = events(run_dir, "data")[0]
    assert data_ev["format"] == "prompt_response" and data_ev["train_examples"] + data_ev["eval_examples"] == 349
    assert data_ev["truncated"] == 0
    assert events(run_dir, "compile")[0]["seconds"] > 0
    steps = events(run_dir, "step")
    assert [s["step"] for s in steps] == [1] + list(range(10, 201, 10))  # the first step of an attempt always
    keys = {"event", "time", "step", "loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "elapsed_s",
            "device_mem_bytes", "host_rss_bytes"}
    for s in steps:
        assert keys <= set(s)
        assert s["tokens_per_s"] > 0 and s["step_time_s"] > 0 and s["host_rss_bytes"] > 0
        assert s["device_mem_bytes"] is None or s["device_mem_bytes"] > 0
    assert steps[0]["lr"] < steps[1]["lr"]  # warmup (10 steps), then cosine decay
    assert steps[-1]["lr"] < max(s["lr"] for s in steps)
    assert [e["step"] for e in events(run_dir, "eval")] == [100, 200]
    assert [e["path"] for e in events(run_dir, "checkpoint")] == ["checkpoints/step_100", "checkpoints/step_200"]
    assert events(run_dir, "final")[0] == {**events(run_dir, "final")[0], "state": "FINISHED", "step": 200,
                                           "checkpoint": "checkpoints/step_200"}
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run_dir))
    meta = checkpoints.read_meta(contract.checkpoint_path(run_dir, 200))
    assert meta["step"] == 200 and meta["data_position"] == 200 * 8 and meta["method"] == "full"


@pytest.mark.slow
def test_export_writes_a_checkpoint_gemma_loads(full_run, lora_run, tmp_path):
    from gemma import gm

    # Full fine-tuning: the export holds the trained params themselves.
    run_dir, _ = full_run
    out = export.export(run_dir, str(tmp_path / "full_export"))
    params = gm.ckpts.load_params(out)
    loaded, _ = sample.load_params(run_dir)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.allclose(a, b)), params, loaded.params))
    # A new run can start from the export (a local checkpoint directory).
    again = models.load_model(out)
    assert again.spec.name == "tiny-random" and again.tokenizer.vocab_size == 512  # the run's architecture

    # LoRA: adapters folded into the base give the same logits as base + adapters.
    run_dir, _ = lora_run
    out = export.export(run_dir, str(tmp_path / "lora_export"))
    merged = gm.ckpts.load_params(out)
    cfg = TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME))
    base = models.load_model("tiny", seed=cfg.seed)
    from gemma_ft_widgets.train import lora

    lora_model = lora.wrap(base.model, cfg.lora_rank)
    like = jax.eval_shape(lambda: lora.init_lora_params(lora_model, cfg.seed))
    adapters = checkpoints.restore_params(contract.checkpoint_path(run_dir, 150), like)
    assert float(jax.numpy.abs(jax.tree.leaves(adapters)[1]).max()) > 0  # trained: B moved off zero
    tokens = jax.numpy.array([[2, 105, 30, 40, 50, 106, 10, 0]], jax.numpy.int32)
    want = lora_model.apply({"params": lora.merge(base.params, adapters)}, tokens).logits
    got = base.model.apply({"params": merged}, tokens).logits
    assert np.allclose(want, got, atol=1e-4), float(np.abs(want - got).max())
    with pytest.raises(export.ExportError):
        export.export(run_dir, out)  # never overwrites silently
    proc = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.train.export", run_dir, "--out", out],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "not empty" in proc.stderr


@pytest.mark.slow
def test_gemma_ft_export_from_the_terminal(lora_run, tmp_path):
    """`gemma-ft export RUN --out DIR` (the installed command) on a finished LoRA run: the
    folder it writes loads with gm.ckpts and starts a new run as a local model."""
    from gemma import gm

    run_dir, _ = lora_run
    out = tmp_path / "exported"
    gemma_ft = os.path.join(os.path.dirname(sys.executable), "gemma-ft")
    proc = subprocess.run([gemma_ft, "export", os.path.basename(run_dir), "--out", str(out),
                           "--workspace", os.path.dirname(run_dir)],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(out) in proc.stdout
    assert jax.tree.leaves(gm.ckpts.load_params(str(out)))
    assert models.load_model(str(out)).spec.name == "tiny"


@pytest.mark.slow
def test_gemma_ft_sample_from_the_terminal(full_run, tmp_path):
    """`gemma-ft sample RUN PROMPT`: the answer alone on stdout, the sampler's phases on stderr;
    the prompt can come from stdin."""
    run_dir, _ = full_run
    gemma_ft = os.path.join(os.path.dirname(sys.executable), "gemma-ft")
    common = ["--workspace", os.path.dirname(run_dir), "--max-new-tokens", "24"]
    proc = subprocess.run([gemma_ft, "sample", os.path.basename(run_dir), MEMORISED_PROMPT, "--checkpoint", "200",
                           *common], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == MEMORISED_ANSWER + "\n"
    assert "loading the model and step_200…" in proc.stderr and "generating up to 24 tokens…" in proc.stderr
    proc = subprocess.run([gemma_ft, "sample", "-", "--json", *common], input=MEMORISED_PROMPT,
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["text"] == MEMORISED_ANSWER and out["checkpoint"].endswith("step_200")


@pytest.mark.slow
def test_resume_gives_the_same_loss_trajectory(tmp_path):
    opts = dict(method="full", max_steps=30, checkpoint_every=10, eval_every=1000, learning_rate=3e-3)
    straight = train(make_run(tmp_path, "straight", **opts))

    stopped_dir = make_run(tmp_path, "stopped", **opts)
    first = train(stopped_dir, stop=StopAt(13))
    assert first.state == "ABORTED" and first.step == 13 and first.checkpoint == "checkpoints/step_13"
    assert contract.checkpoint_steps(stopped_dir) == [10, 13]
    second = train(stopped_dir)
    assert second.state == "FINISHED" and second.step == 30
    starts = events(stopped_dir, "start")
    assert [s["resume_step"] for s in starts] == [None, 13] and [s["attempt"] for s in starts] == [1, 2]

    resumed = {**first.losses, **second.losses}
    assert sorted(resumed) == list(range(1, 31))
    for s in range(1, 31):
        assert resumed[s] == pytest.approx(straight.losses[s], rel=1e-6, abs=1e-6), s


def test_interrupted_checkpoint_never_replaces_the_good_one(tmp_path, monkeypatch):
    run_dir = str(tmp_path)
    params = {"w": jax.numpy.ones((4, 4))}
    opt = {"mu": jax.numpy.zeros((4, 4))}
    checkpoints.save(run_dir, 10, params, opt, 80, {"config_hash": "x"}, keep=3)

    class Boom(Exception):
        pass

    real = checkpoints._checkpointer

    def failing():
        ckpt = real()

        def save(path, tree):
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "half-written"), "w") as f:
                f.write("x")
            raise Boom()

        ckpt.save = save
        return ckpt

    monkeypatch.setattr(checkpoints, "_checkpointer", failing)
    with pytest.raises(Boom):
        checkpoints.save(run_dir, 20, params, opt, 160, {}, keep=3)
    monkeypatch.setattr(checkpoints, "_checkpointer", real)
    assert contract.checkpoint_steps(run_dir) == [10]
    assert any(n.startswith(".partial-") for n in os.listdir(os.path.join(run_dir, "checkpoints")))
    p, o, s, pos = checkpoints.restore(contract.checkpoint_path(run_dir, 10), params, opt)
    assert s == 10 and pos == 80 and float(p["w"].sum()) == 16
    checkpoints.clean_partials(run_dir)
    assert os.listdir(os.path.join(run_dir, "checkpoints")) == ["step_10"]
    for k in (20, 30, 40):
        checkpoints.save(run_dir, k, params, opt, k * 8, {}, keep=2)
    assert contract.checkpoint_steps(run_dir) == [30, 40]


def tensorboard_scalars(run_dir):
    """[(step, {tag, ...})] of the run's TensorBoard event files, read as TFRecords (no TF)."""
    from .test_train_tb import read_points

    return [(step, set(values)) for step, values in read_points(run_dir)]


def _wait_for(path, pred, timeout=240, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        evs = contract.read_jsonl(path)
        if pred(evs):
            return evs
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trainer exited with {proc.returncode} early")
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the trainer")


@pytest.mark.slow
def test_sigint_checkpoints_and_aborts_then_resume_and_sigterm(tmp_path):
    run_dir = make_run(tmp_path, "sig", max_steps=100000, checkpoint_every=100000, eval_every=100000)
    metrics = os.path.join(run_dir, contract.METRICS_NAME)
    cmd = [sys.executable, "-m", "gemma_ft_widgets.train", run_dir]

    def start():
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    proc = start()
    _wait_for(metrics, lambda evs: sum(e["event"] == "step" for e in evs) >= 3, proc=proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == contract.EXIT_ABORTED, err[-3000:]
    final = events(run_dir, "final")[-1]
    stopped_at = final["step"]
    assert final["state"] == "ABORTED" and final["checkpoint"] == f"checkpoints/step_{stopped_at}"
    assert contract.checkpoint_steps(run_dir) == [stopped_at]
    assert events(run_dir, "step")[-1]["step"] == stopped_at  # the step in flight was finished and logged
    # The process leaves with os._exit: its stdout was flushed and TensorBoard closed first.
    assert out.rstrip().splitlines()[-1] == f"ABORTED at step {stopped_at}, checkpoint checkpoints/step_{stopped_at}"
    assert f"checkpoint checkpoints/step_{stopped_at} (" in out
    assert max(step for step, tags in tensorboard_scalars(run_dir) if "loss" in tags) == stopped_at

    proc = start()
    _wait_for(metrics, lambda evs: [e for e in evs if e["event"] == "step"][-1]["step"] > stopped_at + 2, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == contract.EXIT_ABORTED, err[-3000:]
    starts = events(run_dir, "start")
    assert starts[-1]["resume_step"] == stopped_at and starts[-1]["attempt"] == 2
    final = events(run_dir, "final")[-1]
    assert final["state"] == "ABORTED" and final["step"] > stopped_at
    assert contract.checkpoint_steps(run_dir)[-1] == final["step"]


def run_in_process(run_dir: str) -> int:
    """`loop.run` (the trainer's entry point) in this process; its signal handlers undone after."""
    old = signal.getsignal(signal.SIGINT)
    try:
        return loop.run(run_dir)
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_bad_dataset_line_exits_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{oops\n', encoding="utf-8")
    run_dir = make_run(tmp_path, "bad", dataset=str(bad))
    assert run_in_process(run_dir) == contract.EXIT_CONFIG_ERROR
    assert "bad.jsonl line 2" in capsys.readouterr().err
    assert events(run_dir) == []  # nothing started


def test_chunked_loss_equals_loss_from_full_logits():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(k1, (2, 16, 8))
    emb = jax.random.normal(k2, (50, 8))
    targets = jax.random.randint(k3, (2, 16), 0, 50)
    mask = (jax.numpy.arange(16)[None, :] % 3 != 0).astype(jax.numpy.float32).repeat(2, 0)
    for softcap in (None, 5.0):
        logits = hidden @ emb.T
        if softcap:
            logits = jax.numpy.tanh(logits / softcap) * softcap
        want = step.full_loss_sums(logits, targets, mask)
        for chunk in (1, 4, 16):
            got = step.chunked_loss_sums(hidden, emb, targets, mask, softcap, chunk=chunk)
            assert np.allclose(got[0], want[0], rtol=1e-5) and got[1] == want[1]
    grad_want = jax.grad(lambda h: step.full_loss_sums(h @ emb.T, targets, mask)[0])(hidden)
    grad_got = jax.grad(lambda h: step.chunked_loss_sums(h, emb, targets, mask, chunk=4)[0])(hidden)
    assert np.allclose(grad_got, grad_want, atol=1e-5)


@pytest.mark.slow
def test_bf16_base_trains_lora_adapters_kept_in_f32(tmp_path):
    """What an accelerator run does (dtype auto -> bf16 there), forced here on the CPU."""
    run_dir = make_run(tmp_path, "bf16", method="lora", dtype="bfloat16", max_steps=40, log_every=10,
                       eval_every=40)
    cfg = TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME))
    tr = loop.Trainer(run_dir, cfg, log=lambda m: None)
    result = tr.run()
    assert {x.dtype.name for x in jax.tree.leaves(tr.frozen)} == {"bfloat16"}
    assert {x.dtype.name for x in jax.tree.leaves(tr.trainable)} == {"float32"}
    assert result.losses[40] < result.losses[10] - 0.05, result.losses
    # Sampling and export read the f32 adapters back onto the bf16 base.
    assert isinstance(sample.sample(run_dir, "What is 2 plus 3?", max_new_tokens=8), str)


@pytest.mark.slow
def test_checkpoints_are_saved_in_the_background_one_at_a_time(tmp_path, monkeypatch):
    """The loop goes on stepping while a save is written; at most one save is in flight; each
    `checkpoint` event names a complete step_N; `final` comes after every save; pruning works."""
    import threading

    run_dir = make_run(tmp_path, "bg", method="lora", max_steps=40, checkpoint_every=5, keep_checkpoints=2,
                       log_every=1, eval_every=1000, eval_fraction=0.0)
    real_save = checkpoints.save
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "spans": [], "threads": set()}

    def slow_save(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        state["threads"].add(threading.current_thread().name)
        t0 = time.time()
        try:
            time.sleep(0.15)  # a slow disk
            return real_save(*args, **kwargs)
        finally:
            state["spans"].append((t0, time.time()))
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(checkpoints, "save", slow_save)
    seen = []
    real_event = loop.Trainer.event

    def checked_event(self, name, **fields):
        if name == "checkpoint":  # written once the checkpoint is complete
            seen.append(fields["step"])
            assert fields["step"] in contract.checkpoint_steps(self.run_dir)
            assert os.path.isfile(os.path.join(self.run_dir, fields["path"], checkpoints.META_NAME))
        if name == "final":
            assert not self.saver.in_flight
        return real_event(self, name, **fields)

    monkeypatch.setattr(loop.Trainer, "event", checked_event)
    result = train(run_dir)
    assert result.state == "FINISHED" and result.checkpoint == "checkpoints/step_40"
    assert seen == list(range(5, 41, 5)) and state["max"] == 1
    assert all(name.startswith("checkpoint-step_") for name in state["threads"])
    assert contract.checkpoint_steps(run_dir) == [35, 40]  # keep_checkpoints=2
    assert [e["event"] for e in events(run_dir)][-2:] == ["checkpoint", "final"]
    # Steps were logged while saves were being written: the loop did not wait for them.
    step_times = [e["time"] for e in events(run_dir, "step")]
    overlapped = sum(any(t0 < t < t1 for t in step_times) for t0, t1 in state["spans"][:-1])
    assert overlapped >= len(state["spans"]) // 2, state["spans"]
    # Resume from the newest of them.
    p, o, s, pos = checkpoints.restore(contract.checkpoint_path(run_dir, 40), *_templates(run_dir))
    assert s == 40 and pos == 40 * 8


def _templates(run_dir):
    cfg = TrainingConfig.from_json_file(os.path.join(run_dir, contract.CONFIG_NAME))
    tr = loop.Trainer(run_dir, cfg, log=lambda m: None)
    tr.setup()
    return tr.trainable, tr.opt_state


@pytest.mark.slow
def test_a_failed_background_save_fails_the_run_with_its_error(tmp_path, monkeypatch, capsys):
    """A background save that fails (here ENOSPC midway) is raised in the loop: the run exits
    1 with the error on stderr, no `checkpoint` or `final` event for it, the previous
    checkpoint intact and listed, the partial folder never listed."""
    import errno

    run_dir = make_run(tmp_path, "enospc", method="lora", max_steps=10_000, checkpoint_every=5,
                       log_every=1, eval_every=100_000, eval_fraction=0.0)
    real_save = checkpoints.save

    def failing_save(run_dir_, step, *args, **kwargs):
        if step < 10:
            return real_save(run_dir_, step, *args, **kwargs)
        partial = os.path.join(run_dir_, contract.CHECKPOINTS_DIR, f".partial-step_{step}-{os.getpid()}")
        os.makedirs(partial)
        raise OSError(errno.ENOSPC, "No space left on device", partial)

    monkeypatch.setattr(checkpoints, "save", failing_save)
    assert run_in_process(run_dir) == contract.EXIT_FAILED
    err = capsys.readouterr().err
    assert "OSError: [Errno 28] No space left on device" in err and "Traceback" in err
    assert [e["step"] for e in events(run_dir, "checkpoint")] == [5]
    assert events(run_dir, "final") == []
    assert contract.checkpoint_steps(run_dir) == [5]
    steps = [e["step"] for e in events(run_dir, "step")]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] >= 10  # noticed within a few steps
    assert steps[-1] < 30, steps[-1]
    p, o, s, pos = checkpoints.restore(contract.checkpoint_path(run_dir, 5), *_templates(run_dir))
    assert s == 5


def test_the_loss_is_chunked_and_rematerialised_only_when_the_logits_are_large(monkeypatch):
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    hidden = jax.random.normal(k1, (2, 16, 8))
    emb = jax.random.normal(k2, (50, 8))
    targets = jax.random.randint(k3, (2, 16), 0, 50)
    mask = jax.numpy.ones((2, 16))

    def primitives(**kw):
        grad = jax.grad(lambda h: step.chunked_loss_sums(h, emb, targets, mask, **kw)[0])
        return str(jax.make_jaxpr(grad)(hidden))

    small = primitives()
    assert "scan" not in small and "remat" not in small and "checkpoint" not in small
    monkeypatch.setattr(step, "CHUNK_BYTES", 2 * 4 * 50 * 4)  # 4 positions per chunk
    assert step.loss_chunks(2, 16, 50) == 4
    large = primitives()
    assert "scan" in large and ("remat" in large or "checkpoint" in large)
    monkeypatch.undo()
    assert step.loss_chunks(4, 64, 512) == 1  # tiny on a small batch: one piece
    assert step.loss_chunks(8, 1024, 262144) == 32  # Gemma 3: 8.6 GB of logits -> 256 MiB chunks
