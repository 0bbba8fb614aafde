"""The Export row of an ended run with a checkpoint: format, folder, button, live progress,
then the folder written and the command that loads it. The export itself runs in a
subprocess started by the panel (RunManager.export); nothing heavy loads in the kernel."""

from __future__ import annotations

import os

import ipywidgets as w

from . import fmt, layout

FORMATS = (("gemma (orbax)", "gemma"), ("Hugging Face (merged)", "hf"), ("PEFT adapter", "peft"),
           ("GGUF f16 + Ollama Modelfile", "gguf"))


class ExportRow(w.VBox):
    """Public names: `format`, `folder`, `export_button`, `progress`, `result`; `busy`."""

    def __init__(self, on_export=None, **kwargs):
        self.on_export = on_export
        self.format = w.Dropdown(options=FORMATS, value="hf", description="Export as",
                                 layout=w.Layout(width="300px"))
        self.folder = w.Text(placeholder="folder to create", layout=w.Layout(width="420px"))
        self.folder.add_class("gft-export-folder")
        self.export_button = w.Button(description="Export", icon="download", layout=w.Layout(width="110px"),
                                      tooltip="write the newest checkpoint in this format (never overwrites)")
        self.export_button.add_class("gft-export")
        self.progress = w.HTML()
        self.progress.add_class("gft-export-progress")
        self.result = w.HTML()
        self.result.add_class("gft-export-result")
        super().__init__([layout.row([self.format, self.folder, self.export_button]), self.progress, self.result],
                         **kwargs)
        self.add_class("gft-export-row")
        self.run_dir = ""
        self._default = ""
        self.busy = False
        self.format.observe(lambda _c: self._suggest(), "value")
        self.export_button.on_click(self._clicked)

    def default_folder(self) -> str:
        """The suggested folder: <workspace>/exports/<run>-<format> ("" without a run)."""
        if not self.run_dir:
            return ""
        workspace = os.path.dirname(self.run_dir.rstrip(os.sep))
        return os.path.join(workspace, "exports", f"{os.path.basename(self.run_dir.rstrip(os.sep))}-{self.format.value}")

    def _suggest(self) -> None:
        # A folder the user typed stays; ours follows the run and the format.
        if not self.folder.value or self.folder.value == self._default:
            self._default = self.default_folder()
            self.folder.value = self._default

    def set_run(self, run_dir: str) -> None:
        """Offer the export of `run_dir`; another run clears the last progress, result and folder."""
        if run_dir != self.run_dir:
            self.run_dir = run_dir
            self.progress.value = self.result.value = ""
            self.folder.value = ""
            self._suggest()

    def set_busy(self, busy: bool) -> None:
        """Disable the Export button while an export runs."""
        self.busy = busy
        self.export_button.disabled = busy

    def show_result(self, printed: str) -> None:
        """Show an export's output: the folder written (its first line) and the "load with:"
        command, if it printed one."""
        lines = printed.strip().splitlines()
        folder = lines[0] if lines else ""
        load = next((ln[len("load with: "):] for ln in lines if ln.startswith("load with: ")), "")
        self.result.value = (fmt.note(f"Exported to <code>{fmt.esc(folder)}</code>", "ok")
                             + (f"<div>Load with:</div>{fmt.pre(load, '120px', 'gft-pre gft-export-load')}" if load else ""))

    def _clicked(self, _b=None) -> None:
        if self.busy or self.on_export is None:
            return
        folder = self.folder.value.strip()
        if not folder:
            self.result.value = fmt.note("Give a folder to create.", "error")
            return
        self.result.value = ""
        self.on_export(self.run_dir, self.format.value, os.path.expanduser(folder))
