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


def test_models_command_lists_registry(capsys):
    assert main(["models", "fc_*"]) == 0
    assert "fc_siam_diff" in capsys.readouterr().out.split()
