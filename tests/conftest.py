import os

import pytest
import torch

# Unit tests are small: one thread avoids oversubscription and keeps float sums reproducible.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
