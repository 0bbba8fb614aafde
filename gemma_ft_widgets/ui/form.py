"""The config form (the IDLE view): one widget per TrainingConfig field, each with its error
shown next to it, a dataset preview, the estimate line and Start.

Values -> `TrainingConfig.from_dict`; `ConfigError.by_field()` -> `errors[field]`. The form
re-validates on every change; the dataset file is read once per (path, mtime, size, format).
Start hands a TrainingConfig to `on_start` (the panel starts the run in a worker thread).
"""

from __future__ import annotations

import html
import os
import re
import threading
import typing
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from .. import models
from ..config import ConfigError, FieldInfo, TrainingConfig, field_info
from . import advice, fmt, layout
from .defaults import ModelDefaults
from .fit import FitRow
from .preview import DatasetPreview, inspect
from .whole_number import WholeNumberText

_DESC = {"description_width": "150px"}
_FIELD = {"width": "330px"}

# The form's fields, in order: the main ones, then the advanced ones. What each is (label,
# widget, choices, help) comes from TrainingConfig's field metadata (config.field_info).
MAIN_FIELDS = ["model", "dataset", "dataset_format", "method", "lora_rank", "lora_alpha", "lora_dropout",
               "quantization", "learning_rate", "lr_schedule", "warmup_steps", "batch_size", "grad_accum_steps",
               "max_seq_len", "max_steps", "eval_every", "checkpoint_every", "seed", "run_name", "tags"]
ADVANCED_FIELDS = ["weight_decay", "max_grad_norm", "eval_fraction", "keep_checkpoints", "log_every",
                   "schedule_steps", "dtype", "fsdp", "remat", "num_processes", "allow_cpu", "notify",
                   "eval_prompts", "sample_tokens"]
FIELD_NAMES = MAIN_FIELDS + ADVANCED_FIELDS
MAX_SHOWN_ERRORS = 5


def _model_options(extra: str | None = None) -> list[tuple[str, str]]:
    options = [(spec.label, name) for name, spec in models.MODELS.items()]
    if extra and extra not in models.MODELS:
        options.append((f"local: {extra}", extra))
    return options


def _kind(info: FieldInfo) -> str:
    """The widget a field gets: named in its metadata, else from its choices or its type."""
    if info.widget or info.choices:
        return info.widget or "choice"
    if typing.get_origin(info.type) is tuple:
        return "lines"  # a list of strings, one a line (eval_prompts)
    return {bool: "bool", int: "int", float: "float", str: "text"}[info.type]


def _make(info: FieldInfo, default: Any) -> w.Widget:
    kind, label = _kind(info), info.label
    if kind == "path":
        return w.Text(value=default, placeholder="path to a .jsonl or .csv file", continuous_update=False,
                      description=label, style=_DESC, layout=w.Layout(width="520px"))
    if kind == "lines":
        return w.Textarea(value="\n".join(default), continuous_update=False, rows=3, description=label,
                          style=_DESC, layout=w.Layout(width="520px"))
    # Only for the kinds below: a Layout made and not used is a widget never closed (test_ui_leaks).
    common = dict(description=label, style=_DESC, layout=w.Layout(**_FIELD))
    if kind == "model":
        return w.Dropdown(options=_model_options(), value=default, **common)
    if kind == "choice":
        return w.Dropdown(options=[(shown, value) for value, shown in info.choices], value=default, **common)
    if kind == "text":
        return w.Text(value=default, continuous_update=False, **common)
    if kind == "int":  # not IntText: it turns a typed "1.5" into 15 (see whole_number.py)
        return WholeNumberText(value=default, **common)
    if kind == "float":
        return w.FloatText(value=default, **common)
    if kind == "bool":
        return w.Checkbox(value=default, indent=True, **common)
    if kind == "secret":  # a webhook URL's path is its secret: typed, never shown
        return w.Password(value=default, placeholder="https://ntfy.sh/… or a Slack/Discord webhook",
                          continuous_update=False, **common)
    raise ValueError(f"{info.name}: no widget for {kind!r}")


def unique_path(folder: str, name: str) -> str:
    """`folder/name`, or `folder/stem-2.ext`, ... when taken: an upload never overwrites."""
    base = os.path.basename(name.replace("\\", "/")) or "upload"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "upload"
    stem, ext = os.path.splitext(base)
    candidate, k = os.path.join(folder, base), 1
    while os.path.exists(candidate):
        k += 1
        candidate = os.path.join(folder, f"{stem}-{k}{ext}")
    return candidate


def save_upload(folder: str, name: str, content: bytes) -> str:
    """Write an uploaded file into `folder` under a free name (created exclusively)."""
    os.makedirs(folder, exist_ok=True)
    while True:
        path = unique_path(folder, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # taken between the check and the open: try the next name
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return path


def _environment_html() -> str:
    """The form's environment line: jax versions and the machine, read without importing jax.
    A GPU/TPU that jax will not see is shown as a warning (the run would refuse to start)."""
    from .. import doctor

    text, warn = doctor.summary_line()
    line = html.escape(text)
    style = "color:#b45309" if warn else "color:#666"
    return f'<span style="{style};font-size:0.9em">Environment: {line}</span>'


class ConfigForm(w.VBox):
    """Public names: `fields[name]`, `errors[name]`, `start_button`, `upload`, `estimate_line`,
    `message`, `blocked_note`, `general_errors`, `preview`, `back_button`, `detected`; traits
    `valid`, `active_run`, `busy`."""

    valid = t.Bool(False)
    active_run = t.Unicode("")  # name of a run that blocks Start (set by the panel's poller)
    busy = t.Bool(False)  # a start is in progress

    def __init__(self, upload_dir: str, on_start: Callable[[TrainingConfig], None] | None = None,
                 defaults: dict[str, Any] | None = None,
                 on_queue: Callable[[TrainingConfig, list[str]], None] | None = None,
                 machine=None, workspace: str | None = None, **kwargs):
        self.upload_dir = upload_dir
        self.workspace = workspace  # its runs' measured start-up goes into the estimate (startup.py)
        self.on_start = on_start
        self.on_queue = on_queue
        self.config: TrainingConfig | None = None  # the last valid config (files not checked)
        self.dataset_info = None
        self._suspend = 0
        self._lock = threading.RLock()
        base = TrainingConfig().to_dict()
        base.update(defaults or {})
        if "learning_rate" not in (defaults or {}):  # the model's default, not tiny's
            base["learning_rate"] = models.default_learning_rate(base["model"], base["method"]) or base["learning_rate"]

        rows = self._build_fields(base)
        self._build_controls(machine)
        children = self._layout(rows)
        super().__init__(children, **kwargs)
        self.add_class("gft-form")
        self.observe(self._update_start, ["valid", "active_run", "busy"])
        self.fit.state.observe(self._update_start, "blocks_start")
        self.validate()

    # -- building ---------------------------------------------------------------------------
    def _build_fields(self, base: dict[str, Any]) -> dict[str, w.Widget]:
        """A widget and an error slot per field; returns each field's row (not the dataset's)."""
        self.fields: dict[str, w.Widget] = {}
        self.errors: dict[str, w.HTML] = {}
        rows: dict[str, w.Widget] = {}
        for field in FIELD_NAMES:
            info = field_info(field)
            widget = _make(info, base[field])
            widget.tooltip = info.help
            widget.add_class(f"gft-field-{field}")
            error = layout.message(w.HTML(layout=w.Layout(margin="0 0 0 8px")))
            error.add_class(f"gft-error-{field}")
            self.fields[field], self.errors[field] = widget, error
            widget.observe(self._changed, "value")
            layout.keep_size(widget)
            if field != "dataset":  # the dataset row also holds the upload button (below)
                rows[field] = layout.row([widget, error])

        return rows

    def _build_controls(self, machine) -> None:
        """Upload, the preview, the estimate and fit rows, the notes, Start / queue / back."""
        self.upload = w.FileUpload(accept=".jsonl,.json,.csv,.txt", multiple=False,
                                   description="Upload", layout=w.Layout(width="110px"))
        self.upload.add_class("gft-upload")
        self.upload.observe(self._uploaded, "value")
        self.detected = w.HTML()
        self.detected.add_class("gft-detected-format")
        self.preview = DatasetPreview()
        self.estimate_line = w.HTML()
        self.estimate_line.add_class("gft-estimate")
        # Target dropdown, fit verdict, Make it fit, Start anyway (ui/fit.py); `machine`: a
        # fit.Target standing for this machine (tests), else detected.
        self.fit = FitRow(apply=self.set_values, start_anyway=self._start_anyway_clicked, machine=machine)
        # The learning rate follows the model and method unless typed (ui/defaults.py).
        self.defaults = ModelDefaults(self.values())
        self.defaults_note = w.HTML()
        self.defaults_note.add_class("gft-defaults-note")
        self.environment_line = w.HTML(_environment_html())
        self.environment_line.add_class("gft-environment")
        self.general_errors = w.HTML()
        self.general_errors.add_class("gft-general-errors")
        self.message = w.HTML()
        self.message.add_class("gft-form-message")
        self.blocked_note = w.HTML()
        self.blocked_note.add_class("gft-start-blocked")
        self.start_button = w.Button(description="Start training", button_style="success", icon="play",
                                     disabled=True, layout=w.Layout(width="180px"))
        self.start_button.add_class("gft-start")
        self.start_button.on_click(self._start_clicked)
        self.queue_button = w.Button(description="Add to queue", icon="list", disabled=True,
                                     tooltip="run it after the runs before it, even with no notebook open",
                                     layout=w.Layout(width="150px"))
        self.queue_button.add_class("gft-queue-add")
        self.queue_button.on_click(self._queue_clicked)
        # A grid turns "Add to queue" into one queued run per point (gemma_ft_widgets/sweep.py).
        self.sweep_grid = w.Text(value="", placeholder="learning_rate=1e-4,3e-4 lora_rank=4,8",
                                 description="Sweep grid", style=_DESC, continuous_update=False,
                                 layout=w.Layout(width="520px"))
        self.sweep_grid.add_class("gft-sweep-grid")
        self.sweep_grid.observe(lambda _c: self._update_start(), "value")
        self.back_button = w.Button(description="Back to the run", icon="arrow-left",
                                    layout=w.Layout(width="180px", display="none"))
        self.back_button.add_class("gft-back")

    def _layout(self, rows: dict[str, w.Widget]) -> list[w.Widget]:
        dataset_row = layout.row([self.fields["dataset"], layout.keep_size(self.upload), self.errors["dataset"]])
        advanced = w.Accordion(children=[w.VBox([rows[f] for f in ADVANCED_FIELDS] + [self.sweep_grid])],
                               titles=("Advanced",), selected_index=None)
        self.advanced = advanced
        children = [w.HTML("<b>New fine-tuning run</b>"), rows["model"], self.defaults_note, dataset_row,
                    layout.row([rows["dataset_format"], layout.message(self.detected)], align="center"),
                    self.preview]
        children += [rows[f] for f in MAIN_FIELDS[3:]]
        children += [advanced, self.general_errors, self.estimate_line, self.fit, self.environment_line,
                     w.HBox([self.start_button, self.fit.anyway_button, self.queue_button, self.back_button],
                            layout=w.Layout(flex_flow="row wrap", grid_gap="4px")),
                     self.blocked_note, self.message]
        return children

    # -- values -----------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The form as a TrainingConfig dict."""
        out = {name: widget.value for name, widget in self.fields.items()}
        out["dataset"] = (out["dataset"] or "").strip()
        out["eval_prompts"] = [p.strip() for p in out["eval_prompts"].splitlines() if p.strip()]
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the form (e.g. from a finished run's config); unknown keys are ignored."""
        with self._lock:
            self._suspend += 1
            try:
                model = values.get("model")
                if isinstance(model, str) and model and model not in models.MODELS:
                    self.fields["model"].options = _model_options(model)
                if "lora_rank" in values and "lora_alpha" not in values:  # a run from before the field
                    values = {**values, "lora_alpha": values["lora_rank"]}
                for name, value in values.items():
                    if name in self.fields and value is not None:
                        if isinstance(value, (list, tuple)):  # eval_prompts: one a line
                            value = "\n".join(str(v) for v in value)
                        try:
                            self.fields[name].value = value
                        except t.TraitError:
                            pass
                self.defaults.sync(self.values())
            finally:
                self._suspend -= 1
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def _changed(self, change=None) -> None:
        if self._suspend:
            return
        if change is not None and change["owner"] in (self.fields["model"], self.fields["method"]):
            updates, note = self.defaults.follow(self.values())
            self._suspend += 1
            try:
                for name, value in updates.items():
                    self.fields[name].value = value
            finally:
                self._suspend -= 1
            self.defaults_note.value = fmt.note(fmt.esc(note), "info") if note else ""
        self.validate()

    def validate(self) -> dict[str, list[str]]:
        """Check the form; show each error next to its field. Returns the errors by field."""
        with self._lock:
            data = self.values()
            errors: dict[str, list[str]] = {}
            config = None
            try:
                config = TrainingConfig.from_dict(data, check_files=False)
            except ConfigError as e:
                errors = e.by_field()
            info = None
            if data["dataset"] and "dataset" not in errors and "dataset_format" not in errors:
                info = inspect(data["dataset"], data["dataset_format"])
                if info.problems:
                    errors["dataset"] = list(info.problems)
                elif data["batch_size"] > len(info.records) and "batch_size" not in errors:
                    errors["batch_size"] = [f"is larger than the dataset ({len(info.records)} examples)"]
            self.dataset_info = info
            self._show_errors(errors)
            for name, msgs in advice.field_warnings(data).items():
                if name in self.errors and name not in errors:
                    self.errors[name].value = advice.warning_html(msgs)
            for name in ("lora_rank", "lora_alpha", "lora_dropout"):
                self.fields[name].disabled = data["method"] != "lora"
            self.detected.value = (f'<span style="color:#555">detected: <b>{fmt.esc(info.format)}</b></span>'
                                   if info is not None and info.ok else "")
            if info is not None and info.ok:
                try:
                    self.preview.update(info, data["model"], max(1, int(data["max_seq_len"])),
                                        data["dataset_format"])
                except Exception as e:  # noqa: BLE001 - a preview problem never blocks the form
                    self.preview.clear()
                    self.detected.value += fmt.error_html([f"preview failed: {e}"])
            else:
                self.preview.clear()
            self.config = config if not errors else None
            self.estimate_line.value = self._estimate(config if config is not None else None)
            self.fit.update(self.config)
            self.valid = not errors
            self._update_start()
            return errors

    def _show_errors(self, errors: dict[str, list[str]]) -> None:
        general = []
        for name, slot in self.errors.items():
            msgs = errors.get(name, [])
            if len(msgs) > MAX_SHOWN_ERRORS:
                msgs = msgs[:MAX_SHOWN_ERRORS] + [f"... and {len(msgs) - MAX_SHOWN_ERRORS} more"]
            slot.value = fmt.error_html(msgs)
        for name, msgs in errors.items():
            if name not in self.errors:
                general += [f"{name}: {m}" for m in msgs]
        self.general_errors.value = fmt.error_html(general)

    def show_config_error(self, error: ConfigError) -> None:
        """Errors found at start (e.g. by the run manager) next to their fields."""
        self._show_errors(error.by_field())
        self.valid = False

    def _estimate(self, config: TrainingConfig | None) -> str:
        if config is None:
            return '<span style="color:#888">Estimate: fix the errors above first.</span>'
        try:
            from ..estimate import estimate
        except ImportError:
            return '<span style="color:#888">Estimate: not available.</span>'
        try:
            est = estimate(config)
            text = est.summary()
            per_step = getattr(est, "step_time_s", None)
            if isinstance(per_step, (int, float)) and per_step > 0:
                text += f"; ≈ {fmt.duration(per_step * config.max_steps)} for {config.max_steps} steps"
            from ..startup import startup

            text += f" + {startup(config, self.workspace).summary()}"
        except Exception as e:  # noqa: BLE001 - an estimate bug must not break the form
            return f'<span style="color:#888">Estimate unavailable: {fmt.esc(e)}</span>'
        return f"<b>Estimate:</b> {fmt.esc(text)}"

    def _update_start(self, change=None) -> None:
        blocked = bool(self.active_run)
        too_big = self.valid and self.fit.state.blocks_start
        self.start_button.disabled = (not self.valid) or blocked or self.busy or too_big
        self.fit.anyway_button.layout.display = "" if too_big else "none"
        self.fit.anyway_button.disabled = blocked or self.busy
        self.queue_button.disabled = (not self.valid) or self.busy
        grid = self.sweep_grid.value.split()
        self.queue_button.description = "Queue sweep" if grid else "Add to queue"
        if blocked:
            self.start_button.tooltip = f"a run is active: {self.active_run}"
        elif not self.valid:
            self.start_button.tooltip = "fix the errors first"
        elif too_big:
            self.start_button.tooltip = f"the run {self.fit.state.block_reason}"
        else:
            self.start_button.tooltip = "start a training run"
        note = (fmt.note(f"Start is disabled: run <b>{fmt.esc(self.active_run)}</b> is active in this "
                         "workspace. <b>Add to queue</b> runs this one when it ends.", "warn")
                if blocked and not self.busy else "")
        if too_big and not blocked and not self.busy:
            note = fmt.note(f"Start is disabled: the estimate {fmt.esc(self.fit.state.block_reason)}. "
                            "<b>Make it fit</b>, pick a smaller model, or <b>Start anyway</b>.", "warn")
        if self.blocked_note.value != note:
            self.blocked_note.value = note

    # -- actions ----------------------------------------------------------------------------
    def _uploaded(self, change) -> None:
        files = change["new"]
        if not files or all(len(f["content"]) == 0 and f.get("size") for f in files):
            return  # empty, or the saved entry set below
        saved = ()
        try:
            for f in files:
                path = save_upload(self.upload_dir, f["name"], bytes(f["content"]))
                self.message.value = fmt.note(f"Uploaded to {fmt.esc(path)}", "ok")
                self.fields["dataset"].value = path
                saved = (dict(f, content=memoryview(b"")),)
        except OSError as e:
            self.message.value = fmt.note(f"Upload failed: {fmt.esc(e)}", "error")
        finally:
            # The browser labels the button "Upload (N)", N = len(value): an empty value read
            # "Upload (0)" right after an upload. Keep the saved file's entry, without its bytes.
            self.upload.value = saved

    def _queue_clicked(self, _button=None) -> None:
        errors = self.validate()
        if errors or self.config is None or self.busy:
            return
        if self.on_queue is not None:
            self.on_queue(self.config, self.sweep_grid.value.split())

    def _start_anyway_clicked(self) -> None:
        """Start although the estimate does not fit this machine: the manager is told so, and
        writes it in the run's status.log."""
        errors = self.validate()
        if errors or self.config is None or self.active_run or self.busy:
            return
        if self.on_start is not None:
            self.on_start(self.config, start_anyway=True)

    def _start_clicked(self, _button=None) -> None:
        errors = self.validate()
        if errors or self.config is None or self.active_run or self.busy or self.fit.state.blocks_start:
            return
        if self.on_start is not None:
            self.on_start(self.config)
