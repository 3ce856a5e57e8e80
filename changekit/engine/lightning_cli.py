"""The Lightning entry of ``changekit fit | validate | test | predict``: LightningCLI runs driven by YAML configs.

:func:`run` takes the command and its argv (the arguments after the sub-command) and returns an exit code::

    changekit fit -c configs/fcsn/fc_siam_diff_256x256_40k_levircd.yaml --trainer.max_steps 100 --model.optimizer.lr 1e-3
    changekit fit -c CONFIG --ckpt_path last                     # resume from outputs/<config>/checkpoints/last.ckpt
    changekit test -c CONFIG --ckpt_path outputs/<config>/checkpoints/best.ckpt [--model.eval.mode slide ...]
    changekit predict -c CONFIG --ckpt_path CKPT --data.predict_root some/folder --output_dir maps/

Defaults: rich progress bar, TensorBoard + CSV logs and checkpoints under ``outputs/<config name>/``
(``--output_root`` changes ``outputs``), best-by-``val/f1`` and ``last.ckpt`` checkpoints, learning-rate
monitor, ``seed_everything: 0``. With ``--ckpt_path FILE`` the model settings recorded in the checkpoint are
the defaults, so ``changekit test --ckpt_path FILE --data.root ...`` works without the training config;
the config file and the command line still override them (e.g. the evaluation mode).

The task class comes from the config's ``task`` key (``change``, the default, or ``semantic-change``), else
from the checkpoint given with ``--ckpt_path``. Config files may start from ``_base_`` files
(:mod:`changekit.config`); they are merged before LightningCLI reads them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from changekit.atomic import write_json
from changekit.config import load_config
from changekit.engine.datamodule import ChangeDataModule
from changekit.engine.scd_task import SemanticChangeTask
from changekit.engine.task import ChangeDetectionTask
from changekit.errors import ConfigError

__all__ = ["run", "ChangeCLI", "TASKS", "COMMANDS"]

#: ``task`` key of a config -> LightningModule class
TASKS: dict[str, type] = {"change": ChangeDetectionTask, "semantic-change": SemanticChangeTask}
COMMANDS = ("fit", "validate", "test", "predict")


def _flag_value(argv: list[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _ckpt_defaults(ckpt_path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model/data settings recorded in a checkpoint, as parser defaults (``model.*``, ``data.*``), and the
    checkpoint's ``changekit`` record."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return {}, {}
    from changekit.checkpoints import read_checkpoint

    ckpt = read_checkpoint(ckpt_path)
    out: dict[str, Any] = {}
    hp = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    for k, v in hp.items():
        if not k.startswith("_") and k != "weights":
            out[f"model.{k}"] = v
    dhp = dict(ckpt.get("datamodule_hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    for k, v in dhp.items():
        if not k.startswith("_") and not k.startswith("resolved_"):
            out[f"data.{k}"] = v
    record = dict(ckpt.get("changekit") or {}) if isinstance(ckpt, dict) else {}
    if "task" not in record and "model.num_semantic_classes" in out:  # files written before `task` was recorded
        record["task"] = "semantic-change"
    return out, record


def _config_flags(argv: list[str]) -> list[int]:
    """Positions of the values of ``-c`` / ``--config`` in argv (``--config=FILE`` counts as its own flag)."""
    return [i + 1 for i, a in enumerate(argv[:-1]) if a in ("-c", "--config")]


def _expand_configs(argv: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """argv with every config file replaced by its merged content (``_base_`` resolved), and those contents."""
    import yaml

    argv, configs = list(argv), []
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            argv[i : i + 1] = ["--config", a.split("=", 1)[1]]
    for i in _config_flags(argv):
        if Path(argv[i]).is_file():
            cfg = load_config(argv[i])
            configs.append(cfg)
            argv[i] = yaml.safe_dump(cfg, sort_keys=False)
    return argv, configs


def _task_name(argv: list[str], configs: list[dict[str, Any]], ckpt: dict[str, Any]) -> str:
    """The ``task`` of the run: command line, else the last config that sets it, else the checkpoint's."""
    from_configs = next((c["task"] for c in reversed(configs) if c.get("task")), None)
    name = _flag_value(argv, "--task") or from_configs or ckpt.get("task") or "change"
    if name not in TASKS:
        raise ConfigError(f"task {name!r}: use one of {', '.join(TASKS)}")
    return name


class ChangeCLI(LightningCLI):
    """LightningCLI for :class:`ChangeDetectionTask` + :class:`ChangeDataModule` with changekit's defaults."""

    def __init__(self, command: str, argv: list[str], **kwargs: Any) -> None:
        self.command = command
        config = _flag_value(argv, "-c", "--config")
        argv, configs = _expand_configs(argv)
        ckpt = _flag_value(argv, "--ckpt_path")
        if config:
            self.run_name = Path(config).stem
        elif ckpt and Path(ckpt).parent.name == "checkpoints":  # outputs/<run>/checkpoints/x.ckpt
            self.run_name = Path(ckpt).parent.parent.name
        else:
            self.run_name = Path(ckpt).stem if ckpt and ckpt != "last" else "run"
        self.output_root = Path(_flag_value(argv, "--output_root") or "outputs")
        self.out_dir = self.output_root / self.run_name
        self.extra_defaults, record = _ckpt_defaults(_flag_value(argv, "--ckpt_path"))
        self.task_name = _task_name(argv, configs, record)
        trainer_defaults = {
            "default_root_dir": str(self.out_dir),
            "logger": [
                {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": str(self.out_dir), "name": "tensorboard"}},
                {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(self.out_dir), "name": "csv"}},
            ],
        }
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
        # LightningCLI warns when it gets `args` while sys.argv holds arguments too (ours are in argv)
        saved_argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            self._init_cli(argv, trainer_defaults, kwargs)
        finally:
            sys.argv = saved_argv

    def _init_cli(self, argv: list[str], trainer_defaults: dict[str, Any], kwargs: dict[str, Any]) -> None:
        super().__init__(
            TASKS[self.task_name],
            ChangeDataModule,
            subclass_mode_model=False,
            subclass_mode_data=False,
            seed_everything_default=0,
            trainer_defaults=trainer_defaults,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"changekit {self.command}"},
            auto_configure_optimizers=False,
            args=argv,
            run=False,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        parser.add_argument("--task", type=str, default=self.task_name,
                            help=f"the kind of run: {' | '.join(TASKS)} (picks the LightningModule)")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to start from: a file, or 'last' to resume fit")
        parser.add_argument("--output_root", type=str, default="outputs", help="runs write under OUTPUT_ROOT/<config name>/")
        parser.add_argument("--output_dir", type=str | None, default=None,
                            help="predict: folder for maps/ and overlays/ (default OUTPUT_ROOT/<config>/predictions)")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.dirpath": str(self.out_dir / "checkpoints"),
            "checkpoint.filename": "best_step{step}_f1{val/f1:.4f}",
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.monitor": "val/f1",
            "checkpoint.mode": "max",
            "checkpoint.save_last": False,  # last.ckpt comes from its own callback (see _instantiate_trainer)
            "checkpoint.save_top_k": 1,
        })
        if self.extra_defaults:
            parser.set_defaults(self.extra_defaults)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar, RichProgressBar

        given = [*(config.get("callbacks") or []), *callbacks]
        extra = []
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            extra.append(RichProgressBar(leave=True))
        if config.get("logger") not in (False, None, []) and not any(isinstance(c, LearningRateMonitor) for c in given):
            extra.append(LearningRateMonitor(logging_interval="step"))
        if self.command == "fit" and not config.get("fast_dev_run"):
            # Lightning >= 2.6 refreshes `save_last` only when the monitored metric improves: keep last.ckpt
            # current with a second, unmonitored checkpoint callback (saved at every validation)
            from lightning.pytorch.callbacks import ModelCheckpoint

            best = self.config_init.get("checkpoint") if hasattr(self, "config_init") else None
            dirpath = getattr(best, "dirpath", None) or str(self.out_dir / "checkpoints")
            extra.append(ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                                         enable_version_counter=False))
        return super()._instantiate_trainer(config, [*callbacks, *extra])

    def before_instantiate_classes(self) -> None:
        t = self.config.trainer
        # iteration-based validation (val_check_interval: 4000 with an epoch shorter than that)
        if isinstance(t.get("val_check_interval"), int) and t.get("check_val_every_n_epoch") == 1:
            t.check_val_every_n_epoch = None


def _run(command: str, argv: list[str]) -> int:
    cli = ChangeCLI(command, list(argv))
    ckpt_path = cli.config.get("ckpt_path")
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    if command == "fit":
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        cb = trainer.checkpoint_callback
        if cb is not None and cb.dirpath and not trainer.interrupted:
            last = Path(cb.dirpath) / "last.ckpt"
            trainer.save_checkpoint(last, weights_only=False)  # the final state, whether or not validation ran at the last step
            if trainer.is_global_zero:
                score = None if cb.best_model_score is None else f"{float(cb.best_model_score):.4f}"
                print(f"checkpoints: best {cb.best_model_path or '-'} (val/f1 {score}), last {last}")
        return 0
    if command in ("validate", "test"):
        if not ckpt_path and not model.hparams.get("weights"):
            print(f"changekit {command}: warning: no --ckpt_path or model.weights given; evaluating an untrained model",
                  file=sys.stderr)
        getattr(trainer, command)(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        stage = "val" if command == "validate" else "test"
        res = model.results.get(stage)
        if res is not None and trainer.is_global_zero:
            from changekit.metrics import json_ready

            out = write_json(cli.out_dir / f"metrics_{command}.json", json_ready(dict(res)))
            print(f"metrics written to {out}")
        return 0
    if command == "predict":
        from changekit.engine.writers import PredictionWriter

        out_dir = Path(cli.config.get("output_dir") or cli.out_dir / "predictions")
        writer = PredictionWriter(out_dir, ignore_index=int(model.hparams.ignore_index))
        trainer.callbacks.append(writer)
        trainer.predict(model, datamodule=dm, ckpt_path=ckpt_path, return_predictions=False, weights_only=True)
        if trainer.is_global_zero:
            print(f"change maps written to {out_dir / 'maps'}" + (f", error overlays to {out_dir / 'overlays'}" if (out_dir / "overlays").exists() else ""))
        return 0
    raise ValueError(command)


def run(command: str, argv: list[str]) -> int:
    """``changekit <command> ARGV`` for command in :data:`COMMANDS`; returns the exit code."""
    if command not in COMMANDS:
        raise ValueError(f"{command!r} is not a Lightning command ({', '.join(COMMANDS)})")
    return _run(command, argv)
