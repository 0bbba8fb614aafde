"""`gemma-ft`: manage training runs from a terminal, on the same workspace as the panel.

    gemma-ft demo                      LoRA on `tiny` (the form's defaults) on the sample dataset, followed
    gemma-ft start CONFIG.json         start a run; prints its folder
    gemma-ft status [--json]           what the workspace's run is doing
    gemma-ft list [--json]             every run with its state
    gemma-ft logs [RUN] [--follow]     the trainer's output (--stderr, --stream status|samples, ...)
    gemma-ft stop [--force]            graceful stop (checkpoint), escalating after --timeout
    gemma-ft resume [RUN]              continue an orphaned or aborted run from its checkpoint
    gemma-ft clean [--force]           clear an orphaned run's lock (keeps every file)
    gemma-ft restore-lock [RUN]        write the lock again for a live run whose lock was deleted
    gemma-ft delete RUN --yes          delete a run folder
    gemma-ft export RUN --out DIR [--format hf|peft|gguf]   export a run's weights
    gemma-ft sample [RUN] PROMPT       greedy answer from a checkpoint (--checkpoint N)
    gemma-ft doctor [--json]           can this environment train, and on which devices?
    gemma-ft queue add CONFIG [--name N]   queue a run: it starts when the active one ends
    gemma-ft queue list|remove ID|clear|pause|resume|policy pause|continue
    gemma-ft sweep CONFIG --grid learning_rate=1e-4,3e-4 lora_rank=4,8   queue a grid as a group

Every command takes --workspace (default $GEMMA_FT_WORKSPACE, else ./gemma_ft_runs).
Exit status: 0 done, 1 refused or failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from . import contract, remedies
from .runs import ACTIVE_STATES, RunError, RunManager, RunStatus, State, phases, samples
from .runs.manager import LOG_STREAMS
from .runs.status import describe_process, fmt_devices

PROG = "gemma-ft"


def _manager(args) -> RunManager:
    return RunManager(args.workspace)


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _describe(st: RunStatus) -> str:
    lines = [f"state:      {st.state.value}" + (f"  ({st.reason})" if st.reason else "")]
    if st.run_dir:
        lines.insert(0, f"run:        {st.run_name}  ({st.run_dir})")
        lines.append(f"model:      {_fmt(st.model)}   attempt {_fmt(st.attempt)}")
        if st.tags:
            lines.append(f"tags:       {', '.join(st.tags)}")
        lines.append(f"step:       {_fmt(st.step)}/{_fmt(st.max_steps)}   loss {_fmt(st.loss, '.4f')}   "
                     f"eval loss {_fmt(st.eval_loss, '.4f')}   lr {_fmt(st.lr, '.2e')}   "
                     f"tokens/s {_fmt(st.tokens_per_s, '.0f')}")
        lines.append(f"started:    {_fmt(st.started_at)}   ended {_fmt(st.ended_at)}   "
                     f"elapsed {_fmt(st.elapsed_s, '.1f')} s")
        if st.phase:
            lines.append(f"phase:      {phases.describe(st.phase)}")
        lines.append(f"checkpoint: {_fmt(st.last_checkpoint)}")
        for name in st.damaged_checkpoints:
            lines.append(f"damaged:    {name} (could not be restored; kept, see DAMAGED.txt inside)")
        if st.devices:
            lines.append(f"devices:    {fmt_devices(st.devices)}")
        if st.processes:
            lines.extend(("processes:  " if k == 0 else " " * 12) + describe_process(p)
                         for k, p in enumerate(st.processes))
        if st.exit_code is not None or st.signal_name:
            lines.append(f"exit:       code {_fmt(st.exit_code)}   signal {_fmt(st.signal_name)}")
        if st.job:
            lines.append(f"job:        {st.job.get('kind')} job {st.job.get('job_id')} {_fmt(st.job.get('state'))}")
        if st.foreign_host:
            lines.append(f"host:       {st.foreign_host} (not this machine)")
        if st.can_resume:
            lines.append(f"hint:       resume with `{PROG} resume {st.run_name}`")
        if st.lock_missing:
            lines.append(f"hint:       restore its lock with `{PROG} restore-lock {st.run_name}`")
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------------------
def cmd_start(args) -> int:
    """`gemma-ft start CONFIG`: start a run; prints its folder."""
    from .config import TrainingConfig

    config = TrainingConfig.from_json_file(args.config)  # before anything is created
    run = _manager(args).start(config, start_anyway=args.anyway)
    print(run.run_dir)
    st = run.status()
    print(f"{st.state.value}: follow it with `{PROG} logs --follow` or `{PROG} status`", file=sys.stderr)
    return 0


def cmd_launch(args) -> int:
    """`gemma-ft launch --slurm|--k8s CONFIG`: write the run's batch script or manifest, and submit it with --submit."""
    from .config import TrainingConfig
    from .runs import scheduled, slurm

    config = TrainingConfig.from_json_file(args.config)  # before anything is created
    if args.slurm:
        opts = slurm.Options(nodes=args.nodes, tasks_per_node=args.tasks_per_node, partition=args.partition,
                             time=args.time, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                             extra=tuple(args.sbatch_option or ()))
        run_dir, path, job_id = scheduled.launch_slurm(_manager(args), config, opts, args.submit)
        print(run_dir)
        print(f"submitted as Slurm job {job_id}: follow it with `{PROG} status`" if job_id else
              f"batch script: {path}; submit it with `sbatch {path}`", file=sys.stderr)
        return 0
    from .runs import k8s

    run_dir, path, job = scheduled.launch_k8s(_manager(args), config, k8s.Options(
        processes=args.processes, image=args.image, port=args.port, namespace=args.namespace,
        claim=args.volume_claim, mount=args.mount_path), args.submit)
    print(run_dir if job else path)
    print(f"applied as Kubernetes Job {job}: follow it with `{PROG} status`, stop it with `{PROG} stop`" if job
          else f"apply it with `kubectl apply -f {path}`", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    """`gemma-ft status [RUN]`: a run's status, as text or --json."""
    st = _manager(args).status(args.run)
    print(contract.dumps(st.to_dict(), indent=2) if args.json else _describe(st))
    return 0


def cmd_list(args) -> int:
    """`gemma-ft list`: every run of the workspace, one line each (or --json)."""
    runs = _manager(args).runs()
    if args.json:
        print(contract.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs in this workspace")
        return 0
    print(f"{'RUN':32} {'STATE':9} {'STEP':>11} {'LOSS':>8}  REASON")
    for r in runs:
        step = f"{_fmt(r.step)}/{_fmt(r.max_steps)}"
        tags = f"  [{', '.join(r.tags)}]" if r.tags else ""
        print(f"{r.run_name:32} {r.state.value:9} {step:>11} {_fmt(r.loss, '.4f'):>8}  {r.reason}{tags}")
    return 0


def cmd_logs(args) -> int:
    """`gemma-ft logs [RUN]`: the last lines of a log stream, or --follow it."""
    m = _manager(args)
    stream = "stderr" if args.stderr else args.stream
    run_dir = m.resolve(args.run)
    if stream == samples.STREAM:  # metrics.jsonl's sample events, as text
        return samples.print_samples(run_dir, args.lines, args.follow,
                                     lambda: m.status(run_dir).state in ACTIVE_STATES)
    path = os.path.join(run_dir, LOG_STREAMS[stream])
    if not args.follow:
        text = contract.tail_text(path, args.lines)
        if text:
            print(text)
        return 0
    return _follow(m, run_dir, path, args.lines)


def _follow(m: RunManager, run_dir: str, path: str, lines: int) -> int:
    """tail -f until the run is no longer active (or Ctrl+C)."""
    text = contract.tail_text(path, lines)
    if text:
        print(text, flush=True)
    offset = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        while True:
            active = m.status(run_dir).state in ACTIVE_STATES
            offset = _print_from(path, offset)
            if not active:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def _print_from(path: str, offset: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    if data:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    return offset + len(data)


def cmd_stop(args) -> int:
    """`gemma-ft stop`: stop the active run; exit 1 when there was none."""
    m = _manager(args)
    if not args.force:
        print(f"stopping gracefully (escalating after {args.timeout:g} s) ...", file=sys.stderr)
    report = m.stop(force=args.force, timeout=args.timeout)
    print(remedies.with_commands(report.message, report.remedies, workspace=m.workspace),
          file=sys.stderr if report.nothing_to_stop else sys.stdout)
    return 1 if report.nothing_to_stop else 0


def cmd_resume(args) -> int:
    """`gemma-ft resume [RUN]`: continue a run from a checkpoint; prints its folder."""
    run = _manager(args).resume(args.run, checkpoint=args.checkpoint, max_steps=args.max_steps)
    print(run.run_dir)
    return 0


def cmd_clean(args) -> int:
    """`gemma-ft clean`: clear an orphaned run's lock, keeping its files."""
    print(_manager(args).clean(force=args.force))
    return 0


def cmd_restore_lock(args) -> int:
    """`gemma-ft restore-lock [RUN]`: write a live run's deleted workspace lock again."""
    print(_manager(args).restore_lock(args.run))
    return 0


def cmd_delete(args) -> int:
    """`gemma-ft delete RUN`: delete a run folder, after a confirmation (or --yes)."""
    m = _manager(args)
    run_dir = m.resolve(args.run)
    if not args.yes:
        if not sys.stdin.isatty():
            raise RunError(f"refusing to delete {run_dir} without --yes")
        answer = input(f"Delete {run_dir} with all its checkpoints and logs? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    print(m.delete(run_dir))
    return 0


def cmd_export(args) -> int:
    """`gemma-ft export RUN`: export a run's weights; prints where and how to load them."""
    out = _manager(args).export(args.run, args.out, format=args.format, checkpoint=args.checkpoint,
                                dtype=args.dtype,
                                on_progress=lambda phase: print(f"{phase}…", file=sys.stderr, flush=True))
    if out.strip():
        print(out.rstrip())
    return 0


def cmd_sample(args) -> int:
    """`gemma-ft sample [RUN] PROMPT`: a completion from a run's checkpoint ("-" reads the prompt from stdin)."""
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise RunError("the prompt is empty")
    # Phases on stderr (loading jax and the checkpoint takes a while); the answer alone on stdout.
    out = _manager(args).sample(args.run, prompt, max_new_tokens=args.max_new_tokens,
                                checkpoint=args.checkpoint, timeout=args.timeout,
                                on_progress=lambda phase: print(f"{phase}…", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(out.get("text", ""))
    return 0


def cmd_doctor(args) -> int:
    """`gemma-ft doctor`: can this environment train, and on which devices? Exit 1 when not."""
    from . import doctor

    ws = getattr(args, "workspace", None)
    r = doctor.report(ws, probe=not args.no_probe)
    print(json.dumps(r, indent=2) if args.json else doctor.format_report(r))
    return 0 if r["ok"] else 1


def _describe_queue(q, workspace: str) -> str:
    lines = []
    head = "paused" + (f": {q.pause_reason}" if q.pause_reason else "") if q.paused else \
        (q.blocked or ("empty" if not q.entries else "starting the next run"))
    lines.append(f"queue: {len(q.entries)} waiting; {head}; on failure: {q.on_failure}")
    if q.entries and q.remedies():
        lines.append("hint:  " + "; ".join(remedies.command_text(r, q.blocked_by, workspace) for r in q.remedies()))
    for i, e in enumerate(q.entries, 1):
        group = f"  [{e.group}]" if e.group else ""
        cfg = e.config
        lines.append(f"  {i:>2}. {e.id}  {e.label():28} {cfg.get('model')} {cfg.get('method')} "
                     f"lr {cfg.get('learning_rate')} steps {cfg.get('max_steps')}{group}")
    if q.started:
        lines.append("started from the queue: " + ", ".join(s["run"] for s in q.started[-5:]))
    return "\n".join(lines)


def _redacted(queue: dict) -> dict:
    """The queue as JSON, each webhook URL cut to its scheme and host (the rest is a secret)."""
    from .webhook_url import redact

    for e in queue["entries"]:
        if e["config"].get("notify"):
            e["config"]["notify"] = redact(e["config"]["notify"])
    return queue


def cmd_queue(args) -> int:
    """`gemma-ft queue ACTION`: add to, change or show the run queue; prints the queue after most actions."""
    from .config import TrainingConfig

    q = _manager(args).queue
    action = args.action
    if action == "add":
        entry = q.add(TrainingConfig.from_json_file(args.config), name=args.name)
        started = {s["id"]: s["run"] for s in q.list().started}
        print(f"queued {entry.id} ({entry.label()})"
              + (f"; the slot was free, so it started as {started[entry.id]}" if entry.id in started else ""))
    elif action == "remove":
        entry = q.remove(args.id)
        print(f"removed {entry.id} ({entry.label()})")
        return 0
    elif action == "clear":
        if not args.yes and q.list().entries:
            print(f"{PROG}: clearing removes {len(q.list().entries)} queued runs; add --yes", file=sys.stderr)
            return 1
        print(f"removed {q.clear()} queued runs")
        return 0
    elif action == "pause":
        q.pause()
        print("queue paused; running runs go on, no new one starts")
    elif action == "resume":
        run = q.resume()
        print("queue resumed" + (f"; started {run.name}" if run is not None else ""))
    elif action == "policy":
        q.set_policy(args.on_failure)
        print(f"on failure the queue will {args.on_failure}")
    state = q.list()
    print(json.dumps(_redacted(state.to_dict()) | {"blocked": state.blocked}, indent=2)
          if getattr(args, "json", False) else _describe_queue(state, q.workspace))
    return 0


def cmd_sweep(args) -> int:
    """`gemma-ft sweep CONFIG --grid ...`: queue one run per grid point, as one group."""
    from . import sweep
    from .config import TrainingConfig

    base = TrainingConfig.from_json_file(args.config).to_dict()  # relative paths resolved
    grid = sweep.parse_grid(args.grid)
    n = sweep.size(grid)
    if n > sweep.MAX_POINTS and not args.yes:
        print(f"{PROG}: the grid has {n} points (more than {sweep.MAX_POINTS}); add --yes to queue them all",
              file=sys.stderr)
        return 1
    points = sweep.points(base, grid)  # every point validated before any is queued
    group = args.name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    names = [sweep.point_name(group, p) for p, _ in points]
    entries = _manager(args).queue.add_many([c for _, c in points], names, group=group)
    print(f"queued {len(entries)} runs as group {group}:")
    for e in entries:
        print(f"  {e.id}  {e.name}")
    return 0


def cmd_demo(args) -> int:
    """`gemma-ft demo`: start the demo run and watch it; exit 0 when it finished."""
    from .config import TrainingConfig, demo_config

    overrides = {}
    if args.steps:
        default_warmup = TrainingConfig.__dataclass_fields__["warmup_steps"].default
        overrides = {"max_steps": args.steps, "warmup_steps": min(default_warmup, args.steps // 10)}
    m = _manager(args)
    run = m.start(demo_config(**overrides))
    print(f"run folder: {run.run_dir}")
    st = _watch(m, run.run_dir)
    print(f"run folder: {run.run_dir}")
    print(f'Open the panel in JupyterLab: `from gemma_ft_widgets import ControlPanel; '
          f'ControlPanel(workspace="{m.workspace}")`')
    return 0 if st.state == State.FINISHED else 1


def _watch(m: RunManager, run_dir: str) -> RunStatus:
    """Print state transitions and a one-line progress bar until the run ends."""
    last_state, stopping = None, False
    tty = sys.stdout.isatty()
    last_line, shown = 0.0, ""
    while True:
        try:
            st = m.status(run_dir)  # its numbers come from metrics.jsonl, read incrementally
            if st.state not in ACTIVE_STATES and st.step is not None:  # where it ended
                final = _progress(st)
                if final != shown:
                    print(("\r" if tty else "") + final, flush=True)
                elif tty and shown:
                    print(flush=True)  # end the progress line
            if st.state != last_state:
                newline = tty and last_state and st.state in ACTIVE_STATES  # an ended run's line ended above
                print(("\n" if newline else "") + f"[{st.state.value}]" + (f" {st.reason}" if st.reason else ""),
                      flush=True)
                last_state = st.state
            if st.state not in ACTIVE_STATES:
                return st
            if st.step is not None and (tty or time.monotonic() - last_line > 5):
                line = shown = _progress(st)
                print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
                last_line = time.monotonic()
            time.sleep(0.5)
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True
            print("\nstopping gracefully (Ctrl+C again to leave it running) ...", flush=True)
            print(m.stop().message, flush=True)


def _progress(st: RunStatus, width: int = 30) -> str:
    total = st.max_steps or 0
    frac = min(1.0, (st.step or 0) / total) if total else 0.0
    bar = "#" * int(frac * width) + "." * (width - int(frac * width))
    return (f"[{bar}] step {st.step}/{_fmt(total)}  loss {_fmt(st.loss, '.4f')}  "
            f"tokens/s {_fmt(st.tokens_per_s, '.0f')}")


# -- parser --------------------------------------------------------------------------------
class _Commands:
    """Adds subcommands that share the common options (--workspace)."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser):
        self.sub, self.common = sub, common

    def add(self, name: str, func, help: str) -> argparse.ArgumentParser:
        sp = self.sub.add_parser(name, help=help, description=help, parents=[self.common])
        sp.set_defaults(func=func)
        return sp


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser: a global --workspace and one subcommand per operation."""
    ws_help = f"workspace folder (default ${contract.WORKSPACE_ENV}, else ./{contract.DEFAULT_WORKSPACE})"
    p = argparse.ArgumentParser(prog=PROG, description="Manage gemma_ft_widgets training runs.")
    p.add_argument("--workspace", "-w", default=None, help=ws_help)
    # SUPPRESS: a subcommand's absent --workspace must not overwrite one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help=ws_help)
    commands = _Commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"), common)
    for add_arguments in (_start_args, _launch_args, _inspect_args, _lifecycle_args, _tool_args,
                          _queue_args, _sweep_args, _sample_args):
        add_arguments(commands)
    return p


def _start_args(commands: _Commands) -> None:
    """start: a run from a config file."""
    sp = commands.add("start", cmd_start, "start a run from a config JSON file; prints the run folder")
    sp.add_argument("config")
    sp.add_argument("--anyway", action="store_true",
                    help="start although the memory estimate does not fit this machine (noted in status.log)")


def _launch_args(commands: _Commands) -> None:
    """launch: a Slurm batch job or a Kubernetes manifest."""
    sp = commands.add("launch", cmd_launch, "run a config past this host: a Slurm batch job (--slurm) or a "
                      "Kubernetes manifest (--k8s); docs/multihost.md")
    sp.add_argument("config")
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--slurm", action="store_true", help="write the run's sbatch script (one task per process)")
    where.add_argument("--k8s", action="store_true", help="write an Indexed Job + headless Service manifest")
    sp.add_argument("--submit", action="store_true", help="--slurm: sbatch it, --k8s: kubectl apply it; and hold the workspace lock")
    sp.add_argument("--nodes", type=int, default=1, help="--slurm: nodes (default 1)")
    sp.add_argument("--tasks-per-node", type=int, default=1, help="--slurm: trainer processes per node (default 1)")
    sp.add_argument("--partition", default=None)
    sp.add_argument("--time", default=None, help="--slurm: time limit, e.g. 02:00:00")
    sp.add_argument("--gpus-per-node", type=int, default=None)
    sp.add_argument("--cpus-per-task", type=int, default=None)
    sp.add_argument("--sbatch-option", action="append", metavar="--OPT=VALUE", help="another #SBATCH line")
    sp.add_argument("--processes", type=int, default=2, help="--k8s: pods, one trainer process each")
    sp.add_argument("--image", default=None, help="--k8s: a container image with this package installed")
    sp.add_argument("--port", type=int, default=None, help="--k8s: the coordinator's port")
    sp.add_argument("--namespace", default="default")
    sp.add_argument("--volume-claim", default=None, help="--k8s: a ReadWriteMany claim holding the workspace")
    sp.add_argument("--mount-path", default=None, help="--k8s: where the claim is mounted (default: the workspace)")


def _inspect_args(commands: _Commands) -> None:
    """status, list and logs: reading runs."""
    sp = commands.add("status", cmd_status, "state of the active (or newest) run")
    sp.add_argument("run", nargs="?")
    sp.add_argument("--json", action="store_true")
    sp = commands.add("list", cmd_list, "every run and its state")
    sp.add_argument("--json", action="store_true")
    sp = commands.add("logs", cmd_logs, "show a run's logs (default: the trainer's stdout)")
    sp.add_argument("run", nargs="?")
    sp.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    sp.add_argument("--stderr", action="store_true", help="the trainer's stderr")
    sp.add_argument("--stream", choices=sorted([*LOG_STREAMS, samples.STREAM]), default="stdout")
    sp.add_argument("--lines", "-n", type=int, default=200)


def _lifecycle_args(commands: _Commands) -> None:
    """stop, resume, clean, restore-lock and delete: changing a run."""
    sp = commands.add("stop", cmd_stop, "stop the active run (SIGINT, then SIGTERM, then SIGKILL to its group)")
    sp.add_argument("--force", action="store_true", help="kill the process group at once")
    sp.add_argument("--timeout", type=float, default=30.0, help="seconds to wait before escalating")
    sp = commands.add("resume", cmd_resume, "resume an orphaned or aborted run from its newest checkpoint that restores")
    sp.add_argument("run", nargs="?")
    sp.add_argument("--checkpoint", default=None, help="step_N or N: resume from this one (newer ones are set aside)")
    sp.add_argument("--max-steps", type=int, default=None,
                    help="train on to this step (also a FINISHED run), with its optimizer state; the learning "
                         "rate holds at its final value for the extra steps")
    sp = commands.add("clean", cmd_clean, "clear the lock of an orphaned run (keeps every file)")
    sp.add_argument("--force", action="store_true", help="also clear a lock held by another host")
    sp = commands.add("restore-lock", cmd_restore_lock, "write the workspace lock again for a live run whose lock was deleted")
    sp.add_argument("run", nargs="?")
    sp = commands.add("delete", cmd_delete, "delete a run folder with its checkpoints and logs")
    sp.add_argument("run")
    sp.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _tool_args(commands: _Commands) -> None:
    """demo, export and doctor."""
    sp = commands.add("demo", cmd_demo, "LoRA on the tiny model (the panel form's defaults) on the sample dataset, followed to the end")
    sp.add_argument("--steps", type=int, default=None)
    sp = commands.add("export", cmd_export, "export a run's trained weights (gemma, hf, peft or gguf; docs/export.md)")
    sp.add_argument("run")
    sp.add_argument("--out", required=True, help="folder to create (never overwritten)")
    sp.add_argument("--format", default="gemma", help="gemma (default), hf, peft or gguf")
    sp.add_argument("--checkpoint", default=None, help="step N, step_N or a path (default: the newest)")
    sp.add_argument("--dtype", default=None, help="hf: bfloat16|float32|float16; peft: float32|bfloat16|float16; "
                    "gguf: f16|bf16|f32|q8_0")
    sp = commands.add("doctor", cmd_doctor, "check the Python, jax and accelerator, and the workspace's disk")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--no-probe", action="store_true", help="do not start jax to ask which devices it sees")


def _queue_args(commands: _Commands) -> None:
    """queue and its actions (add, list, remove, clear, pause, resume, policy)."""
    sp = commands.add("queue", cmd_queue, "the workspace's run queue: the next run starts when the active one ends")
    common = [commands.common]
    qsub = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    qp = qsub.add_parser("add", help="validate a config and queue it", parents=common)
    qp.add_argument("config")
    qp.add_argument("--name", default=None, help="the run's name (its folder's prefix)")
    qp = qsub.add_parser("list", help="the queued runs and what the queue waits for", parents=common)
    qp.add_argument("--json", action="store_true")
    qp = qsub.add_parser("remove", help="remove a queued run (an id or a unique prefix)", parents=common)
    qp.add_argument("id")
    qp = qsub.add_parser("clear", help="remove every queued run", parents=common)
    qp.add_argument("--yes", "-y", action="store_true")
    qsub.add_parser("pause", help="start no new run until resumed", parents=common)
    qsub.add_parser("resume", help="go on, starting the next run if none is active", parents=common)
    qp = qsub.add_parser("policy", help="after a FAILED or ABORTED run: pause (default) or continue",
                         parents=common)
    qp.add_argument("on_failure", choices=["pause", "continue"])


def _sweep_args(commands: _Commands) -> None:
    """sweep: a grid of runs queued as a group."""
    sp = commands.add("sweep", cmd_sweep, "queue one run per point of a grid over config fields, as a group")
    sp.add_argument("config")
    sp.add_argument("--grid", nargs="+", required=True, metavar="FIELD=V1,V2",
                    help="e.g. learning_rate=1e-4,3e-4 lora_rank=4,8")
    sp.add_argument("--name", default=None, help="the group's name (default sweep-DATE)")
    sp.add_argument("--yes", "-y", action="store_true", help="allow more than 64 points")


def _sample_args(commands: _Commands) -> None:
    """sample: a greedy answer from a checkpoint."""
    sp = commands.add("sample", cmd_sample, "greedy answer to a prompt from a run's checkpoint (newest by default)")
    sp.add_argument("run", nargs="?", help="run name (default: the active or newest run)")
    sp.add_argument("prompt", help="the prompt; - reads it from stdin")
    sp.add_argument("--checkpoint", default=None, help="step N, step_N or a path (default: the newest)")
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--timeout", type=float, default=600.0, help="seconds before the sampler is stopped")
    sp.add_argument("--json", action="store_true", help='print {"text", "checkpoint", "seconds"}')


def main(argv: list[str] | None = None) -> int:
    """The `gemma-ft` command; returns the exit status (errors as one line on stderr)."""
    args = build_parser().parse_args(argv)
    from .config import ConfigError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except RunError as e:
        print(f"{PROG}: error: {remedies.error_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gemma-ft status | head -3`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not raise again
        return 0


if __name__ == "__main__":
    sys.exit(main())
