"""Upstream LightZero engines (issue #12): LightZero's own UniZero world model, run in a worker
process with its own Python, observed without editing it, replayed side by side.

The seam the harness wires in:

* :func:`harness.upstream.engine.is_upstream_spec` / :class:`~harness.upstream.engine.UpstreamEngine`
  — ``build_engine`` routes ``lightzero:PATH`` and ``lightzero-manager:PATH`` here; the engine has
  ``name``, ``apply(RecordedCall) -> Observation`` (its ``findings`` carry the aliasing
  probe's) and ``close()``;
* :func:`harness.upstream.capture.capture_upstream` — ``capture --engine lightzero:PATH``;
  :class:`~harness.upstream.capture.UpstreamWorldModel` — the world-model API for ``live``;
* ``compare --loop closed`` is the replay's own (:mod:`harness.lineage`).

See docs/lightzero.md.
"""
