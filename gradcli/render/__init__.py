"""Renderers: pure functions from results to a dict (JSON) or a rich renderable (tables)."""
