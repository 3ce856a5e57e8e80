"""The version of changekit, written once: the package, its metadata (pyproject.toml) and exported files read it."""

__version__ = "0.1.0"
