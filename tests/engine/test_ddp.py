"""2-process DDP (gloo, CPU) evaluation gives exactly the single-process confusion counts."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers.engine_toy import write_toy_dataset


def test_eval_sampler_splits_without_duplicates():
    from changekit.engine.datamodule import eval_sampler

    ds = list(range(5))
    parts = [list(eval_sampler(ds, SimpleNamespace(world_size=2, global_rank=r))) for r in range(2)]
    assert parts == [[0, 2, 4], [1, 3]]  # odd count: no padding, nothing seen twice
    assert eval_sampler(ds, SimpleNamespace(world_size=1, global_rank=0)) is None


@pytest.mark.slow  # two gloo processes: ~15 s
@pytest.mark.timeout(300)
def test_ddp_two_processes_match_single_process(tmp_path):
    import lightning.pytorch as pl

    from changekit.engine.change_task import ChangeDetectionTask
    from changekit.engine.datamodule import ChangeDataModule

    root = write_toy_dataset(tmp_path / "data", n_train=8, n_val=2, n_test=5, size=32, seed=1)
    pl.seed_everything(0, verbose=False)
    dm = ChangeDataModule(dataset="folder", root=str(root), batch_size=4, eval_batch_size=2, crop_size=32,
                          augment={"rotate": False, "photometric": False}, mean=[80.0] * 3, std=[50.0] * 3)
    # an untrained model whose change-class bias is shifted so that about half the pixels are predicted
    # as change: every confusion cell is exercised
    task = ChangeDetectionTask("fc_siam_diff", {"base_channel": 4})
    task.print_tables = False
    dm.setup("test")
    task.eval()
    with torch.no_grad():
        diffs = torch.cat([(lg[:, 1] - lg[:, 0]).flatten() for lg in
                           (task.model(b["t1"], b["t2"]) for b in dm.test_dataloader())])
        last_conv = [m for m in task.model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
        last_conv.bias[1] -= diffs.median()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.test(task, datamodule=dm, verbose=False)
    single = task.results["test"]["confusion"]
    assert sum(map(sum, single)) == 5 * 32 * 32
    assert min(min(row) for row in single) > 0, single
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "changekit.cli", "test", "--ckpt_path", str(ckpt),
           "--output_root", str(tmp_path / "outputs"), "--trainer.accelerator", "cpu",
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.num_nodes", "1",
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr + proc.stdout
    res = json.loads((tmp_path / "outputs" / "model" / "metrics_test.json").read_text())
    assert res["confusion"] == single
    assert res["f1"] == task.results["test"]["f1"] and res["kappa"] == task.results["test"]["kappa"]
    torch.testing.assert_close(torch.tensor(res["confusion"]), torch.tensor(single), rtol=0, atol=0)
