"""Write the tutorial notebooks in notebooks/ (committed without outputs).

Edit the cells here and run `python scripts/make_notebooks.py`; nbval executes the result
(`pytest --nbval-lax notebooks/`): only cells marked `# NBVAL_CHECK_OUTPUT` are compared,
never the widget displays, whose text holds changing values.
"""

import hashlib
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "notebooks")
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
          "language_info": {"name": "python"}}


def md(text):
    return new_markdown_cell(text.strip())


def code(text):
    return new_code_cell(text.strip())


SETUP = code('''
import os
from gemma_ft_widgets import ControlPanel, RunManager, demo_config

# Every run lives in this folder; a new kernel, another notebook or a terminal finds it there.
WORKSPACE = os.environ.get("GEMMA_FT_WORKSPACE", "gemma_ft_runs")
manager = RunManager(WORKSPACE)
''')

quickstart = [
    md('''
# Quickstart: fine-tune Gemma from a notebook

This notebook fine-tunes `tiny` with LoRA on the sample dataset that ships with the package.
`tiny` is a 107k-parameter model with Gemma's architecture and a small tokenizer, pretrained
on a small generated corpus (`scripts/pretrain_tiny.py`), so LoRA on it learns as LoRA on a
real Gemma does. It finishes in a few minutes on two CPU cores. The same steps work for
`gemma3-1b` on a Colab or Kaggle GPU (see `03_gemma3_on_colab_or_kaggle.ipynb`).

Training does not run in this kernel: it runs in a process group of its own, so it survives a
kernel restart or a closed tab (`02_survive_a_kernel_restart.ipynb` shows that).
'''),
    SETUP,
    md('''
## 1. The control panel

The form is pre-filled: LoRA on the tiny model, the sample dataset, 300 steps. Errors show
next to their field, and **Start** stays disabled while the config is invalid. Press
**Start**: the panel turns into a dashboard with the loss curve, throughput, logs and an
**Abort** button. With these defaults the loss falls from about 4 to below 1.
'''),
    code('''
panel = ControlPanel(workspace=WORKSPACE)
panel
'''),
    md('''
Running this notebook unattended (nbval in CI does)? The next cell presses **Start** for you:
`start_button.click()` is exactly what the button does.
'''),
    code('''
panel.wait_ready()
panel.form.start_button.click()
panel.wait_actions()          # Start runs in a worker thread so the kernel stays free
print(panel.messages[-1] if panel.messages else "started")
'''),
    md('''
The panel updates itself about once a second from a background thread. From code, the run
manager reads the same files:
'''),
    code('''
status = manager.wait(until="RUNNING", timeout=300)
print(status.state.value, status.run_name, f"step {status.step}/{status.max_steps}")
'''),
    code('''
# NBVAL_CHECK_OUTPUT
final = manager.wait(timeout=900)   # until the run ends, whatever ends it
print(final.state.value)
'''),
    md('''
## 2. The same from code

`RunManager.start` validates the config first (every problem at once, by field), then
launches the run and returns as soon as it is starting. `demo_config()` is the form's
defaults on the sample dataset (what `gemma-ft demo` runs); pass fields to change them.
'''),
    code('''
config = demo_config()
print(config.model, config.method, config.max_steps, "steps")
run = manager.start(config)
print(run.name)
status = run.wait(timeout=900)
print(status.state.value, "after", status.step, "steps")
'''),
    code('''
events, offset = run.metrics()            # pass `since=offset` next time: only new lines are read
losses = [e["loss"] for e in events if e["event"] == "step"]
print(f"loss {losses[0]:.2f} -> {losses[-1]:.2f} over {len(losses)} logged steps")
evals = [e["eval_loss"] for e in events if e["event"] == "eval"]
print(f"eval loss {evals[0]:.2f} -> {evals[-1]:.2f}")
assert losses[-1] < losses[0] / 3 and evals[-1] < 1.0
'''),
    md('''
## 3. Sample from the checkpoint

The playground at the bottom of the panel does this with a button. Sampling runs in a
subprocess, so this kernel never holds the accelerator memory a training run may need.
Greedy sampling gives back what the sample dataset taught.
'''),
    code('''
reply = manager.sample(run, "Who trained you?", max_new_tokens=48)
print(reply["text"])
assert reply["text"] == "I was fine-tuned with gemma-ft-widgets."   # the sample dataset's answer
'''),
    code('''
panel.close()   # stops the panel's poller thread; the runs and their files stay
'''),
]

restart = [
    md('''
# A run survives a kernel restart

The trainer runs in a process group of its own, started through a supervisor with
`start_new_session`, and everything about it is on disk in the workspace. So a kernel restart,
a closed tab or even a crashed Jupyter server does not stop it, and any new kernel (or a
terminal) re-attaches to it.
'''),
    SETUP,
    code('''
# A long run, so that there is time to restart the kernel while it trains.
run = manager.start(demo_config(max_steps=20_000, checkpoint_every=50))
status = run.wait(until="RUNNING", timeout=300)
print(status.state.value, run.name)
'''),
    md('''
**Now restart the kernel** (Kernel → Restart Kernel…), then run the cells from
*Re-attach* on. The run keeps training while the kernel is gone.

Under nbval this notebook cannot restart its own kernel, so it shows the same thing in the two
ways that do not depend on this kernel's memory: a brand-new panel and manager, which know
only the workspace folder, and the `gemma-ft status` command in a separate process.
'''),
    md('## Re-attach'),
    code('''
import os, subprocess, sys
from gemma_ft_widgets import ControlPanel, RunManager

WORKSPACE = os.environ.get("GEMMA_FT_WORKSPACE", "gemma_ft_runs")
manager = RunManager(WORKSPACE)      # a fresh manager: nothing in memory about the run
panel = ControlPanel(workspace=WORKSPACE)
panel                                # the whole loss history, not only new points
'''),
    code('''
status = subprocess.run([sys.executable, "-m", "gemma_ft_widgets.cli", "status", "--workspace", WORKSPACE],
                        capture_output=True, text=True)
print(status.stdout)
'''),
    md('''
## Abort

**Abort** (then **Confirm**) in the panel, `gemma-ft stop`, or `manager.stop()`: a SIGINT
asks the trainer to finish its step, save a checkpoint and exit; if it does not within the
grace period, SIGTERM and then SIGKILL go to the whole process group.
'''),
    code('''
report = manager.stop(timeout=60)
print(report.message)
'''),
    code('''
# NBVAL_CHECK_OUTPUT
status = manager.status()
print(status.state.value, "with a checkpoint:", status.last_checkpoint is not None)
'''),
    md('''
## Orphaned runs, and resume

If the machine reboots or the container restarts, the lock file stays but its processes are
gone. The next kernel sees the run as **ORPHANED**, says why, and offers **Resume** (from the
newest checkpoint, in the same folder) or **Clean up** (clears the lock, keeps every file).
Here we resume the aborted run, then simulate the crash by killing its whole process group.
'''),
    code('''
import os, signal
run = manager.resume()
status = run.wait(until="RUNNING", timeout=300)
print("resumed at step", status.step)
os.killpg(status.supervisor_pid, signal.SIGKILL)   # what a power cut does to the run
'''),
    code('''
# NBVAL_CHECK_OUTPUT
status = manager.wait(until="ORPHANED", timeout=60)
print(status.state.value)
'''),
    code('''
print(status.reason)
before = status.step
run = manager.resume()                 # or the panel's Resume button
status = run.wait(until="RUNNING", timeout=300)
status = manager.wait(until=lambda s: (s.step or 0) > before, timeout=300)
print("continued past step", before, "to", status.step)
'''),
    code('''
print(manager.stop(timeout=60).message)
panel.close()
'''),
]

colab = [
    md('''
# Gemma 3 on Colab or Kaggle

Real weights: Gemma 3 (270M or 1B) from Kaggle through `kagglehub`, LoRA on your own dataset,
on a GPU or TPU. Cells that need the network, Kaggle credentials or an accelerator carry
`# NBVAL_SKIP`: the CI machine that executes the tutorials has none of those. They run as they
are on Colab and Kaggle.
'''),
    md('''
## Install

On Colab (Python 3.12) or Kaggle, from the repository this notebook came with: set `SOURCE`
to its git URL, or to the folder you uploaded it to. The same line serves Colab GPU, Kaggle GPU
and Kaggle TPU. The package asks for jax in a range (`>=0.10,<0.13`), and the line names the
runtime's own jax and jaxlib, so pip keeps them and the CUDA plugin or libtpu that goes with
them. Restart the session afterwards if pip says so.
'''),
    code('''
# NBVAL_SKIP
# (needs the network)
from importlib.metadata import version

SOURCE = "git+https://github.com/OWNER/gemma_ft_widgets"   # edit: the repository's URL, or a folder
KEEP = " ".join(f"{p}=={version(p)}" for p in ("jax", "jaxlib"))   # the runtime's own: pip keeps them
%pip install -q "gemma_ft_widgets @ {SOURCE}" {KEEP}
'''),
    md('''
## Where runs live

Colab recycles an idle runtime, and that ends detached processes too. With the workspace on
Drive, the next runtime sees the run as ORPHANED and resumes it from its last checkpoint.
On Kaggle, `/kaggle/working` survives a session's restarts.
'''),
    code('''
import os, sys

if "google.colab" in sys.modules:                            # Colab: keep runs on Drive
    from google.colab import drive
    drive.mount("/content/drive")
    WORKSPACE = "/content/drive/MyDrive/gemma_ft_runs"
elif os.path.isdir("/kaggle/working"):
    WORKSPACE = "/kaggle/working/gemma_ft_runs"
else:
    WORKSPACE = "gemma_ft_runs"
print(WORKSPACE)
'''),
    md('''
## Check the environment

`gemma-ft doctor` says which jax is installed, what accelerator the machine has, and which
devices jax really sees. A run refuses to start when the machine has a GPU or TPU that jax
does not see (it says which `pip install` fixes it), unless the config says `allow_cpu: true`.
'''),
    code('''
from gemma_ft_widgets import doctor

print(doctor.format_report(doctor.report(WORKSPACE)))
'''),
    md('''
## Kaggle credentials

Accept the Gemma licence on kaggle.com/models/google/gemma-3 once. On Kaggle, attach the
model to the notebook (Add Input → Models) and skip this. Elsewhere, log in:
'''),
    code('''
# NBVAL_SKIP
# (needs Kaggle credentials)
import kagglehub
kagglehub.login()
'''),
    md('''
## The estimate, before anything downloads

The form shows this line too; it needs no jax and no weights.
'''),
    code('''
from gemma_ft_widgets import TrainingConfig, estimate
from gemma_ft_widgets.config import sample_dataset_path

DATASET = sample_dataset_path()   # edit: your JSONL or CSV file, e.g. "/content/drive/MyDrive/my_data.jsonl"
config = TrainingConfig.from_dict({
    "model": "gemma3-1b-it", "dataset": DATASET, "method": "lora", "lora_rank": 8,
    "learning_rate": 1e-4, "batch_size": 8, "max_seq_len": 512, "max_steps": 300,
})
print(estimate(config).summary())
'''),
    md('''
## Train

Use your own file (JSONL or CSV: `text`, `prompt`/`response`, alpaca or chat `messages`), or
upload one in the panel's form. The weights come through `kagglehub.model_download` with the
versioned handle `google/gemma-3/flax/gemma3-1b-it/1`; a populated `KAGGLEHUB_CACHE` works
offline.
'''),
    code('''
# NBVAL_SKIP
# (downloads the weights, needs an accelerator)
%load_ext gemma_ft_widgets
%gemma_ft --workspace $WORKSPACE
'''),
    code('''
# NBVAL_SKIP
# (downloads the weights, needs an accelerator)
from gemma_ft_widgets import RunManager

manager = RunManager(WORKSPACE)
run = manager.start(config)
print(run.name)
'''),
    md('''
If the runtime was recycled, run the cells above again: the panel shows the run as ORPHANED
with a **Resume** button, or call `manager.resume()`.

## Sample and export
'''),
    code('''
# NBVAL_SKIP
# (needs the trained run)
run.wait()
print(manager.sample(run, "Explain LoRA in one sentence.", max_new_tokens=64)["text"])
manager.export(run, "gemma3-1b-merged")    # LoRA merged into the base, readable by gm.ckpts.load_params
'''),
]


def write(name, cells):
    for i, cell in enumerate(cells):  # stable ids: regenerating changes only what changed
        cell.id = hashlib.sha1(f"{name}:{i}".encode()).hexdigest()[:8]
    nb = new_notebook(cells=cells, metadata=KERNEL)
    path = os.path.join(OUT, name)
    nbformat.write(nb, path)
    print("wrote", os.path.relpath(path))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write("01_quickstart.ipynb", quickstart)
    write("02_survive_a_kernel_restart.ipynb", restart)
    write("03_gemma3_on_colab_or_kaggle.ipynb", colab)
