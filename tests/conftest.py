import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _screenshot(out, tmp_path):
    """The page of ``changekit view OUT`` as headless Chromium draws it (RGB, int), or None without Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    import uvicorn
    from PIL import Image

    from changekit.viewer import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(out), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        shot = tmp_path / "view.png"
        for _ in range(2):  # a second look when the first shows no tiles (a cold browser start can miss them)
            subprocess.run([browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                            "--enable-unsafe-swiftshader", "--hide-scrollbars", "--window-size=1000,700",
                            "--virtual-time-budget=15000", f"--screenshot={shot}", f"http://127.0.0.1:{port}/"],
                           capture_output=True, timeout=120, check=True)
            img = np.array(Image.open(shot).convert("RGB")).astype(int)
            if (np.abs(img[:, : 1000 - 280] - 32).sum(-1) > 30).mean() > 0.2:
                break
        return img
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def screenshot():
    """``screenshot(out, tmp_path)``: the page of ``changekit view OUT`` in headless Chromium, or None without it."""
    return _screenshot
