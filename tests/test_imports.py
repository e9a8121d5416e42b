"""The package's layering (DESIGN: no import cycles; the package never imports a script), read from the source
with ast: nothing is imported, so a cycle that happens to import fine today, or one through an import inside
a function, is still caught."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "nanorlvr"
SCRIPTS = {"train", "sample", "analyze"}


def imports_of(path):
    """Every module name `path` imports, anywhere in the file. `from nanorlvr.x import y` gives both
    'nanorlvr.x' and 'nanorlvr.x.y' (y may be a module or a name in x; package_graph keeps the modules)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module.startswith("nanorlvr"):
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def module_name(path):
    """nanorlvr/papers/stats.py -> 'papers.stats'; a package's __init__.py -> the package ('papers')."""
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_files():
    return sorted(PKG.rglob("*.py"))


def package_graph():
    """module -> the package modules it imports (subpackages included, as dotted names)."""
    mods = {module_name(p) for p in package_files()}
    return {module_name(p): {m[len("nanorlvr."):] for m in imports_of(p) if m.startswith("nanorlvr.")
                             and m[len("nanorlvr."):] in mods} - {module_name(p)} for p in package_files()}


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
    src.write_text("import torch\n\ndef f():\n    from nanorlvr import grpo\n    from nanorlvr.papers.stats import dlogp\n")
    assert imports_of(src) == {"torch", "nanorlvr", "nanorlvr.grpo", "nanorlvr.papers.stats",
                               "nanorlvr.papers.stats.dlogp"}


def test_no_import_cycle_in_the_package():
    graph = package_graph()
    assert {"engine", "model", "verifier", "verify.workers", "grpo", "grpo_loss", "infra.checkpoint",
            "papers.stats", "papers"} <= set(graph)
    # the edges were read, into subpackages too
    assert "model" in graph["engine"] and "grpo_loss" in graph["grpo"] and "verify.workers" in graph["verifier"]
    assert find_cycle(graph) is None


def test_the_package_imports_no_script():
    for p in package_files():
        assert not {m.split(".")[0] for m in imports_of(p)} & SCRIPTS, p.name


def test_help_and_a_usage_error_import_no_matplotlib():
    # plotting is imported only where a plot is drawn: --help and a one-line error do not pay for it (~2 s).
    # One child process runs each command in turn (torch is imported once) and says if matplotlib came in.
    import subprocess
    import sys
    runs = [("train.py", ["--help"]), ("train.py", ["--steps=0"]), ("analyze.py", ["dlogp", "--help"]),
            ("sample.py", ["--help"])]
    probe = ("import runpy, sys\n"
             f"for script, args in {runs!r}:\n"
             "    sys.argv = [script] + args\n"
             "    try:\n        runpy.run_path(script, run_name='__main__')\n    except SystemExit:\n        pass\n"
             "    print(script, args, 'matplotlib' in sys.modules, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=PKG.parent, capture_output=True, text=True)
    lines = [line for line in r.stderr.splitlines() if line.endswith((" True", " False"))]
    assert len(lines) == len(runs) and all(line.endswith("False") for line in lines), r.stderr
