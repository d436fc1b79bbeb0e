"""``UncachedWorldModel``: the world-model API answered by full recomputation, no KV cache.

Each call builds every row's token window from the recorded context (see
:mod:`reference.context`) and runs it through the shared network in one causal forward from
position 0, the nanoGPT / gpt-fast forward without a cache: the transformer's attention buffer is
created empty for that forward and dropped after it, so nothing computed for one call is read by
another. Rows whose windows have the same length share one batched forward.

* root call: the env's history plus ``[action, obs]``; reward at the action token, policy and
  value at the observation token; the latent is the current observation's embedding;
* recurrent call: root history plus the action path to the parent, then ``[action]`` (reward,
  predicted latent) and ``[predicted latent]`` (policy, value).

Cache lifecycle calls (clears, the epoch recompute) cannot change an uncached result, so they
leave the context alone; the model emits no cache events.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from reference.context import (ACTION, LATENT, OBS, Node, SearchTree, Token, latest_window,
                               window_length)
from unizero.config import WorldModelConfig
from unizero.hashing import hash_state
from unizero.world_model import InferenceOutput, InputError, WorldModelCore

__all__ = ["UncachedWorldModel"]

_RESOLUTIONS = ("exact", "nearest", "orphan")


class UncachedWorldModel(WorldModelCore):
    """The uncached reference: same constructor and API as the legacy and refactored models.

    Attributes:
        window: the most tokens one forward sees (:func:`reference.context.window_length`).
        last_expansions: ``(parent, child)`` search-tree nodes of each row of the last
            recurrent call, for inspection (which recorded node a parent latent was taken for).
    """

    def __init__(self, config: WorldModelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.window = window_length(config.context_length)
        self._histories: list[list[Token]] = [[] for _ in range(config.env_num)]
        self._reanalysis_histories: list[list[Token]] = []
        self._trees: list[SearchTree] = []
        self._counts = {f"parent_{name}": 0 for name in _RESOLUTIONS}
        self._counts.update(root_continued=0, root_restarted=0)
        self.last_expansions: tuple[tuple[Node, Node], ...] = ()
        self._last_nodes: tuple[Node, ...] = ()

    # ------------------------------------------------------------------ root calls
    @torch.no_grad()
    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        current, actions, _, last = self._root_inputs(last_obs, last_actions, current_obs, start_pos)
        latent = self.net.encode(current)  # [B, D]
        current_rows = current.cpu().numpy()
        histories = self._active_histories(len(current_rows))
        for row, obs in enumerate(current_rows):
            if last is None:
                histories[row] = [Token(OBS, value=obs)]
            else:
                histories[row] = self._continued(histories[row], last[row].cpu().numpy(),
                                                 int(actions[row])) + [Token(OBS, value=obs)]
            histories[row] = latest_window(histories[row], self.window)
        windows = [histories[row] for row in range(len(current_rows))]
        hidden_last, hidden_action = self._forward(windows)
        policy, value = self.net.observation_heads(hidden_last)
        if last is None:
            reward = torch.zeros(len(windows), self.config.num_support_bins, device=self.device)
        else:
            reward, _ = self.net.action_heads(hidden_action)
        latent_rows = latent.cpu().numpy()
        self._trees = [SearchTree.rooted(row.copy()) for row in latent_rows]
        self._last_nodes = tuple(tree.nodes[0] for tree in self._trees)
        return InferenceOutput(latent, reward, policy, value)

    def _active_histories(self, rows: int) -> list[list[Token]]:
        """Live envs' histories, or a scratch set while reanalysing (a replay batch, not envs)."""
        if not self.reanalyze_phase:
            return self._histories
        if len(self._reanalysis_histories) < rows:
            self._reanalysis_histories.extend([] for _ in range(rows - len(self._reanalysis_histories)))
        return self._reanalysis_histories

    def _continued(self, history: list[Token], last_obs: np.ndarray, action: int) -> list[Token]:
        """``history + [action]`` if it ends with ``last_obs``; else a context starting there."""
        if history and history[-1].kind == OBS and np.array_equal(history[-1].value, last_obs):
            self._counts["root_continued"] += 1
            return history + [Token(ACTION, action=action)]
        self._counts["root_restarted"] += 1
        return [Token(OBS, value=last_obs), Token(ACTION, action=action)]

    # ------------------------------------------------------------------ recurrent calls
    @torch.no_grad()
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any,
                            simulation_index: int = 0, search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        latent, batch_action, _ = self._recurrent_inputs(latent_state, actions, start_pos)
        batch = latent.shape[0]
        depths = (None if search_depth is None
                  else np.asarray(search_depth, dtype=np.int64).reshape(-1)[:batch])
        parents = [self._parent(row, latent[row], None if depths is None else int(depths[row]) - 1)
                   for row in range(batch)]
        # Pass 1 ends at the action token: reward and the predicted next latent.
        action_windows = []
        for row, parent in enumerate(parents):
            tokens = self._context_before(row, parent) + [Token(ACTION, action=int(batch_action[row]))]
            action_windows.append(tokens[-(self.window - 1):] if self.window > 1 else tokens[-1:])
        hidden_action, _ = self._forward(action_windows)
        reward, predicted = self.net.action_heads(hidden_action)
        predicted_rows = predicted.cpu().numpy()
        # Pass 2 appends the predicted latent: policy and value at the observation token.
        obs_windows = [window + [Token(LATENT, value=predicted_rows[row])]
                       for row, window in enumerate(action_windows)]
        hidden_obs, _ = self._forward(obs_windows)
        policy, value = self.net.observation_heads(hidden_obs)
        self.last_expansions = tuple(
            (parent, self._trees[row].add_child(parent, int(batch_action[row]),
                                                predicted_rows[row].copy()))
            for row, parent in enumerate(parents))
        self._last_nodes = tuple(child for _, child in self.last_expansions)
        return InferenceOutput(predicted, reward, policy, value)

    def note_recorded_latents(self, latents: np.ndarray) -> None:
        """Name the last call's nodes by the latents the trace's producer returned for them.

        A replay driver that has the recorded outputs passes ``out/latent`` (``[B, D]``) after
        each root and recurrent call; MCTS hands exactly those bytes back as later parent
        latents, so every parent is then identified by its bytes rather than by nearness.

        Raises:
            InputError: if ``latents`` is not a float32 ``[B, D]`` array for the last call.
        """
        arr = self._latent_array(np.asarray(latents)) if self._last_nodes else None
        if arr is None or arr.shape[0] != len(self._last_nodes):
            raise InputError(f"latents: expected float32 [{len(self._last_nodes)}, "
                             f"{self.config.embed_dim}] for the last call's rows, got "
                             f"{list(np.shape(latents))}")
        for node, row in zip(self._last_nodes, arr):
            node.latent, node.key = row.copy(), hash_state(row)

    def _parent(self, row: int, latent: np.ndarray, depth: int | None) -> Node:
        if row >= len(self._trees):
            self._trees.extend(SearchTree() for _ in range(row + 1 - len(self._trees)))
        node, how = self._trees[row].find_parent(np.ascontiguousarray(latent), depth)
        self._counts[f"parent_{how}"] += 1
        return node

    def _context_before(self, row: int, parent: Node) -> list[Token]:
        """Tokens up to and including ``parent``'s latent: the root's history, then the path."""
        top, path = parent.path_tokens()
        if top.orphan:
            return path
        histories = self._reanalysis_histories if self.reanalyze_phase else self._histories
        return histories[row] + path

    # ------------------------------------------------------------------ the forward
    def _forward(self, windows: list[list[Token]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every window from position 0; the hidden states ``[B, D]`` of each window's last
        token and of the token before it (zeros for a one-token window)."""
        d = self.config.embed_dim
        last = torch.zeros(len(windows), d, device=self.device)
        before = torch.zeros(len(windows), d, device=self.device)
        by_length: dict[int, list[int]] = {}
        for row, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(row)
        for length, rows in sorted(by_length.items()):
            embeddings = self._embed([windows[row] for row in rows])  # [b, T, D]
            positions = torch.arange(length, device=self.device).expand(len(rows), length)
            scratch = self.net.transformer.generate_empty_keys_values(len(rows), length)
            hidden = self.net.forward_tokens(embeddings, scratch, positions)  # [b, T, D]
            index = torch.as_tensor(rows, device=self.device)
            last[index] = hidden[:, -1]
            if length > 1:
                before[index] = hidden[:, -2]
        return last, before

    def _embed(self, windows: list[list[Token]]) -> torch.Tensor:
        """Token embeddings ``[b, T, D]`` of equal-length windows (observations re-encoded)."""
        flat = [token for window in windows for token in window]
        out = torch.empty(len(flat), self.config.embed_dim, device=self.device)
        for kind in (OBS, LATENT, ACTION):
            where = [i for i, token in enumerate(flat) if token.kind == kind]
            if not where:
                continue
            index = torch.as_tensor(where, device=self.device)
            if kind == ACTION:
                actions = np.asarray([flat[i].action for i in where], dtype=np.int64)
                out[index] = self.net.embed_actions(actions)[:, 0]
                continue
            values = torch.as_tensor(np.stack([flat[i].value for i in where]),
                                     dtype=torch.float32, device=self.device)
            out[index] = self.net.encode(values) if kind == OBS else values
        return out.view(len(windows), -1, self.config.embed_dim)

    # ------------------------------------------------------------------ lifecycle
    def clear_caches(self, reason: str = "clear_caches") -> None:
        """No cache to clear; the context an uncached model reads is unchanged."""

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        """No cache to clear (the env id is still checked); the next first step restarts it."""
        self.check_env_id(env_id)

    def set_reanalyze_phase(self, on: bool) -> None:
        """Reanalysis searches a replay batch: its roots get their own scratch histories."""
        super().set_reanalyze_phase(on)
        self._reanalysis_histories = []

    def stats(self) -> dict[str, int]:
        """How recurrent parents were identified and how root contexts continued or restarted."""
        return dict(self._counts)
