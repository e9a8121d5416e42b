"""bench/gpu_check.py without a GPU: its dry run reports every part with a status and a reason, its list of
CUDA-only tests is every test the CPU suite skips without CUDA, and a part past its cap is killed and reported
as skipped, not lost."""
import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)
gp = gc.gp  # its parts (bench/gpu_parts.py)


def test_dry_run_reports_every_part_in_the_table_and_the_json(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    gc.main(["--dry-run", f"--out={out}"])
    report = json.loads(out.read_text())
    assert report["mode"] == "dry" and report["torch"] == torch.__version__ and "device" in report
    assert list(report["parts"]) == list(gc.PARTS)
    for name, part in report["parts"].items():
        assert part["status"] in ("pass", "skip"), (name, part["reason"])  # the CPU: nothing fails
        assert part["reason"] and all(c["ok"] for c in part["checks"]), name
    engine = report["parts"]["engine"]
    assert engine["status"] == "pass" and any("seeded: static" in c["check"] for c in engine["checks"])
    assert report["parts"]["cuda_tests"]["status"] == "skip"  # looked up only, without CUDA
    figures = {f["figure"] for p in report["parts"].values() for f in p["figures"]}
    assert {"final_greedy_acc", "logp_diff_mean", "copy bandwidth"} <= figures
    table = capsys.readouterr().out
    assert all(f"| {name} | **" in table for name in gc.PARTS)


def cuda_only_tests():
    """(file, test function) of every test under tests/ marked skipif(not torch.cuda.is_available()),
    directly or through a module-level alias used in its parameters' marks."""
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        aliases = {t.id for node in tree.body if isinstance(node, ast.Assign)
                   and "not torch.cuda.is_available()" in ast.get_source_segment(src, node.value) for t in node.targets}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = " ".join(ast.get_source_segment(src, d) for d in node.decorator_list)
                if "not torch.cuda.is_available()" in marks or any(f"marks={a}" in marks for a in aliases):
                    found.add((f"tests/{path.name}", node.name))
    return found


def test_the_list_of_cuda_tests_is_every_test_the_cpu_suite_skips_without_cuda():
    listed = {(node.split("::")[0], node.split("::")[1].split("[")[0]) for node, _ in gc.CUDA_TESTS if "::" in node}
    assert listed == cuda_only_tests()
    assert all(gp.names_a_test(node) for node, _ in gc.CUDA_TESTS)
    assert not gp.names_a_test("tests/test_engine.py::test_no_such_test")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the part would run the CUDA tests")
def test_a_part_runs_in_its_own_process_and_says_why_it_skips(tmp_path):
    part = gc.run_part("cuda_tests", "quick", 120, tmp_path)
    assert part["status"] == "skip" and part["reason"] == "no CUDA device here" and part["cap_s"] == 120


def test_a_part_past_its_cap_is_killed_and_reported_skipped(tmp_path):
    part = gc.run_part("engine", "quick", 0.01, tmp_path)  # the child cannot even import torch in time
    assert part["status"] == "skip" and part["reason"].startswith("over its cap of 0.01 s")


def test_facts_written_before_a_kill_are_kept_and_a_failed_check_fails_the_part(tmp_path):
    rec = gc.Record(tmp_path / "r.jsonl")
    rec.figure("tokens/s", 12.5)
    rec.figure("peak", float("nan"))  # no peak memory on the CPU: null in the json
    rec.check("same tokens", True)
    part = gc.read_record(tmp_path / "r.jsonl")
    assert [f["value"] for f in part["figures"]] == [12.5, None]
    assert gc.status(part, "over its cap of 5 s") == ("skip", "over its cap of 5 s")
    assert gc.status(part, "crashed (rc 1): boom") == ("fail", "crashed (rc 1): boom")
    assert gc.status(part, "")[0] == "pass"
    rec.check("peak within 30%", False)
    assert gc.status(gc.read_record(tmp_path / "r.jsonl"), "") == ("fail", "peak within 30%")


def test_junit_report_and_markdown_table_are_read_back():
    xml = ('<testsuites><testsuite><testcase classname="tests.test_a" name="test_ok"/>'
           '<testcase classname="tests.test_a" name="test_bad"><failure message="assert 1 == 2"/></testcase>'
           '<testcase classname="tests.test_b" name="test_gpu[cuda]"><skipped message="no GPU"/></testcase>'
           '</testsuite></testsuites>')
    assert gp.junit_outcomes(xml) == {"tests.test_a::test_ok": ("passed", ""),
                                      "tests.test_a::test_bad": ("failed", "assert 1 == 2"),
                                      "tests.test_b::test_gpu[cuda]": ("skipped", "no GPU")}
    text = "device: x\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| out | B |\n|---|---|\n| logprobs | 256 |\n| sample | 1 |\n"
    assert gp.markdown_rows(text) == [{"out": "logprobs", "B": "256"}, {"out": "sample", "B": "1"}]
