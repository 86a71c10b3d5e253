"""The metadata store: the source of truth for what was rendered, how, and from what."""

from .api import PlanItem, ShotStatus, Store, TakeView
from .db import default_url, make_engine, upgrade
from .models import TakeStatus

__all__ = ["PlanItem", "ShotStatus", "Store", "TakeStatus", "TakeView", "default_url", "make_engine", "upgrade"]
