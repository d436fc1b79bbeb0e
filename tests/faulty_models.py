"""World models that raise on one kind of call: engines for the errors-as-results tests."""

from __future__ import annotations

from legacy.world_model import LegacyWorldModel


class RaiseOnRoot(LegacyWorldModel):
    """Legacy, except that every root call raises."""

    def initial_inference(self, *args, **kwargs):
        raise RuntimeError("root call refused on purpose")


class RaiseOnRecurrent(LegacyWorldModel):
    """Legacy, except that every recurrent call raises."""

    def recurrent_inference(self, *args, **kwargs):
        raise RuntimeError("recurrent call refused on purpose")
