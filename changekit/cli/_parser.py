"""The argument parser of every command: argparse, with its errors on one line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse prints its usage block before an error; a command's error is one line that says what is wrong
    and where the options are listed, like every other error of changekit."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (`{self.prog} -h` lists the options)\n")
