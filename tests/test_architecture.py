"""The import graph of src/iccld, as drawn in docs/architecture.md: no cycle between modules or
packages (imports inside functions count), each package imports only the layers below it, and the
networks (models/) touch no config and no file."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# who may import whom (docs/architecture.md); errors and utils are importable from everywhere
ALLOWED: dict[str, set[str]] = {
    "sections": set(),
    "data": {"sections"},
    "diffusion": set(),
    "models": {"diffusion"},
    "uda": {"data"},
    "io": {"sections", "diffusion", "models"},
    "presets": {"sections"},
    "methods": {"data", "diffusion", "io", "models", "sections", "uda"},
    "config": {"data", "io", "sections", "methods"},
    "evaluation": {"config", "data", "diffusion", "io", "methods", "models", "sections"},
    "training": {"config", "data", "evaluation", "io", "methods", "models"},
    "hub": {"config", "data", "evaluation", "io"},
    "demo": {"config", "data", "evaluation", "io", "presets", "training"},
    "app": {"data", "evaluation"},
    "cli": {"app", "data", "demo", "evaluation", "hub", "training"},
}
BASE = {"errors", "utils", "outputs", "__init__"}  # the root (iccld/__init__.py) holds only the version

# what a network may not import: the config, file formats and file-system access
MODELS_FORBIDDEN = ("iccld.config", "iccld.sections", "iccld.io", "iccld.utils", "iccld.data", "iccld.presets", "safetensors",
                    "huggingface_hub", "json", "yaml", "pathlib", "os", "shutil", "pickle", "io")
MODELS_FORBIDDEN_CALLS = {"open", "load", "save", "from_pretrained", "save_pretrained", "load_file", "save_file"}


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports, at any depth of the file (function bodies included);
    ``from pkg import x`` counts as importing ``pkg.x`` when that is a module, else ``pkg``."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found - {name}


@functools.lru_cache(maxsize=None)
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, f, set(mods)) for m, f in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), i.e. the import cycles."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(g):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, targets in g.items():
        out.setdefault(layer(a), set())
        out[layer(a)] |= {layer(b) for b in targets if b.startswith("iccld") and layer(b) != layer(a)}
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back():
    assert cycles(graph()) == []


def test_no_package_imports_itself_back():
    assert cycles(package_graph(graph())) == []


def test_each_package_imports_only_the_layers_below_it():
    pg = package_graph(graph())
    assert set(pg) - BASE == set(ALLOWED), "a new top-level package or module: add it to ALLOWED and the docs"
    wrong = {p: sorted(deps - ALLOWED[p] - BASE) for p, deps in pg.items() if p in ALLOWED}
    assert {p: d for p, d in wrong.items() if d} == {}
    for base in BASE - {"__init__"}:
        assert pg[base] <= BASE, f"{base} is imported by everything and may import only {BASE}"


def test_networks_import_no_config_and_touch_no_file():
    g = graph()
    for module, targets in g.items():
        if not module.startswith("iccld.models"):
            continue
        bad = sorted(t for t in targets if t.startswith(MODELS_FORBIDDEN) and
                     any(t == f or t.startswith(f + ".") for f in MODELS_FORBIDDEN))
        assert bad == [], f"{module} imports {bad}"
        tree = ast.parse(modules()[module].read_text())
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert calls & MODELS_FORBIDDEN_CALLS == set(), f"{module} calls {calls & MODELS_FORBIDDEN_CALLS}"


def test_model_errors_name_no_command_line_flag():
    for module, path in modules().items():
        if module.startswith(("iccld.models", "iccld.diffusion")):
            assert '"--' not in path.read_text() and "f\"--" not in path.read_text(), module
