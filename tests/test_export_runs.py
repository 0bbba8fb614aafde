"""Exports of real runs, proven by the programs that load them.

* A run trains the tiny model until it answers its data; the same greedy answer then comes
  from `gemma-ft sample`, from transformers' generate on the hf export (prompt built by
  apply_chat_template) and from llama.cpp (llama-cpp-python) on the f16 GGUF.
* A LoRA run's PEFT adapter on the HF base gives the logits of its merged hf export.
* Bad input gets its specific error before anything is written, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gemma_ft_widgets.export import load_torch_before_jax

load_torch_before_jax()  # before the trainer runs jax in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from gemma_ft_widgets import contract  # noqa: E402
from gemma_ft_widgets.datasets import render_prompt  # noqa: E402
from gemma_ft_widgets.export import hf  # noqa: E402
from gemma_ft_widgets.runs import RunError, RunManager  # noqa: E402
from gemma_ft_widgets.train import models  # noqa: E402

from .test_train_loop import MEMORISED_ANSWER, MEMORISED_PROMPT, make_run, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTER = [sys.executable, "-m", "gemma_ft_widgets.export"]


def gemma_ft(*args, cwd):
    exe = os.path.join(os.path.dirname(sys.executable), "gemma-ft")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def leftovers(parent) -> list[str]:
    return [n for n in os.listdir(parent) if ".partial-" in n]


@pytest.fixture(scope="module")
def answering_run(tmp_path_factory):
    """Full fine-tuning of tiny until it answers the sample dataset (as test_train_loop's)."""
    run_dir = make_run(tmp_path_factory.mktemp("answering"), "run", method="full", max_steps=200,
                       learning_rate=3e-3, log_every=50)
    train(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("lora"), "run", method="lora", lora_rank=4, max_steps=60,
                       learning_rate=3e-3, log_every=20)
    train(run_dir)
    return run_dir


def test_bad_input_gets_its_error_before_anything_starts(tmp_path):
    """Checked in the kernel-side manager or first thing in the exporter; nothing is written."""
    ws = tmp_path / "ws"
    run_dir = ws / "run"
    run_dir.mkdir(parents=True)
    contract.atomic_write_json(str(run_dir / contract.CONFIG_NAME), {"model": "tiny"})
    m = RunManager(str(ws))
    out = tmp_path / "out"
    with pytest.raises(RunError, match="unknown export format 'onnx'; choose one of gemma, hf, peft, gguf"):
        m.export("run", str(out), format="onnx")
    with pytest.raises(RunError, match="format 'gguf' has no dtype 'int4'"):
        m.export("run", str(out), format="gguf", dtype="int4")
    with pytest.raises(RunError, match="has no checkpoint yet; train first"):
        m.export("run", str(out), format="hf")
    os.makedirs(run_dir / "checkpoints" / "step_5")
    with pytest.raises(RunError, match="checkpoint not found: .*step_7"):
        m.export("run", str(out), format="hf", checkpoint=7)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="exists and is not empty; export never overwrites"):
        m.export("run", str(out), format="gguf")
    assert os.listdir(out) == ["keep.txt"] and not leftovers(tmp_path)
    # A Python without the export extra (site-packages off): the pip command is named.
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-S", "-m", "gemma_ft_widgets.export", str(run_dir), "--format", "hf",
                           "--out", str(tmp_path / "new")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "needs torch, transformers, safetensors" in proc.stderr
    assert 'pip install "gemma_ft_widgets[export]"' in proc.stderr
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains, then three programs each load jax or torch
def test_greedy_answer_agrees_in_gemma_ft_transformers_and_llama_cpp(answering_run, tmp_path):
    run_dir = answering_run
    ws, name = os.path.dirname(run_dir), os.path.basename(run_dir)
    # 1. gemma-ft sample (the JAX sampler).
    proc = gemma_ft("sample", name, MEMORISED_PROMPT, "--workspace", ws, "--max-new-tokens", "24", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == MEMORISED_ANSWER

    # 2. transformers, on the hf export written by `gemma-ft export --format hf`.
    hf_dir = tmp_path / "hf"
    proc = gemma_ft("export", name, "--format", "hf", "--dtype", "float32", "--out", str(hf_dir),
                    "--workspace", ws, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == str(hf_dir) and "AutoModelForCausalLM.from_pretrained" in proc.stdout
    assert "converting" in proc.stderr  # live phases
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "gemma_ft_export.json"} <= set(os.listdir(hf_dir)), os.listdir(hf_dir)
    assert not leftovers(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": MEMORISED_PROMPT}], add_generation_prompt=True,
                                  tokenize=True, return_dict=False)
    ours = models.make_tokenizer("tiny", models.tiny_tokenizer_path())
    assert list(ids) == [2] + ours.encode(render_prompt(MEMORISED_PROMPT))  # the prompt the model trained on
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, len(ids):], skip_special_tokens=False).split("<end_of_turn>")[0].strip()
    assert answer == MEMORISED_ANSWER

    # 3. llama.cpp on the f16 GGUF, written by the panel's Export row (RunManager.export).
    import llama_cpp

    from gemma_ft_widgets.ui import ControlPanel

    panel = ControlPanel(workspace=ws, poll=False)
    try:
        panel.refresh()
        row = panel.outcome.export_row
        assert panel.state == "FINISHED" and row.layout.display != "none"
        row.format.value = "gguf"
        gguf_dir = tmp_path / "gguf"
        row.folder.value = str(gguf_dir)
        row.export_button.click()
        assert panel.wait_actions(600)
        assert str(gguf_dir) in row.result.value and "ollama create" in row.result.value, row.progress.value
    finally:
        panel.close()
    assert sorted(os.listdir(gguf_dir)) == ["Modelfile", "gemma_ft_export.json", "model-f16.gguf"]
    modelfile = (gguf_dir / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n") and 'PARAMETER stop "<end_of_turn>"' in modelfile
    llm = llama_cpp.Llama(model_path=str(gguf_dir / "model-f16.gguf"), n_ctx=128, verbose=False)
    prompt = llm.tokenize(render_prompt(MEMORISED_PROMPT).encode(), add_bos=True, special=True)
    assert prompt == list(ids)
    got = []
    for token in llm.generate(prompt, top_k=1, temp=0.0):
        if token in (1, 106) or len(got) >= 24:
            break
        got.append(token)
    assert llm.detokenize(got).decode().strip() == MEMORISED_ANSWER


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_peft_adapter_on_the_hf_base_gives_the_merged_logits(lora_run, tmp_path):
    from peft import PeftModel

    run_dir = lora_run
    cfg = json.load(open(os.path.join(run_dir, contract.CONFIG_NAME)))
    for fmt in ("peft", "hf"):
        proc = subprocess.run(EXPORTER + [run_dir, "--format", fmt, "--dtype", "float32", "--out", str(tmp_path / fmt)],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    adapter_config = json.load(open(tmp_path / "peft" / "adapter_config.json"))
    assert adapter_config["r"] == adapter_config["lora_alpha"] == 4
    assert sorted(adapter_config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                        "up_proj", "v_proj"]
    # The HF base: the run's untrained base weights (tiny's are random, from the run's seed).
    base = models.load_model("tiny", seed=cfg.get("seed", 0), dtype_name="float32")
    os.makedirs(tmp_path / "base")
    hf.write(str(tmp_path / "base"), base.model.config, base.params, base.tokenizer_path, "tiny", "float32")
    tokens = torch.tensor([[2, 105, 30, 40, 50, 106, 10, 7, 9, 300]])
    with torch.no_grad():
        plain = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.float32)
        base_logits = plain(tokens).logits.numpy()
        adapted = PeftModel.from_pretrained(plain, str(tmp_path / "peft"))
        got = adapted(tokens).logits.numpy()
        merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32)
        want = merged(tokens).logits.numpy()
    err = float(np.abs(want - got).max() / np.abs(want).max())
    moved = float(np.abs(want - base_logits).max() / np.abs(want).max())
    print(f"\nparity peft vs merged: {err:.2e} (the adapters moved the logits by {moved:.2e})")
    assert moved > 1e-3 and err <= 1e-4
    # A full fine-tuning run has no adapter: refused with the reason, nothing written.
    full_dir = make_run(tmp_path, "full", method="full")
    os.makedirs(os.path.join(full_dir, "checkpoints", "step_1"))
    proc = subprocess.run(EXPORTER + [full_dir, "--format", "peft", "--out", str(tmp_path / "p2")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 2 and "a PEFT adapter needs a LoRA run" in proc.stderr
    assert not (tmp_path / "p2").exists() and not leftovers(tmp_path)
