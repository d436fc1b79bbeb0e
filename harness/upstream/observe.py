"""Cache events from upstream LightZero's world model, observed without editing upstream.

Runs inside the upstream worker. Upstream keeps its lookup maps in two shapes:

* the old path (``use_new_cache_manager = False``): per-env dicts
  ``past_kv_cache_init_infer_envs[i]`` and one dict ``past_kv_cache_recurrent_infer`` mapping a
  latent's hash to a slot of the pools ``shared_pool_init_infer[i]`` / ``shared_pool_recur_infer``;
* the manager (``use_new_cache_manager = True``): ``kv_cache_manager.init_pools[i]`` and
  ``kv_cache_manager.recur_pool``, each a ``KVCachePool`` with ``get`` / ``set`` / ``clear``.

:class:`CacheObserver` swaps each dict for an observing subclass, or shadows each pool
instance's methods, and logs raw operations; :func:`assemble_events` maps one call's raw log onto
kvmigrate's ``Lookup`` / ``Store`` / ``Clear``, so both paths yield the same event stream for the
same decisions. At every store the aliasing probe checks whether a live entry shares tensor
storage with another live entry or with a scratch buffer of the world model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from unizero.events import POOL_RECURRENT, POOL_ROOT, CacheEvent, Clear, Lookup, Store

__all__ = ["RawOp", "AliasFinding", "CacheObserver", "assemble_events", "SCRATCH_BUFFERS"]

# World-model attributes that are per-call scratch: a stored entry must never share their storage.
SCRATCH_BUFFERS = ("keys_values_wm_single_env", "keys_values_wm", "keys_values_wm_single_env_tmp")


@dataclass(frozen=True, slots=True)
class RawOp:
    """One operation on an upstream lookup structure.

    Attributes:
        op: ``get``, ``set``, ``del`` or ``clear``.
        pool: ``root`` (a per-env map) or ``recurrent``.
        env: the env of a root map; None for the recurrent map.
        key: the cache key (None for ``clear``).
        hit: for ``get``, whether an entry came back.
        size: the entry's valid length (``get`` hit, ``set``), else 0.
        slot: the pool slot written (``set``), else -1.
        evicted: for ``set`` through a manager pool, the key that left the map, if any.
    """

    op: str
    pool: str
    env: int | None
    key: int | None = None
    hit: bool = False
    size: int = 0
    slot: int = -1
    evicted: int | None = None


@dataclass(frozen=True, slots=True)
class AliasFinding:
    """A lookup that hit an entry which, when stored, shared tensor storage with ``other``
    (another live entry or a scratch buffer of the world model): what it returns is not what was
    stored for its key."""

    pool: str
    env: int | None
    key: int
    other: str

    def describe(self) -> str:
        where = self.pool if self.env is None else f"{self.pool}[env {self.env}]"
        return (f"lookup hit entry {where} key {self.key}, which shares tensor storage with "
                f"{self.other} (aliasing probe at store time)")


def _storages(kv: Any) -> set[int]:
    """Storage addresses of every layer's key and value tensors of an upstream KeysValues."""
    pointers = set()
    for layer in kv._keys_values:  # upstream's own layout: no public accessor exists
        for cache in (layer._k_cache, layer._v_cache):
            pointers.add(cache._cache.untyped_storage().data_ptr())
    return pointers


class _ObservedDict(dict):
    """An upstream lookup dict that reports its reads and writes to a log."""

    def __init__(self, data: dict, log: Callable[..., None], pool: str, env: int | None) -> None:
        super().__init__(data)
        self._log, self._pool, self._env = log, pool, env

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        self._log("get", self._pool, self._env, key, value)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._log("set", self._pool, self._env, key, value)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._log("del", self._pool, self._env, key, None)

    def clear(self) -> None:
        super().clear()
        self._log("clear", self._pool, self._env, None, None)


class CacheObserver:
    """Observes one upstream ``WorldModel``'s lookup structures; drain with :meth:`take`."""

    def __init__(self, world_model: Any, manager: bool) -> None:
        self.world_model = world_model
        self.manager = manager
        self.raw: list[RawOp] = []
        self.findings: list[AliasFinding] = []
        self.aliased: dict[tuple[str, int | None, int], str] = {}  # entry -> what it shares with
        self.num_aliased_stores = 0
        self.install()

    # ------------------------------------------------------------------ installation
    def install(self) -> None:
        """(Re)wrap every lookup structure; idempotent, so it can run before every call."""
        if self.manager:
            manager = self.world_model.kv_cache_manager
            for env, pool in enumerate(manager.init_pools):
                self._wrap_pool(pool, POOL_ROOT, env)
            self._wrap_pool(manager.recur_pool, POOL_RECURRENT, None)
            return
        wm = self.world_model
        envs = wm.past_kv_cache_init_infer_envs
        for env, table in enumerate(envs):
            if not isinstance(table, _ObservedDict):
                envs[env] = _ObservedDict(table, self._dict_op, POOL_ROOT, env)
        if not isinstance(wm.past_kv_cache_recurrent_infer, _ObservedDict):
            wm.past_kv_cache_recurrent_infer = _ObservedDict(wm.past_kv_cache_recurrent_infer,
                                                             self._dict_op, POOL_RECURRENT, None)

    def _wrap_pool(self, pool: Any, name: str, env: int | None) -> None:
        if "get" in vars(pool):
            return
        cls_get, cls_set, cls_clear = type(pool).get, type(pool).set, type(pool).clear

        def get(cache_key: int) -> Any:
            value = cls_get(pool, cache_key)
            self.raw.append(RawOp("get", name, env, cache_key, value is not None,
                                  value.size if value is not None else 0))
            self._check_read(name, env, cache_key, value is not None)
            return value

        def set_(cache_key: int, kv_cache: Any) -> int:
            before = set(pool._key_to_index)
            slot = cls_set(pool, cache_key, kv_cache)
            gone = before - set(pool._key_to_index) - {cache_key}
            self.raw.append(RawOp("set", name, env, cache_key, size=pool._pool[slot].size, slot=slot,
                                  evicted=min(gone) if gone else None))
            self._probe(name, env, cache_key)
            return slot

        def clear() -> None:
            cls_clear(pool)
            self.raw.append(RawOp("clear", name, env))
            self._forget(name, env)

        pool.get, pool.set, pool.clear = get, set_, clear

    # ------------------------------------------------------------------ old-path log
    def _pool_entry(self, pool: str, env: int | None, slot: int) -> Any:
        wm = self.world_model
        return wm.shared_pool_init_infer[env][slot] if pool == POOL_ROOT else wm.shared_pool_recur_infer[slot]

    def _dict_op(self, op: str, pool: str, env: int | None, key: Any, value: Any) -> None:
        if op == "get":
            entry = self._pool_entry(pool, env, value) if value is not None else None
            self.raw.append(RawOp("get", pool, env, key, entry is not None,
                                  entry.size if entry is not None else 0))
            self._check_read(pool, env, key, entry is not None)
        elif op == "set":
            self.raw.append(RawOp("set", pool, env, key, size=self._pool_entry(pool, env, value).size,
                                  slot=int(value)))
            self._probe(pool, env, key)
        else:
            self.raw.append(RawOp(op, pool, env, key))
            if op == "clear":
                self._forget(pool, env)

    # ------------------------------------------------------------------ aliasing probe
    def _live_entries(self) -> list[tuple[str, int | None, int, Any]]:
        """``(pool, env, key, KeysValues)`` for every key the lookup maps can return now."""
        entries = []
        if self.manager:
            manager = self.world_model.kv_cache_manager
            pools = [(POOL_ROOT, env, p) for env, p in enumerate(manager.init_pools)]
            pools.append((POOL_RECURRENT, None, manager.recur_pool))
            for name, env, pool in pools:
                entries += [(name, env, key, pool._pool[slot]) for key, slot in pool._key_to_index.items()]
            return entries
        wm = self.world_model
        for env, table in enumerate(wm.past_kv_cache_init_infer_envs):
            entries += [(POOL_ROOT, env, key, wm.shared_pool_init_infer[env][slot])
                        for key, slot in dict.items(table)]
        entries += [(POOL_RECURRENT, None, key, wm.shared_pool_recur_infer[slot])
                    for key, slot in dict.items(wm.past_kv_cache_recurrent_infer)]
        return entries

    def _probe(self, pool: str, env: int | None, key: int) -> None:
        """Note whether the entry just stored shares storage with anything it must not."""
        owners: dict[int, tuple[str, tuple | None]] = {}
        for name in SCRATCH_BUFFERS:
            buffer = getattr(self.world_model, name, None)
            if buffer is not None:
                owners.update({ptr: (f"scratch buffer {name}", None) for ptr in _storages(buffer)})
        stored = None
        for entry_pool, entry_env, entry_key, kv in self._live_entries():
            if (entry_pool, entry_env, entry_key) == (pool, env, key):
                stored = kv
                continue
            where = entry_pool if entry_env is None else f"{entry_pool}[env {entry_env}]"
            owners.update({ptr: (f"live entry {where} key {entry_key}", (entry_pool, entry_env, entry_key))
                           for ptr in _storages(kv)})
        self.aliased.pop((pool, env, int(key)), None)
        if stored is None:
            return
        for ptr in sorted(_storages(stored)):
            if ptr in owners:
                text, other = owners[ptr]
                self.aliased[(pool, env, int(key))] = text
                if other is not None:
                    where = pool if env is None else f"{pool}[env {env}]"
                    self.aliased[(other[0], other[1], int(other[2]))] = f"live entry {where} key {key}"
                self.num_aliased_stores += 1
                return

    def _check_read(self, pool: str, env: int | None, key: Any, hit: bool) -> None:
        other = self.aliased.get((pool, env, int(key))) if hit else None
        if other is not None:
            self.findings.append(AliasFinding(pool, env, int(key), other))

    def _forget(self, pool: str, env: int | None) -> None:
        self.aliased = {k: v for k, v in self.aliased.items()
                        if not (k[0] == pool and (env is None or k[1] == env))}

    # ------------------------------------------------------------------ draining
    def take(self) -> tuple[list[RawOp], list[AliasFinding]]:
        raw, findings = self.raw, self.findings
        self.raw, self.findings = [], []
        return raw, findings


def assemble_events(raw: list[RawOp], kind: str) -> list[CacheEvent]:
    """Map one root or recurrent call's raw operations onto kvmigrate cache events.

    A recurrent lookup reads the env's root map first and the recurrent map only on a miss, so a
    root-map miss waits for the recurrent read that follows it. Recurrent stores carry the env of
    their position in the batch (upstream stores envs in batch order). A ``del`` just before a
    ``set`` on the same map is that store's eviction (the old path evicts by hand).
    """
    events: list[CacheEvent] = []
    pending: RawOp | None = None
    deleted: dict[tuple[str, int | None], int] = {}
    num_recurrent_stores = 0
    path = "root" if kind == "root" else "recurrent"
    for op in raw:
        if pending is not None and not (op.op == "get" and op.pool == POOL_RECURRENT):
            events.append(Lookup(pending.env, int(pending.key), path, False, None, 1))
            pending = None
        if op.op == "get":
            if op.pool == POOL_ROOT and not op.hit and kind == "recurrent":
                pending = op
                continue
            env = op.env if pending is None else pending.env
            pending = None
            events.append(Lookup(env, int(op.key), path, op.hit, op.pool if op.hit else None,
                                 op.size if op.hit else 1))
        elif op.op == "del":
            deleted[(op.pool, op.env)] = int(op.key)
        elif op.op == "set":
            evicted = op.evicted if op.evicted is not None else deleted.pop((op.pool, op.env), None)
            env = op.env
            if op.pool == POOL_RECURRENT:
                env, num_recurrent_stores = num_recurrent_stores, num_recurrent_stores + 1
            events.append(Store(env, int(op.key), op.pool, op.slot,
                                evicted if evicted != op.key else None, op.size))
        elif op.op == "clear" and op.pool == POOL_RECURRENT and kind == "root":
            if not events or events[-1] != Clear(scope="recurrent", reason="after_root"):
                events.append(Clear(scope="recurrent", reason="after_root"))
    if pending is not None:
        events.append(Lookup(pending.env, int(pending.key), path, False, None, 1))
    return events
