"""Large georeferenced scenes: streamed, blended, resumable and shardable change inference (docs/scenes.md).

No Lightning here: models come from files through :func:`changekit.load_model`.
"""

from __future__ import annotations

__all__ = ["run_scene", "run_timeline", "preview_png"]


def run_scene(*args, **kwargs):
    """See :func:`changekit.geo.scene.run_scene`."""
    from changekit.geo.scene import run_scene as _run

    return _run(*args, **kwargs)


def run_timeline(*args, **kwargs):
    """See :func:`changekit.geo.timeline.run_timeline`."""
    from changekit.geo.timeline import run_timeline as _run

    return _run(*args, **kwargs)


def preview_png(*args, **kwargs):
    """See :func:`changekit.geo.preview.preview_png`."""
    from changekit.geo.preview import preview_png as _preview

    return _preview(*args, **kwargs)
