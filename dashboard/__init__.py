"""The web dashboard: storyboards as pictures, takes to compare and pin, reruns and cancels (FastAPI + Jinja2).

It reads the store and starts renders as `RenderRequest`s (a `milimo run` process, or the `rerun` deployment when
`milimo serve` runs); it never imports the engine.
"""

from .app import DashboardSettings, create_app

__all__ = ["DashboardSettings", "create_app"]
