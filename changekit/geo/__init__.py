"""Large georeferenced scenes: streamed, blended, resumable and shardable change inference (docs/scenes.md)."""

from __future__ import annotations

__all__ = ["run_scene", "demo_scene", "preview_png"]


def run_scene(*args, **kwargs):
    """See :func:`changekit.geo.scene.run_scene`."""
    from changekit.geo.scene import run_scene as _run

    return _run(*args, **kwargs)


def demo_scene(*args, **kwargs):
    """See :func:`changekit.geo.demo.demo_scene`."""
    from changekit.geo.demo import demo_scene as _demo

    return _demo(*args, **kwargs)


def preview_png(*args, **kwargs):
    """See :func:`changekit.geo.demo.preview_png`."""
    from changekit.geo.demo import preview_png as _preview

    return _preview(*args, **kwargs)
