"""Warnings for values the config accepts but that are almost surely a slip: shown next to
the field in orange, and Start stays enabled (the user may mean it).

A learning rate of 10 was accepted without a word; with Adam anything above ~1e-2 makes the
loss diverge within a few steps, for LoRA and full fine-tuning alike.
"""

from __future__ import annotations

from typing import Any

HIGH_LR = 0.01
TYPICAL_LR = {"lora": "1e-4 to 1e-3", "full": "1e-5 to 1e-4"}


def field_warnings(values: dict[str, Any]) -> dict[str, list[str]]:
    """{field: [warning, ...]} for the form's values (fields with errors are never passed)."""
    out: dict[str, list[str]] = {}
    lr = values.get("learning_rate")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > HIGH_LR:
        typical = TYPICAL_LR.get(values.get("method"), TYPICAL_LR["lora"])
        out["learning_rate"] = [f"{lr:g} is very high: the loss will likely diverge "
                                f"(typical for {values.get('method') or 'lora'}: {typical})"]
    return out


def warning_html(messages: list[str]) -> str:
    """The warnings under a field, as amber lines (HTML-escaped)."""
    from . import fmt

    return "".join(f'<div class="gft-field-warning" style="color:#b45309;font-size:0.9em;line-height:1.3;overflow-wrap:anywhere">'
                   f'{fmt.esc(m)}</div>' for m in messages)
