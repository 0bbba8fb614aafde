"""`python -m gemma_ft_widgets.export RUN_DIR --format F --out DIR [--checkpoint C] [--dtype T]`

Runs in its own process (the run manager and the CLI start it; jax, torch and transformers
never load in a notebook kernel). Checks everything it can before loading any weights, writes
into a hidden `.<DIR>.partial-<pid>` beside DIR and renames it to DIR only when complete, and
never replaces anything: an existing file or non-empty folder at DIR is an error. On success
it prints DIR on the first line of stdout, then the command that loads it. Phases go to stderr
as `progress: <phase>` lines. Exit status 2 for anything the user can fix (message on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .. import contract
from . import DEFAULT_FORMAT, DTYPES, FORMATS, ExportError, check_request

PROGRESS_PREFIX = contract.PROGRESS_PREFIX
DEFAULT_DTYPE = {"hf": "bfloat16", "peft": "float32", "gguf": "f16"}


def _say(phase: str) -> None:
    print(PROGRESS_PREFIX + phase, file=sys.stderr, flush=True)


def check_out(out_dir: str) -> None:
    """ExportError when `out_dir` exists as a file or a non-empty folder: an export never overwrites."""
    if os.path.isdir(out_dir) and os.listdir(out_dir) or os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir} exists and is not empty; export never overwrites: choose another --out")


def resolve_checkpoint(run_dir: str, checkpoint) -> str:
    """The checkpoint to export (newest by default); ExportError when `run_dir` is not a run folder
    or has no such checkpoint."""
    from ..train import sample

    if not os.path.isfile(os.path.join(run_dir, contract.CONFIG_NAME)):
        raise ExportError(f"{run_dir} is not a run folder (no {contract.CONFIG_NAME})")
    try:
        path = sample.resolve_checkpoint(run_dir, checkpoint)
    except FileNotFoundError as e:
        raise ExportError(str(e)) from None
    if path is None:
        raise ExportError(f"{run_dir} has no checkpoint yet; train first (or wait for the first save)")
    return path


def load_command(fmt: str, out_dir: str) -> str:
    """The one line that loads an export of format `fmt` from `out_dir`, printed after it."""
    if fmt == "hf":
        return (f"from transformers import AutoModelForCausalLM, AutoTokenizer; "
                f"model = AutoModelForCausalLM.from_pretrained({out_dir!r}); "
                f"tokenizer = AutoTokenizer.from_pretrained({out_dir!r})")
    if fmt == "peft":
        return (f"from peft import PeftModel; model = PeftModel.from_pretrained(<the base model in "
                f"transformers>, {out_dir!r})  # base: gemma-ft export RUN --format hf of the base")
    if fmt == "gguf":
        return f"ollama create my-model -f {os.path.join(out_dir, 'Modelfile')}   # or llama.cpp: llama-cli -m {out_dir}/*.gguf"
    return f"from gemma import gm; params = gm.ckpts.load_params({out_dir!r})"


def export(run_dir: str, out_dir: str, fmt: str = DEFAULT_FORMAT, checkpoint=None, dtype: str | None = None,
           say=lambda phase: None) -> str:
    """Write the run's checkpoint (newest by default) to `out_dir` in format `fmt`."""
    check_request(fmt, dtype)
    run_dir, out_dir = os.path.abspath(run_dir), os.path.abspath(out_dir)
    check_out(out_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    if fmt == "gemma":
        from ..train import export as gemma_export

        say("writing the gemma checkpoint")
        try:
            return gemma_export.export(run_dir, out_dir, path)
        except gemma_export.ExportError as e:
            raise ExportError(str(e)) from None
    dtype = dtype or DEFAULT_DTYPE[fmt]
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write(fmt, run_dir, path, tmp, dtype, say)
        check_out(out_dir)  # still free: nothing appeared there while we worked
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked): the rename needs the name free
        os.rename(tmp, out_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _user_error(e):
            raise ExportError(str(e)) from None
        raise
    return out_dir


def _user_error(e: BaseException) -> bool:
    """A bad config, weights that cannot be found, or an architecture the format cannot
    express: the message is for the user, not a traceback."""
    from ..config import ConfigError
    from .hf_names import UnsupportedModel

    kinds: tuple = (ConfigError, UnsupportedModel)
    train_models = sys.modules.get("gemma_ft_widgets.train.models")
    if train_models is not None:
        kinds += (train_models.ModelLoadError,)
    return isinstance(e, kinds)


def _write(fmt: str, run_dir: str, ckpt: str, tmp: str, dtype: str, say) -> None:
    from . import load_torch_before_jax, run_source

    if fmt in ("hf", "peft"):
        load_torch_before_jax()

    if fmt == "peft":
        from . import peft_adapter

        say(f"loading the base model and the adapters of {os.path.basename(ckpt)}")
        src = run_source.load_adapters(run_dir, ckpt)
        say("writing the PEFT adapter")
        peft_adapter.write(tmp, src, dtype, say)
        run_source.write_info(tmp, src, fmt, dtype)
        return
    say(f"loading the model and {os.path.basename(ckpt)} (LoRA merged)")
    src = run_source.load_merged(run_dir, ckpt)
    if fmt == "hf":
        from . import hf

        hf.write(tmp, src.config, src.params, src.tokenizer_path, src.family, dtype, say)
    elif fmt == "gguf":
        from . import gguf_file

        gguf_file.write(tmp, src.config, src.params, src.tokenizer_path, src.family, dtype, say)
    run_source.write_info(tmp, src, fmt, dtype)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gemma_ft_widgets.export",
                                     description="Export a run's trained weights (LoRA merged, or as a PEFT adapter).")
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="folder to create (never overwritten)")
    parser.add_argument("--format", default=DEFAULT_FORMAT, help=f"one of {', '.join(FORMATS)} (default {DEFAULT_FORMAT})")
    parser.add_argument("--checkpoint", default=None, help="path, step_N or N; default: newest")
    parser.add_argument("--dtype", default=None,
                        help="; ".join(f"{f}: {', '.join(d)}" for f, d in DTYPES.items() if d) + " (first is the default)")
    parser.add_argument("--progress", action="store_true", help=f"phases on stderr as '{PROGRESS_PREFIX}PHASE'")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out, args.format, args.checkpoint, args.dtype,
                     say=_say if args.progress else (lambda phase: None))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR
    print(out)
    print("load with: " + load_command(args.format, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
