"""changekit: remote-sensing change detection in plain PyTorch."""

from changekit.runtime import tune_allocator

tune_allocator()

from changekit.checkpoints import load_weights  # noqa: E402
from changekit.deploy.optimize import optimize_for_inference  # noqa: E402
from changekit.models.loading import load_model  # noqa: E402
from changekit.models.registry import build_model, list_models, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build_model", "list_models", "load_model", "load_weights", "optimize_for_inference", "register_model",
           "__version__"]
