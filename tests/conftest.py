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


@pytest.fixture(scope="session")
def tiny_scene_ckpt(tmp_path_factory):
    """A changekit checkpoint of a tiny FC-Siam-diff trained on uint8 RGB (its units recorded): scene tests' model."""
    from changekit import build_model

    path = tmp_path_factory.mktemp("tiny-ckpt") / "m.ckpt"
    torch.manual_seed(0)
    model = build_model("fc_siam_diff", base_channel=4)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "pytorch-lightning_version": "2",
                "changekit": {"arch": "fc_siam_diff", "arch_args": {"base_channel": 4}, "num_classes": 2,
                              "mean": [0, 0, 0], "std": [255, 255, 255], "units": {"dtype": "uint8", "range": [0, 255]}}},
               path)
    return path
