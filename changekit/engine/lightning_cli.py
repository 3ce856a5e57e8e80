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
from changekit.engine.change_task import ChangeDetectionTask
from changekit.engine.datamodule import ChangeDataModule
from changekit.engine.scd_task import SemanticChangeTask
from changekit.engine.seg_task import SegmentationTask
from changekit.errors import ConfigError

__all__ = ["run", "ChangeCLI", "TASKS", "COMMANDS"]

#: ``task`` key of a config -> LightningModule class
TASKS: dict[str, type] = {"change": ChangeDetectionTask, "semantic-change": SemanticChangeTask,
                          "segmentation": SegmentationTask}
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
        if not k.startswith("_") and not k.startswith("resolved_") and k != "num_classes":  # linked to the model's
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
            parser_kwargs={"prog": f"changekit {self.command}", "exit_on_error": False},
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
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: start over in an output folder that holds checkpoints (they are removed); "
                                 "predict: replace the maps of an earlier run")
        # one class count: the data decode labels for as many classes as the model predicts
        parser.link_arguments("model.num_classes", "data.num_classes")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        monitor = getattr(TASKS.get(self.task_name), "MONITOR", "val/f1")
        parser.set_defaults({
            "checkpoint.dirpath": str(self.out_dir / "checkpoints"),
            "checkpoint.filename": "best_step{step}_" + monitor.split("/")[-1] + "{" + monitor + ":.4f}",
            "checkpoint.auto_insert_metric_name": False,
            "checkpoint.monitor": monitor,
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
            from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint

            best = self.config_init.get("checkpoint") if hasattr(self, "config_init") else None
            dirpath = getattr(best, "dirpath", None) or str(self.out_dir / "checkpoints")
            # Lightning >= 2.6 refreshes `save_last` only when the monitored metric improves: keep last.ckpt
            # current with a second, unmonitored checkpoint callback (saved at every validation)
            extra.append(ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                                         enable_version_counter=False))
            # Ctrl-C or a crash leaves last.ckpt behind, so `--ckpt_path last` resumes from where it stopped
            extra.append(OnExceptionCheckpoint(dirpath, filename="last"))
        return super()._instantiate_trainer(config, [*callbacks, *extra])

    def before_instantiate_classes(self) -> None:
        t = self.config.trainer
        # iteration-based validation (val_check_interval: 4000 with an epoch shorter than that)
        if isinstance(t.get("val_check_interval"), int) and t.get("check_val_every_n_epoch") == 1:
            t.check_val_every_n_epoch = None


def check_checkpoint(path: str, task: ChangeDetectionTask) -> None:
    """Refuse, in one line, a ``--ckpt_path`` that Lightning would fail on with a traceback: a missing file, a
    weights file that is no training checkpoint (open-cd, mmengine, plain state dicts: those go through
    ``--model.weights``), a checkpoint of another model or whose tensors do not fit."""
    from changekit.checkpoints import CheckpointError, check_state_dict, read_checkpoint

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--ckpt_path {path}: no such file")
    ckpt = read_checkpoint(p)  # the inert unpickler: nothing in the file runs
    if not isinstance(ckpt, dict) or "pytorch-lightning_version" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"--ckpt_path {p}: a weights file, not a checkpoint written by `changekit fit`; "
                              f"load it with --model.weights {p} (strict; open-cd layouts too) and the model's config")
    arch = (ckpt.get("hyper_parameters") or {}).get("arch")
    if arch and arch != task.hparams.arch:
        raise CheckpointError(f"--ckpt_path {p} holds model {arch!r} but this run builds {task.hparams.arch!r}; "
                              f"give a checkpoint of {task.hparams.arch!r}, or leave model.arch to the checkpoint")
    sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    check_state_dict(task.model, sd, f"--ckpt_path {p}")


def _clear_or_refuse(folder: Path, pattern: str, overwrite: bool, what: str, resume: str) -> None:
    """An output folder that already holds results of an earlier run: refuse, or with --overwrite empty it."""
    old = sorted(folder.rglob(pattern)) if folder.is_dir() else []
    if not old:
        return
    if not overwrite:
        raise ConfigError(f"{folder} already holds {len(old)} {what} of an earlier run; {resume}pass --overwrite true "
                          "to replace them, or choose another output folder")
    for f in old:
        f.unlink()


def _quiet_lightning() -> None:
    """Keep a normal run's output to what matters: no advertising tip, no deprecation notice from a
    dependency's internals (both said nothing about the user's run)."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "litlogger" not in record.getMessage().lower())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _parse_quietly(command: str, argv: list[str]) -> ChangeCLI:
    """Build the CLI; a parser that prints its usage and exits (jsonargparse's nested ``--*.help`` parsers do) is
    turned into one error line. Everything else it prints (help, warnings) is passed on as it is."""
    import contextlib
    import io
    import sys

    buf = io.StringIO()
    failed = None
    try:
        with contextlib.redirect_stderr(buf):
            return ChangeCLI(command, list(argv))
    except SystemExit as e:
        if e.code:
            said = [line for line in buf.getvalue().splitlines() if "error:" in line]
            failed = said[-1].split("error:", 1)[1].strip() if said else f"the options were refused (exit {e.code})"
            raise ConfigError(failed) from None
        raise
    finally:
        if failed is None:
            sys.stderr.write(buf.getvalue())


def _run(command: str, argv: list[str]) -> int:
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    _quiet_lightning()
    try:
        cli = _parse_quietly(command, argv)
    except UnicodeDecodeError as e:
        raise ConfigError(f"a file given on the command line is not UTF-8 text ({e.reason} at byte {e.start}); "
                          "configs and option files are YAML text") from None
    except (ArgumentError, MisconfigurationException, ValueError) as e:  # ValueError: values jsonargparse rejects
        raise ConfigError(" ".join(str(e).split())) from None
    ckpt_path = cli.config.get("ckpt_path")
    overwrite = bool(cli.config.get("overwrite"))
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    if ckpt_path and not (command == "fit" and ckpt_path == "last"):
        check_checkpoint(ckpt_path, model)
    if command == "fit":
        ckdir = Path(cli.config.get("checkpoint", {}).get("dirpath") or cli.out_dir / "checkpoints")
        if ckpt_path == "last" and not (ckdir / "last.ckpt").is_file():
            raise ConfigError(f"--ckpt_path last: there is no {ckdir / 'last.ckpt'} to resume; run without --ckpt_path "
                              "to start training")
        if not ckpt_path and trainer.is_global_zero:
            _clear_or_refuse(ckdir, "*.ckpt", overwrite, "checkpoints", "resume that run with --ckpt_path last, or ")
        _interruptible(trainer, "resume with the same command plus --ckpt_path last",
                       trainer.fit, model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        cb = trainer.checkpoint_callback
        if cb is not None and cb.dirpath and not trainer.interrupted:
            last = Path(cb.dirpath) / "last.ckpt"
            trainer.save_checkpoint(last, weights_only=False)  # the final state, whether or not validation ran at the last step
            if trainer.is_global_zero:
                score = None if cb.best_model_score is None else f"{float(cb.best_model_score):.4f}"
                print(f"checkpoints: best {cb.best_model_path or '-'} ({cb.monitor} {score}), last {last}")
        return 0
    if command in ("validate", "test"):
        if not ckpt_path and not model.hparams.get("weights"):
            print(f"changekit {command}: warning: no --ckpt_path or model.weights given; evaluating an untrained model",
                  file=sys.stderr)
        _interruptible(trainer, "rerun the same command", getattr(trainer, command), model, datamodule=dm,
                       ckpt_path=ckpt_path, weights_only=True, verbose=False)  # our table, not Lightning's too
        stage = "val" if command == "validate" else "test"
        res = model.results.get(stage)
        if res is not None and trainer.is_global_zero:
            from changekit.metrics import json_ready

            split = dm.hparams.val_split if stage == "val" else dm.hparams.test_split
            out = write_json(cli.out_dir / _metrics_name(command, split, dm), json_ready({**res, "split": split}))
            print(f"metrics ({split} split) written to {out}")
        return 0
    if command == "predict":
        from changekit.engine.writers import PredictionWriter

        out_dir = Path(cli.config.get("output_dir") or cli.out_dir / "predictions")
        if trainer.is_global_zero:
            for sub in ("maps", "overlays"):
                _clear_or_refuse(out_dir / sub, "*.png", overwrite, "maps", "")
        palette, offset = None, 0
        if model.TASK_NAME == "segmentation":  # class maps in the dataset's colours and label encoding
            from changekit.data.presets import class_legend

            palette = class_legend({"dataset": dm.preset.name}, int(model.hparams.num_classes))[1]
            offset = 1 if (dm.hparams.label_encoding or dm.preset.label_encoding) == "reduce-zero" else 0
        writer = PredictionWriter(out_dir, ignore_index=int(model.hparams.ignore_index), palette=palette,
                                  value_offset=offset)
        trainer.callbacks.append(writer)
        _interruptible(trainer, "rerun the same command with --overwrite true", trainer.predict, model,
                       datamodule=dm, ckpt_path=ckpt_path, return_predictions=False, weights_only=True)
        if trainer.is_global_zero:
            what = ("change maps" if palette is None else
                    f"class maps (palette PNGs, stored values {offset}..{offset + len(palette) - 1}: the dataset's "
                    "label encoding)")
            print(f"{what} written to {out_dir / 'maps'}" + (f", error overlays to {out_dir / 'overlays'}" if (out_dir / "overlays").exists() else ""))
        return 0
    raise ValueError(command)


def _metrics_name(command: str, split: str, dm) -> str:
    """``metrics_test.json`` for the preset's own split; another split keeps its own file (BANDON's out-of-domain
    ``test/test_ood`` → ``metrics_test_ood.json``) so that in- and out-of-domain results sit side by side."""
    default = "val" if command == "validate" else dm.preset.test_split
    if split == default:
        return f"metrics_{command}.json"
    last = str(split).rstrip("/").split("/")[-1]
    return f"metrics_{last}.json" if last.startswith(command) else f"metrics_{command}_{last}.json"


def _interruptible(trainer, resume: str, fn, *args, **kwargs) -> None:
    """Run a trainer loop; Lightning answers Ctrl-C by shutting down and exiting: say how to carry on instead."""
    try:
        fn(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt(resume) from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt(resume)


def run(command: str, argv: list[str]) -> int:
    """``changekit <command> ARGV`` for command in :data:`COMMANDS`; returns the exit code."""
    if command not in COMMANDS:
        raise ValueError(f"{command!r} is not a Lightning command ({', '.join(COMMANDS)})")
    return _run(command, argv)
