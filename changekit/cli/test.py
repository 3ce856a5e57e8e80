"""``changekit test``: a LightningCLI run (see :mod:`changekit.engine.lightning_cli`)."""


def main(argv: list[str]) -> int:
    from changekit.engine.lightning_cli import run

    return run("test", argv)
