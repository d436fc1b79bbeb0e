"""The vocabulary of divergence causes: what a report's ``cause`` column and a waiver's
``cause = "..."`` scope may say.

* ``quirk-N``: the divergence is what legacy with spec quirk N corrected does too (its
  counterfactual control agrees with the candidate there: :mod:`harness.causes`);
* ``latent-drift``: closed loop, a decision divergence on a call whose engines were fed latents
  that agree within tolerance but not in every bit, so their cache keys differ for that alone;
* ``storage-aliasing``: a storage probe found a live cache entry sharing tensor storage with
  another entry or a scratch buffer (upstream's shipped bug);
* ``unexplained``: no cause explains it. A cause waiver never covers it.
"""

from __future__ import annotations

from legacy.counterfactual import COUNTERFACTUALS

__all__ = ["UNEXPLAINED", "LATENT_DRIFT", "STORAGE_ALIASING", "COUNTERFACTUAL_CAUSES",
           "WAIVABLE_CAUSES", "cause_covers"]

UNEXPLAINED = "unexplained"
LATENT_DRIFT = "latent-drift"
STORAGE_ALIASING = "storage-aliasing"
COUNTERFACTUAL_CAUSES: tuple[str, ...] = tuple(c.cause for c in COUNTERFACTUALS)
WAIVABLE_CAUSES: tuple[str, ...] = (*COUNTERFACTUAL_CAUSES, LATENT_DRIFT)
"""Causes a waiver may name: documented legacy defects the refactor fixes on purpose, and
last-bit drift. Storage aliasing is a bug, never an expected divergence."""


def cause_covers(waiver_cause: str, label: str | None) -> bool:
    """Whether a waiver scoped by ``cause = waiver_cause`` covers a divergence labelled ``label``.

    Only the named cause is covered; an ``unexplained`` (or unlabelled) divergence never is.
    """
    return label is not None and label != UNEXPLAINED and label == waiver_cause
