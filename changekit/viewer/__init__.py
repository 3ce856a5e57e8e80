"""``changekit view``: a scene's dates, change layers and polygons on a map in the browser (docs/scenes.md)."""

from changekit.viewer.app import LAYERS, check_scene_folder, create_app

__all__ = ["LAYERS", "check_scene_folder", "create_app"]
