"""Shared test set-up: tiny models run fastest on one thread, and a shared 2-core CPU is not oversubscribed."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
