"""The package's layering (DESIGN: no import cycles; the package never imports a script), read from the source
with ast: nothing is imported, so a cycle that happens to import fine today, or one through an import inside
a function, is still caught."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "nanorlvr"
SCRIPTS = {"train", "sample", "analyze"}


def imports_of(path):
    """The top-level names of every module `path` imports, anywhere in the file (nanorlvr.x -> 'nanorlvr.x')."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {f"{node.module}.{a.name}" if node.module == "nanorlvr" else node.module for a in node.names}
    return out


def package_graph():
    mods = {p.stem for p in PKG.glob("*.py")}
    return {p.stem: {m.split(".")[1] for m in imports_of(p) if m.startswith("nanorlvr.")
                     and m.split(".")[1] in mods} - {p.stem} for p in PKG.glob("*.py")}


def find_cycle(graph):
    """A list of modules forming a cycle (first == last), or None (depth-first search)."""
    state = {}

    def visit(n, path):
        state[n] = "open"
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                return path[path.index(d):] + [d]
            if d not in state and (c := visit(d, path + [d])):
                return c
        state[n] = "done"
    return next((c for n in sorted(graph) if n not in state and (c := visit(n, [n]))), None)


def test_the_cycle_finder_finds_a_planted_cycle_and_none_in_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_inside_a_function_are_read(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import torch\n\ndef f():\n    from nanorlvr import grpo\n    from nanorlvr.stats import dlogp\n")
    assert imports_of(src) == {"torch", "nanorlvr.grpo", "nanorlvr.stats"}


def test_no_import_cycle_in_the_package():
    graph = package_graph()
    assert {"engine", "model", "verifier", "workers", "grpo", "grpo_loss", "checkpoint"} <= set(graph)
    assert "model" in graph["engine"] and "grpo_loss" in graph["grpo"]  # the edges were read
    assert find_cycle(graph) is None


def test_the_package_imports_no_script():
    for p in PKG.glob("*.py"):
        assert not {m.split(".")[0] for m in imports_of(p)} & SCRIPTS, p.name
