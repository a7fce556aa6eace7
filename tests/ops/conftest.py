import pytest


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: intra-op threads only add contention (10-40x slower on a loaded 2-core box)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
