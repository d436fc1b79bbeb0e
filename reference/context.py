"""What the uncached reference remembers instead of a cache: token histories and search trees.

A *token* is one input position of the transformer: a real observation (re-encoded at every
forward, so a weight update reaches the whole context), an imagined latent (as MCTS passed it)
or an action. An env's history is its episode's tokens since its last first-step root call. A
search tree links each recurrent call's parent latent to the action path that produced it, so a
recurrent call's context is the root history plus that path.

MCTS passes a parent latent back by its bytes. A node created by the reference is identified
with the recorded latent the first time that latent arrives as a parent: by its bytes if they
are the reference's own prediction, otherwise as the nearest unidentified node of the right
depth (the recorded latent came from a cached model, so it may differ in the last bits or more).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unizero.hashing import hash_state

__all__ = ["OBS", "LATENT", "ACTION", "Token", "Node", "SearchTree", "latest_window",
           "window_length"]

OBS = "obs"
LATENT = "latent"
ACTION = "action"


@dataclass(frozen=True, slots=True, eq=False)
class Token:
    """One transformer input position.

    Attributes:
        kind: ``obs`` (``value`` a raw observation ``[obs_dim]``), ``latent`` (``value`` an
            embedding ``[D]`` float32) or ``action`` (``action`` an index).
    """

    kind: str
    value: np.ndarray | None = None
    action: int = -1


def window_length(context_length: int) -> int:
    """Tokens a forward may see: ``C - 1`` (legacy's longest batch), rounded down to odd so a
    window starts with an observation and keeps obs/action pairs aligned."""
    longest = context_length - 1
    return longest if longest % 2 == 1 else longest - 1


def latest_window(tokens: list[Token], limit: int) -> list[Token]:
    """The last ``limit`` tokens (``limit`` odd; ``tokens`` alternate obs, action, ... obs)."""
    return tokens[-limit:] if len(tokens) > limit else list(tokens)


@dataclass(slots=True, eq=False)
class Node:
    """One search-tree node of one env.

    Attributes:
        depth: edges from the root.
        parent: None for the root.
        action: the edge's action from the parent (-1 for the root).
        predicted: the reference's own latent for this node ``[D]`` float32.
        predicted_key: XXH64 of ``predicted``'s bytes (a closed-loop replay passes it back).
        latent: the latent MCTS passed for this node, once it arrived as a parent.
        key: XXH64 of ``latent``'s bytes, once known.
        orphan: a top node made from a parent latent no tree knew; its context is that latent
            alone (what legacy's miss path uses too).
    """

    depth: int
    parent: "Node | None"
    action: int
    predicted: np.ndarray
    predicted_key: int
    latent: np.ndarray | None = None
    key: int | None = None
    orphan: bool = False

    def path_tokens(self) -> tuple["Node", list[Token]]:
        """The top node of this node's tree and the ``[action, latent]`` pairs from it down to
        this node (an orphan top contributes its latent first)."""
        tokens: list[Token] = []
        node = self
        while node.parent is not None:
            assert node.latent is not None, "a node on a parent path is identified before use"
            tokens[:0] = [Token(ACTION, action=node.action), Token(LATENT, value=node.latent)]
            node = node.parent
        if node.orphan:
            tokens.insert(0, Token(LATENT, value=node.latent))
        return node, tokens


@dataclass(slots=True)
class SearchTree:
    """The nodes of one env's current search, in creation order (the root first)."""

    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def rooted(cls, latent: np.ndarray) -> "SearchTree":
        key = hash_state(latent)
        root = Node(0, None, -1, latent, key, latent, key)
        return cls([root])

    def add_child(self, parent: Node, action: int, predicted: np.ndarray) -> Node:
        child = Node(parent.depth + 1, parent, action, predicted, hash_state(predicted))
        self.nodes.append(child)
        return child

    def find_parent(self, latent: np.ndarray, depth: int | None) -> tuple[Node, str]:
        """The node ``latent`` names, identifying it if needed; and how it was found.

        Args:
            latent: the parent latent MCTS passed ``[D]`` float32.
            depth: the parent's depth (the call's search depth minus one), None if unknown.

        Returns:
            ``(node, how)`` with ``how`` one of ``exact`` (bytes of an identified node, or of a
            node's own prediction, which a closed-loop replay passes back), ``nearest`` (nearest unidentified node of that depth) or
            ``orphan`` (no candidate: a new orphan top node holding ``latent``).
        """
        key = hash_state(latent)
        same_depth = [n for n in self.nodes if depth is None or n.depth == depth]
        for node in same_depth:
            if node.key == key:
                return node, "exact"
        for node in same_depth:
            if node.predicted_key == key:  # the reference's own latent (a closed loop)
                return (node if node.key is not None else self._identify(node, latent, key)), "exact"
        pending = [n for n in same_depth if n.key is None]
        if pending:
            target = latent.astype(np.float64)
            distances = [float(np.sum((n.predicted.astype(np.float64) - target) ** 2))
                         for n in pending]
            best = pending[int(np.argmin(distances))]  # ties go to the earliest node
            return self._identify(best, latent, key), "nearest"
        for node in self.nodes:
            if node.key == key:
                return node, "exact"
        orphan = Node(depth or 0, None, -1, latent.copy(), key, latent.copy(), key, orphan=True)
        self.nodes.append(orphan)
        return orphan, "orphan"

    @staticmethod
    def _identify(node: Node, latent: np.ndarray, key: int) -> Node:
        node.latent, node.key = latent.copy(), key
        return node
