"""KV tensor containers with explicit fill sizes (legacy-spec §2).

A ``Cache`` holds one of K or V for one layer: ``tensor`` is ``[B, H, T, head_dim]`` and only
positions ``[:size]`` along dim 2 are meaningful; the tail may hold anything (legacy
allocates with ``torch.empty`` and never zeroes, quirk 12).
"""

from __future__ import annotations

import torch

__all__ = ["Cache", "KVCache", "KeysValues"]


class Cache:
    """One layer's K (or V) buffer with a fill size.

    Attributes:
        tensor: storage ``[B, H, T, head_dim]``; may be re-pointed by callers that assemble
            batches (the legacy world model does exactly that).
        size: number of valid positions along dim 2.
    """

    __slots__ = ("num_samples", "num_heads", "max_tokens", "head_dim", "device", "dtype",
                 "tensor", "size")

    def __init__(self, num_samples: int, num_heads: int, max_tokens: int, embed_dim: int,
                 device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_samples = num_samples
        self.num_heads = num_heads
        self.max_tokens = max_tokens
        self.head_dim = embed_dim // num_heads
        self.device = torch.device(device)
        self.dtype = dtype
        self.reset()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, H, size, head_dim)`` using the stored sample count, as legacy does."""
        return (self.num_samples, self.num_heads, self.size, self.head_dim)

    def reset(self) -> None:
        """Fresh uninitialised storage and ``size = 0`` (no zeroing, as legacy)."""
        self.tensor = torch.empty(self.num_samples, self.num_heads, self.max_tokens, self.head_dim,
                                  device=self.device, dtype=self.dtype)
        self.size = 0

    def get(self) -> torch.Tensor:
        """View of the valid region ``[B, H, size, head_dim]``."""
        return self.tensor[:, :, : self.size, :]

    def update(self, x: torch.Tensor) -> None:
        """Append ``x: [B, H, tokens, head_dim]`` with the legacy even-shift overflow rule.

        When the append would overflow the buffer, the oldest positions are dropped, always an
        even number of them so obs/action token pairs stay aligned. The left shift goes through a
        temporary (the legacy overlapping in-place copy is version-dependent, spec §14.1).
        Positions are not re-embedded after a shift (legacy behaviour).
        """
        tokens = x.size(2)
        need = self.size + tokens
        if need > self.max_tokens:
            shift = need - self.max_tokens
            if shift % 2 == 1:
                shift += 1
            if shift >= self.size:
                self.tensor.zero_()
                self.size = 0
            else:
                kept = self.tensor[:, :, shift: self.size, :].clone()
                self.tensor[:, :, : self.size - shift, :] = kept
                self.size -= shift
        self.tensor[:, :, self.size: self.size + tokens, :] = x.detach()
        self.size += tokens


class KVCache:
    """One layer's pair of K and V caches with identical geometry."""

    __slots__ = ("k", "v")

    def __init__(self, num_samples: int, num_heads: int, max_tokens: int, embed_dim: int,
                 device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        self.k = Cache(num_samples, num_heads, max_tokens, embed_dim, device, dtype)
        self.v = Cache(num_samples, num_heads, max_tokens, embed_dim, device, dtype)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.k.shape

    @property
    def size(self) -> int:
        return self.k.size

    def reset(self) -> None:
        self.k.reset()
        self.v.reset()

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k.get(), self.v.get()

    def update(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k.update(k)
        self.v.update(v)


class KeysValues:
    """All layers' KV caches for a batch of ``num_samples`` sequences of up to ``max_tokens``."""

    __slots__ = ("layers", "num_samples", "num_heads", "max_tokens", "embed_dim", "device",
                 "dtype", "packed", "_packed_views", "_windows")

    def __init__(self, num_samples: int, num_heads: int, max_tokens: int, embed_dim: int,
                 num_layers: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32) -> None:
        self.num_samples = num_samples
        self.num_heads = num_heads
        self.max_tokens = max_tokens
        self.embed_dim = embed_dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.layers = tuple(KVCache(num_samples, num_heads, max_tokens, embed_dim, device, dtype)
                            for _ in range(num_layers))
        self.packed: torch.Tensor | None = None
        self._packed_views: tuple[torch.Tensor, ...] = ()
        self._windows: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_packed(cls, packed: torch.Tensor) -> "KeysValues":
        """A KeysValues whose layer tensors are views of ``packed: [L, 2, B, H, T, hd]``.

        Packing lets a whole container move in one tensor op (see ``copy_from``) instead of one
        op per layer and per K/V. Sizes start at 0.
        """
        num_layers, kv_pair, b, h, t, hd = packed.shape
        assert kv_pair == 2, f"packed tensor must be [L, 2, B, H, T, hd], got {list(packed.shape)}"
        out = cls.__new__(cls)
        out.num_samples, out.num_heads, out.max_tokens, out.embed_dim = b, h, t, h * hd
        out.device, out.dtype, out.packed = packed.device, packed.dtype, packed
        layers = []
        for index in range(num_layers):
            layer = KVCache.__new__(KVCache)
            for name, which in (("k", 0), ("v", 1)):
                cache = Cache.__new__(Cache)
                cache.num_samples, cache.num_heads, cache.max_tokens, cache.head_dim = b, h, t, hd
                cache.device, cache.dtype = packed.device, packed.dtype
                cache.tensor, cache.size = packed[index, which], 0
                setattr(layer, name, cache)
            layers.append(layer)
        out.layers = tuple(layers)
        out._packed_views = tuple(t for layer in layers for t in (layer.k.tensor, layer.v.tensor))
        out._windows = {}
        return out

    def window(self, start: int, stop: int) -> torch.Tensor:
        """The packed view of token positions ``[start, stop)``: ``[L, 2, B, H, stop-start, hd]``.

        Views are cached per window, so hot paths pay for slicing once (packed containers only).
        """
        view = self._windows.get((start, stop))
        if view is None:
            assert self.packed is not None, "window() needs a packed KeysValues (see from_packed)"
            view = self._windows[(start, stop)] = self.packed[..., start:stop, :]
        return view

    def __getitem__(self, index: int) -> KVCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def size(self) -> int:
        """Fill size of layer 0's K cache (0 when there are no layers), as legacy."""
        return self.layers[0].k.size if self.layers else 0

    @property
    def geometry(self) -> tuple[int, int, int, int, int]:
        """``(num_layers, B, H, T, head_dim)`` of the actual storage tensors."""
        t = self.layers[0].k.tensor
        return (len(self.layers), t.shape[0], t.shape[1], t.shape[2], t.shape[3])

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def clone(self) -> "KeysValues":
        """A deep copy: new storage holding the full tensors (garbage tail included) and sizes."""
        if not self.layers:
            raise ValueError("cannot clone a KeysValues with no layers")
        num_layers, b, h, t, hd = self.geometry
        out = KeysValues(b, h, t, h * hd, num_layers, self.device, self.dtype)
        out.copy_from(self)
        return out

    def copy_from(self, src: "KeysValues", *, valid_only: bool = False) -> None:
        """Copy ``src``'s K/V tensors and sizes into this container's own storage.

        Args:
            valid_only: copy only each layer's valid positions ``[:size]`` (the tail keeps
                whatever it held; only ``[:size]`` is ever read). Default: full tensors, garbage
                tail included, as the legacy copy helpers do.

        Raises:
            ValueError: if the geometries differ.
        """
        dst_packed, src_packed = self.as_packed(), src.as_packed()
        if (dst_packed is None or src_packed is None or dst_packed.shape != src_packed.shape) \
                and src.geometry != self.geometry:
            raise ValueError(f"KeysValues geometry mismatch: destination {self.geometry}, "
                             f"source {src.geometry} (layers, B, H, T, head_dim)")
        size = src.layers[0].k.size
        uniform = all(layer.k.size == size and layer.v.size == size for layer in src.layers)
        if dst_packed is not None and src_packed is not None and (not valid_only or uniform):
            if valid_only:
                self.window(0, size).copy_(src.window(0, size))  # one op, valid positions only
            else:
                dst_packed.copy_(src_packed)  # one op for every layer's K and V
        else:
            for dst_layer, src_layer in zip(self.layers, src.layers):
                for dst, source in ((dst_layer.k, src_layer.k), (dst_layer.v, src_layer.v)):
                    if valid_only:
                        dst.tensor[:, :, : source.size].copy_(source.tensor[:, :, : source.size])
                    else:
                        dst.tensor.copy_(source.tensor)
        for dst_layer, src_layer in zip(self.layers, src.layers):
            dst_layer.k.size = src_layer.k.size
            dst_layer.v.size = src_layer.v.size

    def as_packed(self) -> torch.Tensor | None:
        """The packed ``[L, 2, B, H, T, hd]`` tensor, or None if there is none or a layer tensor
        was re-pointed elsewhere since packing (an identity check per layer: cheap)."""
        if self.packed is None:
            return None
        views = iter(self._packed_views)
        for layer in self.layers:
            if layer.k.tensor is not next(views) or layer.v.tensor is not next(views):
                return None
        return self.packed

    def nbytes(self) -> int:
        """Bytes of storage held (K and V, all layers)."""
        return sum(layer.k.tensor.numel() * layer.k.tensor.element_size() * 2
                   for layer in self.layers)
