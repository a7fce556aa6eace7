import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared test bodies below, imported by test_<kind>.py
# The kind files import their test bodies from these helpers: rewrite their asserts as pytest does a test module's.
pytest.register_assert_rewrite("_torch_contract", "_torch_delta_contract", "_jax_parity", "_jax_delta_parity",
                               "_fla_oracle", "_transformers_oracle")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: torch's intra-op threads only add contention (10-40x slower on a loaded 2-core box)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
