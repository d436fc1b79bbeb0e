"""Weight updates between collect rounds: new state dicts for ``world_model.load_weights``.

The world model's own network is never modified here; each update builds a new state dict
(parameters changed, buffers such as the trim correction carried over unchanged, so a stale
correction stays stale until the epoch recompute — legacy quirk 8) and the runner hands it to
``load_weights``, the one call a recording proxy sees.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from harness.scenario.spec import WeightUpdateSpec
from unizero.support import DiscreteSupport

__all__ = ["TrainingBatch", "WeightUpdater"]


@dataclass(frozen=True, slots=True)
class TrainingBatch:
    """Search targets of one round: ``obs [N, obs_dim]`` float32, ``policy [N, A]`` visit
    distributions and ``value [N]`` searched root values."""

    obs: np.ndarray
    policy: np.ndarray
    value: np.ndarray


class WeightUpdater:
    """Applies one :class:`WeightUpdateSpec`; deterministic given its seed and call order."""

    def __init__(self, spec: WeightUpdateSpec, support: DiscreteSupport) -> None:
        self.spec = spec
        self.support = support
        self._generator = torch.Generator().manual_seed(spec.seed)

    def new_state(self, net: nn.Module, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """The updated state dict of ``net`` (``net`` itself is left untouched)."""
        if self.spec.kind == "perturb":
            return self._perturbed(net)
        assert self.spec.kind == "sgd", f"unhandled weight update kind {self.spec.kind!r}"
        return self._sgd_step(net, batch)

    def _perturbed(self, net: nn.Module) -> dict[str, torch.Tensor]:
        parameters = {name for name, _ in net.named_parameters()}
        state = {}
        for name, value in net.state_dict().items():
            if name in parameters:
                noise = torch.randn(value.shape, generator=self._generator, dtype=value.dtype)
                state[name] = value + self.spec.scale * noise.to(value.device)
            else:
                state[name] = value.clone()
        return state

    def _sgd_step(self, net: nn.Module, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """One SGD step on cross-entropy to the visit distribution and the two-hot value.

        The observation token runs alone at position 0 through a fresh cache (the cache stores
        detached K/V, so attention projections get no gradient on this one-token loss).
        """
        model = copy.deepcopy(net)
        model.train()
        device = next(model.parameters()).device
        obs = torch.as_tensor(batch.obs, dtype=torch.float32, device=device)  # [N, obs_dim]
        latent = model.encode(obs)  # [N, D]
        positions = torch.zeros(obs.shape[0], 1, dtype=torch.long, device=device)
        hidden = model.forward_tokens(latent.unsqueeze(1), model.empty_keys_values(obs.shape[0]),
                                      positions)
        policy_logits, value_logits = model.observation_heads(hidden[:, -1])
        policy_target = torch.as_tensor(batch.policy, dtype=torch.float32, device=device)
        value_target = torch.as_tensor(self.support.scalar_to_probs(batch.value),
                                       dtype=torch.float32, device=device)
        loss = (-(policy_target * F.log_softmax(policy_logits, dim=-1)).sum(-1).mean()
                - (value_target * F.log_softmax(value_logits, dim=-1)).sum(-1).mean())
        loss.backward()
        with torch.no_grad():  # plain SGD; torch.optim's first use costs seconds of imports
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter -= self.spec.learning_rate * parameter.grad
        return {name: value.detach() for name, value in model.state_dict().items()}
