"""A download link for a run's metrics as CSV that works in JupyterLab, Colab and VS Code.

The CSV is written into the run folder (contract.METRICS_CSV_NAME: where VS Code and a
terminal find it), and, up to INLINE_BYTES, also offered as a data: URL link with a
`download` name, which a browser saves without asking the server (Colab's output frames and
JupyterLab both allow it; no path relative to the notebook has to be guessed)."""

from __future__ import annotations

import base64
import os

from ..runs.metrics_csv import save_metrics_csv
from . import fmt

INLINE_BYTES = 8 << 20


def csv_link(run_dir: str) -> str:
    """Write the run's metrics CSV into its folder; the HTML that offers it."""
    path = save_metrics_csv(run_dir)
    size = os.path.getsize(path)
    name = f"{os.path.basename(run_dir)}-metrics.csv"
    saved = f'<span style="color:#555">saved as <code>{fmt.esc(path)}</code></span>'
    if size > INLINE_BYTES:
        return f'<span class="gft-csv-saved">{fmt.nbytes(size)} CSV {saved}</span>'
    with open(path, "rb") as f:
        url = "data:text/csv;base64," + base64.b64encode(f.read()).decode("ascii")
    return (f'<a class="gft-csv-link" download="{fmt.esc(name)}" href="{url}" target="_blank" '
            f'style="color:#0d47a1;text-decoration:underline"><i class="fa fa-download"></i> '
            f'{fmt.esc(name)}</a> ({fmt.nbytes(size)}) · {saved}')
