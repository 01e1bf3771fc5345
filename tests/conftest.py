import os

import pytest
import torch

# Unit tests are small: at most two threads, so that they do not oversubscribe a shared machine,
# and the same thread count (which can change float sums) wherever two cores are available.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
