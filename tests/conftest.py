"""Test-session settings shared by every test file."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors, which gain nothing from threads; on a shared 2-core machine two
    threads per process oversubscribe the cores (10x slowdowns were measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
