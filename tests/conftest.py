import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import golden`

# One intra-op thread for the whole suite: the test models are small (many short ops), where one thread is
# as fast as two on an idle 2-core machine and far faster on a busy one (OpenMP threads spin against each
# other: a tiny training step measured 10-40x slower with two threads under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
