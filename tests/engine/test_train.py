"""Training, checkpoints and the fit/validate/test/predict CLI on a tiny dataset."""

import json

import numpy as np
import pytest
import torch
from helpers.engine_toy import TOY_CONFIG, fit_between_validations, write_toy_dataset

from changekit.cli import main as changekit_main


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("toy") / "data")
    cfg = root.parent / "toy.yaml"
    cfg.write_text(TOY_CONFIG.format(root=root))
    return root, cfg


def test_short_training_loss_falls_and_f1_rises(toy):
    import lightning.pytorch as pl

    from changekit.engine.change_task import ChangeDetectionTask
    from changekit.engine.datamodule import ChangeDataModule

    root, _ = toy
    pl.seed_everything(0, verbose=False)
    dm = ChangeDataModule(dataset="folder", root=str(root), batch_size=4, eval_batch_size=4, crop_size=32,
                          augment={"rotate": False, "photometric": False}, mean=[80.0] * 3, std=[50.0] * 3)
    task = ChangeDetectionTask("fc_siam_diff", {"base_channel": 8}, loss={"ce": 1.0, "dice": 0.5},
                               optimizer={"lr": 0.01}, schedule={"warmup_iters": 2, "warmup_start_factor": 0.1, "power": 0.5})
    task.print_tables = False
    losses, before, after = fit_between_validations(task, dm, max_steps=60)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert after["f1"] > 0.5 and after["f1"] > (before["f1"] if before["f1"] == before["f1"] else 0) + 0.2, (before, after)
    assert after["pixels"] == 4 * 32 * 32  # whole validation set accumulated, not one batch


def _run(args, cwd, monkeypatch, capsys=None):
    monkeypatch.chdir(cwd)
    code = changekit_main(args)
    assert code == 0


def test_cli_fit_overrides_resume_test_predict(toy, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from changekit import load_model
    from changekit.engine.writers import OVERLAY_COLOURS

    root, cfg = toy
    common = ["--output_root", str(tmp_path / "outputs")]
    # fit with command-line overrides
    _run(["fit", "-c", str(cfg), *common, "--model.optimizer.lr", "0.005", "--trainer.max_steps", "4"], tmp_path, monkeypatch)
    ckdir = tmp_path / "outputs" / "toy" / "checkpoints"
    last = torch.load(ckdir / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert last["hyper_parameters"]["optimizer"]["lr"] == 0.005
    assert last["changekit"]["mean"] == [80.0, 80.0, 80.0]
    assert any(p.name.startswith("best_step") for p in ckdir.iterdir())
    assert (tmp_path / "outputs" / "toy" / "csv").is_dir() and (tmp_path / "outputs" / "toy" / "tensorboard").is_dir()
    assert last["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.005 * (1 - 2 / 17))  # poly, T = 20 - 2 - 1

    # resume from last.ckpt and continue to 6 iterations: schedule and step counter carry on
    _run(["fit", "-c", str(cfg), *common, "--model.optimizer.lr", "0.005", "--trainer.max_steps", "6", "--ckpt_path", "last"],
         tmp_path, monkeypatch)
    resumed = torch.load(ckdir / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6
    assert resumed["lr_schedulers"][0]["last_epoch"] == 6
    assert resumed["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.005 * (1 - 4 / 17))

    model = load_model(ckdir / "last.ckpt")
    info = model.changekit_info
    assert not model.training and info["arch"] == "fc_siam_diff" and info["in_channels"] == 3
    assert info["std"] == [50.0, 50.0, 50.0] and info["eval"]["mode"] == "whole"

    # test from the checkpoint alone (no config), in slide mode: the mode is printed with the table
    capsys.readouterr()
    _run(["test", "--ckpt_path", str(ckdir / "last.ckpt"), *common, "--trainer.enable_progress_bar", "false",
          "--model.eval", '{"mode": "slide", "window": [16, 16], "stride": [8, 8]}'], tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "evaluation: slide (window 16x16, stride 8x8" in out
    res = json.loads((tmp_path / "outputs" / "toy" / "metrics_test.json").read_text())
    assert res["eval_mode"].startswith("slide") and res["pixels"] == 5 * 32 * 32

    # predict: binary maps and overlays whose colours follow map and label
    pred_dir = tmp_path / "pred"
    _run(["predict", "--ckpt_path", str(ckdir / "last.ckpt"), *common, "--output_dir", str(pred_dir),
          "--trainer.enable_progress_bar", "false"], tmp_path, monkeypatch)
    maps = sorted((pred_dir / "maps").glob("*.png"))
    assert [p.name for p in maps] == [f"test_{i:03d}.png" for i in range(5)]
    for p in maps:
        m = np.array(Image.open(p))
        ov = np.array(Image.open(pred_dir / "overlays" / p.name))
        lab = np.array(Image.open(root / "test" / "label" / p.name))
        assert m.shape == lab.shape and set(np.unique(m)) <= {0, 255}
        want = np.zeros((*m.shape, 3), np.uint8)
        for key, mask in (("tp", (m > 0) & (lab > 0)), ("tn", (m == 0) & (lab == 0)),
                          ("fp", (m > 0) & (lab == 0)), ("fn", (m == 0) & (lab > 0))):
            want[mask] = OVERLAY_COLOURS[key]
        assert (ov == want).all()


def test_cli_reports_bad_config(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  arch: no_such_model\ndata:\n  root: nowhere\n")
    monkeypatch.chdir(tmp_path)
    assert changekit_main(["fit", "-c", str(bad)]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_grad_clip_param_groups_and_frozen_parameters(toy):
    import lightning.pytorch as pl

    from changekit.engine.change_task import ChangeDetectionTask
    from changekit.engine.datamodule import ChangeDataModule

    root, _ = toy
    dm = ChangeDataModule(dataset="folder", root=str(root), batch_size=4, crop_size=32,
                          augment={"rotate": False, "photometric": False}, mean=[80.0] * 3, std=[50.0] * 3)
    task = ChangeDetectionTask("fc_siam_diff", {"base_channel": 4}, grad_clip=1e-3, no_decay_norm=True,
                               optimizer={"type": "sgd", "lr": 0.1, "weight_decay": 0.01, "momentum": 0.0},
                               param_groups=[{"pattern": "decode_head", "lr_mult": 10.0},
                                             {"pattern": "backbone.bn*", "decay_mult": 0.0}])
    frozen = next(n for n, _ in task.model.named_parameters())
    task.model.get_parameter(frozen).requires_grad_(False)
    norms = []

    class GradNorm(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            g = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack(g))))

    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[GradNorm()],
                         limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    assert norms and norms[0] <= 1e-3 * 1.001
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(task.model.get_parameter(frozen)) not in params
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone.bn*"]["weight_decay"] == 0.0 and by_name["default"]["weight_decay"] == 0.01
    assert by_name["decode_head"]["initial_lr"] == pytest.approx(1.0)


def test_cli_bf16_mixed_fit_validate_test_on_cpu(toy, tmp_path, monkeypatch, capsys):
    """trainer.precision bf16-mixed end to end on CPU: fit, validate and test run and report finite metrics."""
    root, cfg = toy
    common = ["--output_root", str(tmp_path / "outputs"), "--trainer.precision", "bf16-mixed"]
    _run(["fit", "-c", str(cfg), *common, "--trainer.max_steps", "3"], tmp_path, monkeypatch)
    last = tmp_path / "outputs" / "toy" / "checkpoints" / "last.ckpt"
    ck = torch.load(last, weights_only=True)
    assert ck["global_step"] == 3 and all(v.dtype != torch.bfloat16 for v in ck["state_dict"].values())
    for command in ("validate", "test"):
        _run([command, "--ckpt_path", str(last), *common], tmp_path, monkeypatch)
        name = "metrics_validate.json" if command == "validate" else "metrics_test.json"
        res = json.loads((tmp_path / "outputs" / "toy" / name).read_text())
        assert res["pixels"] > 0 and 0.0 <= res["oa"] <= 1.0
