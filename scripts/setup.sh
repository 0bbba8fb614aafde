#!/usr/bin/env bash
# Set up ./.venv with the pinned stack and the test tools: `bash scripts/setup.sh`.
# Python 3.12 (Colab's, and the one Gemma 4 needs) is preferred; 3.11 works with gemma 3.3.
# PYTHON=/path/to/python overrides the choice; VENV=dir overrides ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for cand in python3.12 "$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python" \
              /root/.pyenv/versions/3.12.1/bin/python python3; do
    if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
      echo "$cand"; return
    fi
  done
  echo "no Python >= 3.11 found; set PYTHON=/path/to/python3.12" >&2; exit 1
}

py=$(pick_python)
echo "setup: using $("$py" --version) at $py -> $venv"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
# A current pip resolves the stack in seconds; the 23.x bundled with CPython 3.12.1 backtracks.
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[dev]" -c constraints.txt
"$venv/bin/python" -m pip check
echo "setup: done. Try: $venv/bin/gemma-ft demo"
