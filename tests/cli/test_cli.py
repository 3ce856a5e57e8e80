import subprocess
import sys

from changekit.cli import COMMANDS, main


def test_usage_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_is_a_cli_module_with_main():
    import importlib
    import inspect

    for name, (module, _) in COMMANDS.items():
        main_fn = importlib.import_module(f"changekit.cli.{module}").main
        assert list(inspect.signature(main_fn).parameters) == ["argv"], name


def test_user_errors_print_cleanly_and_exit_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "changekit.cli", "score", str(tmp_path / "nope"), str(tmp_path)],
        capture_output=True, text=True,
    )
    assert r.returncode == 2
    assert "prediction folder not found" in r.stderr and "Traceback" not in r.stderr


def test_option_errors_are_one_line_with_where_the_options_are(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["scene", "--window", "wide", "--out", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("changekit scene: error: argument --window: invalid int value: 'wide'")
    assert "(`changekit scene -h` lists the options)" in err


def test_a_defect_is_one_line_that_says_so_and_the_traceback_is_there_on_request(capsys, monkeypatch):
    import changekit.cli.models as models

    def broken(argv):
        return {}["missing"]

    monkeypatch.setattr(models, "main", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "changekit models: internal error: KeyError: 'missing' at cli/test_cli.py:" in err
    assert "CHANGEKIT_TRACEBACK=1" in err
    monkeypatch.setenv("CHANGEKIT_TRACEBACK", "1")
    import pytest

    with pytest.raises(KeyError):
        main(["models"])


def test_models_command_lists_registry(capsys):
    assert main(["models", "fc_*"]) == 0
    assert "fc_siam_diff" in capsys.readouterr().out.split()


def test_models_table_lists_families_counts_and_published_f1(capsys):
    import json

    assert main(["models", "unet_r50_*", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"unet_r50_early", "unet_r50_siam-diff"}
    early = rows["unet_r50_early"]
    assert early["family"] == "unet" and early["params_total"] == early["params_trainable"] == 32_530_658
    assert {"dataset": "LEVIR-CD", "f1": 89.91, "source": early["published"][0]["source"]} == early["published"][0]
    assert main(["models", "ban_vit-b16-clip_mit-b0"]) == 0
    out = capsys.readouterr().out
    assert "68,883,622" in out and "4,349,350" in out and "LEVIR-CD 91.71" in out and "open-cd" in out
