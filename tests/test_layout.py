"""The package layout: no import cycles, the core never imports the writers, light modules stay
light, and the README's data-flow picture names exactly the modules that exist."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tf_mobilenet_v1", "converters")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, known: set[str], lazy: bool = False) -> set[str]:
    """Modules of ours that ``name`` imports when it is imported, and with ``lazy`` also those
    its functions import when called."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph(lazy: bool = False) -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods), lazy) for name, path in mods.items()}


# The one import that goes against the flow, lazily: the models' ``from_pretrained`` entry point
# calls the loaders (as in Hugging Face and keras-hub), which build models.
ENTRY_POINTS = {("tf_mobilenet_v1.models", "tf_mobilenet_v1.loaders.dispatch")}


def test_no_import_cycles():
    _assert_acyclic(_graph())


def test_no_cycles_even_through_lazy_imports_but_the_entry_point():
    graph = _graph(lazy=True)
    assert ENTRY_POINTS <= {(a, b) for a, deps in graph.items() for b in deps}
    for a, b in ENTRY_POINTS:
        graph[a].discard(b)
    _assert_acyclic(graph)


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_core_never_imports_converters_at_module_level():
    bad = {m: sorted(d for d in deps if d.split(".")[0] == "converters")
           for m, deps in _graph().items() if m.split(".")[0] == "tf_mobilenet_v1"}
    assert not {m: d for m, d in bad.items() if d}


def test_light_modules_import_no_keras_or_tensorflow():
    """The CLI's start, the config, the numpy processor and the name tables load without Keras."""
    light = ["tf_mobilenet_v1", "tf_mobilenet_v1.architecture", "tf_mobilenet_v1.config",
             "tf_mobilenet_v1.variants", "tf_mobilenet_v1.outputs", "tf_mobilenet_v1.registry",
             "tf_mobilenet_v1.cli", "tf_mobilenet_v1.preprocessing",
             "tf_mobilenet_v1.preprocessing.processor", "tf_mobilenet_v1.loaders",
             "tf_mobilenet_v1.loaders.hf_names", "tf_mobilenet_v1.loaders.tarball"]
    code = (f"import sys\nfor m in {light!r}:\n    __import__(m)\n"
            "heavy = sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules)\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


OPTIONAL = {"tf_mobilenet_v1.beam"}  # modules that need an extra ([beam]) to import


def test_every_module_imports_in_dependency_order():
    """One fresh interpreter imports every module, dependencies first (a topological order)."""
    graph = _graph()
    order, done = [], set()

    def visit(node):
        if node in done:
            return
        done.add(node)
        for dep in sorted(graph[node]):
            visit(dep)
        order.append(node)

    for node in sorted(graph):
        visit(node)
    order = [m for m in order if not m.endswith("__main__")]  # importing it runs the CLI
    # A module built on an optional extra says what to install when that extra is missing.
    code = (f"import importlib\nfor m in {order!r}:\n    try:\n"
            "        importlib.import_module(m)\n"
            "    except ImportError as e:\n"
            f"        if m not in {sorted(OPTIONAL)!r} or 'pip install' not in str(e):\n"
            "            raise\nprint('ok')")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_readme_data_flow_names_every_module():
    """The picture after ``<!-- layout -->`` names each module file, and no file that is gone."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- layout -->")[1].split("```")[1]
    named = set(re.findall(r"(\w+\.py)\b", block))
    actual = {p.name for pkg in (*PACKAGES, "benchmarks") for p in (ROOT / pkg).rglob("*.py")
              if p.name != "__init__.py"}
    assert named == actual, f"missing: {sorted(actual - named)}; stale: {sorted(named - actual)}"
    for sub in ("loaders", "preprocessing"):
        assert f"{sub}/" in block
