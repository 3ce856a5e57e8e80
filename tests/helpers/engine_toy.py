"""A tiny, easy change dataset for engine tests: noise images where bright squares appear in date 2."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np


def write_toy_dataset(root: Path, n_train: int = 8, n_val: int = 4, n_test: int = 5, size: int = 32, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for d in ("A", "B", "label"):
            (root / split / d).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            t1 = rng.integers(40, 120, (size, size, 3), dtype=np.uint8)
            t2 = np.clip(t1.astype(int) + rng.integers(-10, 11, t1.shape), 0, 255).astype(np.uint8)
            lab = np.zeros((size, size), np.uint8)
            for _ in range(2):
                s = int(rng.integers(size // 6, size // 3))
                y, x = (int(v) for v in rng.integers(0, size - s, 2))
                t2[y : y + s, x : x + s] = rng.integers(200, 250, 3)
                lab[y : y + s, x : x + s] = 255
            name = f"{split}_{i:03d}.png"
            Image.fromarray(t1).save(root / split / "A" / name)
            Image.fromarray(t2).save(root / split / "B" / name)
            Image.fromarray(lab).save(root / split / "label" / name)
    return root


TOY_CONFIG = """\
seed_everything: 0
model:
  arch: fc_siam_diff
  arch_args: {{base_channel: 4}}
  loss: {{ce: 1.0, dice: 0.5}}
  optimizer: {{type: adamw, lr: 0.01, weight_decay: 0.0001}}
  schedule: {{warmup_iters: 2, warmup_start_factor: 0.1, max_iters: 20}}
data:
  dataset: folder
  root: {root}
  batch_size: 4
  eval_batch_size: 2
  crop_size: 32
  augment: {{rotate: false, photometric: false}}
  mean: [80.0, 80.0, 80.0]
  std: [50.0, 50.0, 50.0]
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 4
  val_check_interval: 2
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
"""



class InterruptAt(pl.Callback):
    """Presses Ctrl-C (raises KeyboardInterrupt) once ``step`` training steps are done."""

    def __init__(self, step: int = 2) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


def fit_between_validations(task: pl.LightningModule, dm: pl.LightningDataModule, max_steps: int
                            ) -> tuple[list[float], dict, dict]:
    """Validate, fit ``max_steps`` steps on CPU (no logger, checkpoints or progress bar), validate again:
    ``(training losses per step, validation results before, after)``."""
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                         num_sanity_val_steps=0, check_val_every_n_epoch=None, val_check_interval=10_000)
    trainer.validate(task, datamodule=dm, verbose=False)
    before = task.results["val"]
    trainer.fit(task, datamodule=dm)
    trainer.validate(task, datamodule=dm, verbose=False)
    return losses, before, task.results["val"]
