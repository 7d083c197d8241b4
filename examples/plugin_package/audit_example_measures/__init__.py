"""An installable measure plugin: `pip install examples/plugin_package`, and `audit list measures` shows
init-distance-ratio without --plugin (the entry point in pyproject.toml names this module)."""

from audit_example_measures.distance import init_distance_ratio

__all__ = ["init_distance_ratio"]
