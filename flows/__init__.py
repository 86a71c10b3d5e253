"""Prefect flows (render a storyboard, re-render from a shot, import a cut) and the `milimo` CLI.

The flows import Prefect; `flows.cli` imports it only for the commands that need it.
"""

from importlib import import_module

_EXPORTS = {"render_storyboard": "render", "rerender": "render", "ShotsFailed": "render"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
