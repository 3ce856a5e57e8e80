"""Errors a user can act on. The CLI prints them without a traceback and exits with status 2."""


class ChangekitError(Exception):
    """Base class: the message names the file or setting at fault and how to fix it."""


class DataError(ChangekitError, ValueError):
    """Bad input data: missing folders, unmatched names, wrong sizes, bands or label values."""


class ConfigError(ChangekitError, ValueError):
    """A configuration that cannot be built or run."""
