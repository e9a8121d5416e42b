"""Shared test set-up: tiny models run fastest on one thread, and a shared 2-core CPU is not oversubscribed.
NANORLVR_TEST_THREADS=2 runs the suite with two torch threads instead (results must not depend on it)."""
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def test_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("NANORLVR_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)
