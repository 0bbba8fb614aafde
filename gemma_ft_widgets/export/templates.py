"""The chat template a run trained with, for transformers (Jinja), GGUF (Jinja) and Ollama (Go).

They render what `datasets.render_example` / `render_prompt` give the trainer: each turn as
`<start_of_turn>user|model\\n<text><end_of_turn>\\n`, system messages joined by a blank line
and put before the first user message's text, and `<start_of_turn>model\\n` to ask for an
answer. The trainer puts <bos> first (a token, not text): the Jinja template writes
`{{ bos_token }}` (transformers' apply_chat_template adds no other), while llama.cpp and
Ollama add BOS themselves, so the Ollama template has none. Text is not trimmed: the
trainer saw it as it was.
"""

from __future__ import annotations

START, END = "<start_of_turn>", "<end_of_turn>"
STOP_TOKENS = (END, "<eos>")

JINJA = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='', found=false) -%}"
    "{%- for m in messages if m['role'] == 'system' -%}"
    "{%- set ns.system = ns.system + ('\\n\\n' if ns.found else '') + m['content'] -%}"
    "{%- set ns.found = true -%}"
    "{%- endfor -%}"
    "{%- for m in messages if m['role'] != 'system' -%}"
    "{%- set text = m['content'] -%}"
    "{%- if m['role'] == 'user' and ns.found -%}"
    "{%- set text = ns.system + '\\n\\n' + text -%}"
    "{%- set ns.found = false -%}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + ('user' if m['role'] == 'user' else 'model') + '\\n' + text + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

OLLAMA = (
    '{{- $sys := "" }}'
    '{{- range .Messages }}{{- if eq .Role "system" }}'
    '{{- if $sys }}{{- $sys = printf "%s\\n\\n%s" $sys .Content }}{{- else }}{{- $sys = .Content }}{{- end }}'
    '{{- end }}{{- end }}'
    '{{- range .Messages }}'
    '{{- if eq .Role "user" }}<start_of_turn>user\n'
    '{{ if $sys }}{{ $sys }}\n\n{{ $sys = "" }}{{ end }}{{ .Content }}<end_of_turn>\n'
    '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
    '{{ end }}'
    '{{- end }}<start_of_turn>model\n'
)


def modelfile(gguf_name: str) -> str:
    """An Ollama Modelfile for the GGUF beside it: `ollama create NAME -f Modelfile`."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{OLLAMA}"""']
    lines += [f'PARAMETER stop "{s}"' for s in STOP_TOKENS]
    return "\n".join(lines) + "\n"
