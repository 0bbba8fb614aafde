#!/usr/bin/env bash
# Set up ./.venv with the pinned stack and the test tools: `bash scripts/setup.sh`.
# Python 3.12 (Colab's, and the one Gemma 4 needs) is preferred; 3.11 works with gemma 3.3.
# PYTHON=/path/to/python overrides the choice; VENV=dir overrides ./.venv; EXTRAS=dev leaves out
# the export extra.
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
# llama-cpp-python (the export extra) compiles llama.cpp: the library only, on every core.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# EXTRAS=dev skips the export extra (torch, transformers, llama.cpp): CI's smoke leg on 3.11.
"$venv/bin/python" -m pip install -q -e ".[${EXTRAS:-dev,export}]" -c constraints.txt
"$venv/bin/python" -m pip check

# The Jupyter extension. Built from labextension/ (TypeScript) when node >= 20.19 is here;
# otherwise the build committed in gemma_ft_widgets/labextension is used (a pip user needs no
# node). A wheel installs both parts as data files, an editable install does not: so the
# server extension's switch is copied and the built labextension linked into the venv here.
venv_abs=$(cd "$venv" && pwd)
if command -v node >/dev/null 2>&1 && node -e 'const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "setup: building the JupyterLab extension with node $(node --version)"
  (cd labextension && npm ci --no-audit --no-fund --loglevel=error \
     && PATH="$venv_abs/bin:$PATH" npm run --silent build)
else
  echo "setup: no node >= 20.19; using the committed build of the JupyterLab extension"
fi
mkdir -p "$venv_abs/etc/jupyter/jupyter_server_config.d" "$venv_abs/share/jupyter/labextensions"
cp jupyter-config/server-config/gemma_ft_widgets.json "$venv_abs/etc/jupyter/jupyter_server_config.d/"
ln -sfn "$PWD/gemma_ft_widgets/labextension" "$venv_abs/share/jupyter/labextensions/gemma-ft-widgets"
"$venv/bin/jupyter" server extension list 2>&1 | grep "gemma_ft_widgets.server"
"$venv/bin/jupyter" labextension list 2>&1 | grep "gemma-ft-widgets"
echo "setup: done. Try: $venv/bin/gemma-ft demo"
