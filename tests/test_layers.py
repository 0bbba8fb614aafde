"""The package's layers, as docs/ARCHITECTURE.md states them: no import cycle, and imports only
point down. Read from the source (every import, including those inside functions), so that a
lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
import os

import gemma_ft_widgets

PACKAGE = os.path.dirname(gemma_ft_widgets.__file__)
ROOT = "gemma_ft_widgets"

# Bottom to top. A module may import its own layer and any layer below it.
LAYERS = [
    {"contract", "webhook_url", "colab", "_version"},          # the run folder's format, leaf helpers
    {"models", "datasets", "tokenizers", "accelerator", "calibrate", "stall", "notices"},  # facts about models, data, machines
    {"config", "estimate", "fit", "startup", "length_check", "doctor", "sweep"},  # what a run asks for
    {"train", "export"},                                      # the trainer's process (jax)
    {"runs"},                                                 # the lifecycle: folders, locks, processes
    {"server", "ui", "remedies"},                             # the two front ends in Jupyter; the commands they name
    {"cli", "ext", "__main__", ""},                           # entry points, and the package itself
]


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: str, modules: dict[str, str]) -> set[str]:
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in modules else base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in modules and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module} is in no layer: add {top!r} to LAYERS (and docs/ARCHITECTURE.md)")


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_only_point_down_the_layers():
    upward = [f"{m} ({_layer(m)}) imports {d} ({_layer(d)})"
              for m, deps in sorted(_graph().items()) for d in sorted(deps)
              if _layer(d) > _layer(m) and not (m.count(".") == 1 and m.split(".")[1] == "server" and d == ROOT)]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_every_layer_is_named_in_the_architecture_doc():
    doc = open(os.path.join(os.path.dirname(PACKAGE), "docs", "ARCHITECTURE.md"), encoding="utf-8").read()
    missing = [name for names in LAYERS for name in names if name not in ("", "__main__", "_version")
               and f"`{name}" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not name these modules: {missing}"
