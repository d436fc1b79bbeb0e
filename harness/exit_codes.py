"""The harness's exit codes, in one place (documented in README.md and docs/)."""

OK = 0
DIVERGENCE = 1
BAD_INPUT = 2
INSUFFICIENT_EVIDENCE = 3
