"""Errors a user can act on. The CLI prints them without a traceback and exits with status 2."""


class ChangekitError(Exception):
    """Base class: the message names the file or setting at fault and how to fix it."""


class DataError(ChangekitError, ValueError):
    """Bad input data: missing folders, unmatched names, wrong sizes, bands or label values."""


class ConfigError(ChangekitError, ValueError):
    """A configuration that cannot be built or run."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of a library's error message, at most ``limit`` characters (torch's unpickling and ONNX
    Runtime's errors run to a page of advice); the error's type where it says nothing."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
