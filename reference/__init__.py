"""The uncached reference world model: every imagine call recomputed from its full context.

Neither legacy nor refactored is ground truth: both read cached context. This package answers
each call the way a no-cache transformer does (nanoGPT / gpt-fast without their KV cache): the
env's tokens so far, within the model's context window, run through the network in one forward.
See docs/reference.md for where legacy departs from that result by design.
"""
