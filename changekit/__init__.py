"""changekit: remote-sensing change detection in plain PyTorch."""

from changekit.runtime import tune_allocator

tune_allocator()

from changekit.checkpoints import load_weights  # noqa: E402
from changekit.deploy.optimize import optimize_for_inference  # noqa: E402
from changekit.models.loading import load_model  # noqa: E402
from changekit.models.registry import build_model, list_models, register_model  # noqa: E402
from changekit.version import __version__  # noqa: E402


def run_scene(*args, **kwargs):
    """A model over two large georeferenced scenes (or one, for segmentation): see
    :func:`changekit.geo.scene.run_scene`."""
    from changekit.geo.scene import run_scene as _run

    return _run(*args, **kwargs)


def run_timeline(*args, **kwargs):
    """A change model over N dates, when each place changed: see :func:`changekit.geo.timeline.run_timeline`."""
    from changekit.geo.timeline import run_timeline as _run

    return _run(*args, **kwargs)
__all__ = ["build_model", "list_models", "load_model", "load_weights", "optimize_for_inference", "register_model",
           "run_scene", "run_timeline", "__version__"]
