"""The package layout: no import cycles, the core never imports the writers at module level,
light modules stay light, no unsafe loader anywhere, and docs/architecture.md's pictures name
exactly the modules that exist and the imports between them."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder of the checkout -> the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"tf_mobilenet_v1": "tf_mobilenet_v1", "converters": "tf_mobilenet_v1.converters"}
CONVERTERS = PACKAGES["converters"]


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
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
            targets = [f"{base}.{a.name}" for a in node.names]
            if not all(t in known for t in targets):  # names from the package itself
                targets.append(base)
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


def _in_converters(module: str) -> bool:
    return module == CONVERTERS or module.startswith(CONVERTERS + ".")


def test_core_never_imports_converters_at_module_level():
    bad = {m: sorted(d for d in deps if _in_converters(d))
           for m, deps in _graph().items() if not _in_converters(m)}
    assert not {m: d for m, d in bad.items() if d}


def test_light_modules_import_no_keras_or_tensorflow():
    """The CLI's start, the config, the numpy processor and the name tables load without Keras."""
    light = ["tf_mobilenet_v1", "tf_mobilenet_v1.architecture", "tf_mobilenet_v1.config",
             "tf_mobilenet_v1.variants", "tf_mobilenet_v1.outputs", "tf_mobilenet_v1.registry",
             "tf_mobilenet_v1.cli", "tf_mobilenet_v1.preprocessing",
             "tf_mobilenet_v1.preprocessing.processor", "tf_mobilenet_v1.loaders",
             "tf_mobilenet_v1.loaders.hf_names", "tf_mobilenet_v1.loaders.tarball",
             "tf_mobilenet_v1.formats", "tf_mobilenet_v1.loaders.source", "tf_mobilenet_v1.litert"]
    code = (f"import sys\nfor m in {light!r}:\n    __import__(m)\n"
            "heavy = sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules)\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


OPTIONAL = {"tf_mobilenet_v1.beam", "tf_mobilenet_v1.spark"}  # need an extra ([beam], [spark])


@pytest.mark.slow  # a fresh interpreter or full exports: seconds
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


ARCHITECTURE = ROOT / "docs" / "architecture.md"  # the data-flow picture and the module graph


def test_data_flow_picture_names_every_module():
    """The picture after ``<!-- layout -->`` names each module file, and no file that is gone."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("<!-- layout -->")[1].split("```")[1]
    named = set(re.findall(r"(\w+\.py)\b", block))
    actual = {p.name for pkg in (*PACKAGES, "benchmarks") for p in (ROOT / pkg).rglob("*.py")
              if p.name != "__init__.py"}
    assert named == actual, f"missing: {sorted(actual - named)}; stale: {sorted(named - actual)}"
    for sub in ("loaders", "preprocessing"):
        assert f"{sub}/" in block


def test_installed_package_holds_converters_and_no_top_level_module(tmp_path):
    """Outside the checkout (as a user's script runs), the installed package has
    tf_mobilenet_v1.converters, and no generic top-level ``converters`` module exists."""
    code = ("import importlib.util, tf_mobilenet_v1.converters.convert as c\n"
            "print(importlib.util.find_spec('converters'), c.convert.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.split()
    assert out == ["None", "tf_mobilenet_v1.converters.convert"]


def _short(module: str) -> str:
    """The docs' spelling of a module: ``converters/tflite``, ``loaders/hf``, ``cli``."""
    if module in PACKAGES.values():
        return {"tf_mobilenet_v1": "tf_mobilenet_v1", CONVERTERS: "converters"}[module]
    name = module.replace(CONVERTERS + ".", "converters/").removeprefix("tf_mobilenet_v1.")
    return name.replace("loaders.", "loaders/").replace("preprocessing.", "preprocessing/")


def import_graph_block() -> str:
    """The module graph as docs/architecture.md must show it: one line per module, naming
    every module of ours it imports, at module level or inside a function."""
    import textwrap

    lines = []
    for module, deps in sorted(_graph(lazy=True).items(), key=lambda kv: _short(kv[0])):
        uses = ", ".join(sorted(_short(d) for d in deps))
        head = f"{_short(module):<24}"
        lines += textwrap.wrap(uses, 98, initial_indent=f"{head} -> ",
                               subsequent_indent=" " * 28) if uses else [_short(module)]
    return "\n".join(lines)


def test_module_graph_is_the_import_graph():
    """Every arrow in the code is in the picture and every arrow in the picture is in the code
    (a lazy import inside a function counts: it runs when that function does)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("<!-- imports -->")[1].split("```")[1].strip("\n")
    want = import_graph_block()
    assert block == want, "docs/architecture.md's module graph differs from the code; it " \
        "should read:\n" + want


def _dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def test_no_unsafe_loader_anywhere_in_the_package():
    """Static guard: every torch.load is weights_only, nothing unpickles, evals or extracts
    archives, and Keras's safe mode is never turned off, in any module we ship."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    banned = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads", "eval", "exec",
              "yaml.load", "dill.load", "dill.loads", "enable_unsafe_deserialization"}
    sources = [os.path.join(d, name) for pkg in ("tf_mobilenet_v1", "converters")
               for d, _, names in os.walk(os.path.join(root, pkg)) for name in names
               if name.endswith(".py")]
    rel = {os.path.relpath(p, root) for p in sources}
    # Subpackages are walked too: the readers of untrusted files live in loaders/.
    assert {os.path.join("tf_mobilenet_v1", "loaders", "hf.py"),
            os.path.join("tf_mobilenet_v1", "preprocessing", "layer.py")} <= rel
    assert len(sources) > 30
    torch_loads = 0
    for path in sources:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{os.path.basename(path)}:{node.lineno} {name}"
            assert name not in banned and name.split(".")[-1] not in (
                "extractall", "extract", "enable_unsafe_deserialization"), where
            if name == "torch.load":
                torch_loads += 1
                assert isinstance(kw.get("weights_only"), ast.Constant) \
                    and kw["weights_only"].value is True, where
            if name in ("np.load", "numpy.load"):
                assert not (isinstance(kw.get("allow_pickle"), ast.Constant)
                            and kw["allow_pickle"].value), where
            if name.endswith("load_model"):
                assert not (isinstance(kw.get("safe_mode"), ast.Constant)
                            and kw["safe_mode"].value is False), where
    assert torch_loads >= 1  # the .bin reader (loaders/hf.py): the guard sees it
