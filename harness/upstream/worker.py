"""The upstream worker: runs inside ``.venv-lightzero`` with one LightZero tree on ``sys.path``.

Started by :class:`harness.upstream.engine.UpstreamEngine` through an execnet gateway. Every
message either way is the bytes of one trace record (``harness.trace.codec.encode_record``):
JSON metadata plus raw little-endian arrays, never pickle. The first message builds the model;
each later one is a call (``root``, ``recurrent``, ``clear``, ``weights``) or a service request
(``noop`` for the overhead probe, ``state`` for the current weights); each reply is a ``result``
record with outputs under ``out/``, cache events and aliasing findings in ``meta``.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import torch

from harness.calls import ClearCall, RecurrentCall, RootCall, WeightsCall, call_from_record
from harness.trace.codec import decode_record, encode_record
from harness.upstream.observe import CacheObserver, assemble_events
from harness.upstream.widen import fit_state_dict
from unizero.events import Clear, event_to_dict

__all__ = ["UpstreamModel", "serve"]


def _build(spec: dict[str, Any]) -> Any:
    """Upstream's vector tokenizer and ``WorldModel``, built directly (``UniZeroModel`` raises
    TypeError for vector observations at these commits)."""
    from easydict import EasyDict
    from lzero.model.common import RepresentationNetworkMLP
    from lzero.model.unizero_world_models.tokenizer import Tokenizer
    from lzero.model.unizero_world_models.world_model import WorldModel

    cfg = EasyDict(spec["world_model_cfg"])
    torch.manual_seed(spec["weight_seed"])
    encoder = RepresentationNetworkMLP(spec["obs_dim"], hidden_channels=cfg.embed_dim, num_layers=2,
                                       norm_type="LN", group_size=cfg.group_size,
                                       final_norm_option_in_encoder=cfg.final_norm_option_in_encoder)
    tokenizer = Tokenizer(encoder=encoder, decoder=None, with_lpips=False, obs_type="vector")
    world_model = WorldModel(config=cfg, tokenizer=tokenizer)
    if spec["random_init"]:
        generator = torch.Generator().manual_seed(spec["weight_seed"])
        with torch.no_grad():
            for name, param in world_model.named_parameters():
                if param.dim() >= 2 or name.endswith("bias"):
                    param.copy_(torch.randn(param.shape, generator=generator) * spec["init_std"])
    world_model.eval()
    world_model.precompute_pos_emb_diff_kv()
    return world_model


def _outputs(latent: torch.Tensor, reward: Any, policy: torch.Tensor, value: torch.Tensor,
             bins: int) -> dict[str, np.ndarray]:
    batch = latent.shape[0]
    if not isinstance(reward, torch.Tensor) or reward.numel() == 0:  # a first root step: no action token
        reward = torch.zeros(batch, bins)
    return {name: tensor.detach().reshape(batch, -1).cpu().numpy().astype(np.float32, copy=False)
            for name, tensor in (("out/latent", latent), ("out/reward_logits", reward),
                                 ("out/policy_logits", policy), ("out/value_logits", value))}


class UpstreamModel:
    """One upstream world model and its observer; applies decoded calls."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.manager = bool(spec["world_model_cfg"]["use_new_cache_manager"])
        self.world_model = _build(spec)
        if self.manager and not hasattr(self.world_model, "kv_cache_manager"):
            raise ValueError("this LightZero tree has no KVCacheManager (use_new_cache_manager "
                             "is unknown to it); use the 'lightzero:' engine for it")
        self.observer = CacheObserver(self.world_model, self.manager)

    def apply(self, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Apply one decoded call record; return the reply's metadata (events, aliasing findings)
        and its ``out/`` arrays."""
        call = call_from_record(0, kind, meta, arrays, where="worker").call
        self.observer.install()
        self.observer.take()
        wm, outputs, events = self.world_model, {}, []
        with torch.no_grad():
            if isinstance(call, RootCall):
                _, latent, reward, policy, value = wm.forward_initial_inference(
                    {"obs": torch.from_numpy(np.array(call.last_obs)),
                     "action": [int(a) for a in call.last_actions],
                     "current_obs": torch.from_numpy(np.array(call.current_obs))},
                    np.array(call.start_pos))
                outputs = _outputs(latent, reward, policy, value, wm.config.support_size)
            elif isinstance(call, RecurrentCall):
                latent_in = np.ascontiguousarray(call.latent_state, dtype=np.float32)[:, None, :]
                actions = torch.from_numpy(np.array(call.actions, dtype=np.int64))
                _, latent, reward, policy, value = wm.forward_recurrent_inference(
                    [(latent_in, actions)], call.simulation_index,
                    [int(d) for d in call.search_depth], np.array(call.start_pos))
                outputs = _outputs(latent, reward, policy, value, wm.config.support_size)
            elif isinstance(call, ClearCall):
                events = [self._clear(call)]
            elif isinstance(call, WeightsCall):
                state = fit_state_dict(wm.state_dict(), call.state)
                wm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                   strict=True)
                wm.precompute_pos_emb_diff_kv()
            else:
                raise ValueError(f"call kind {kind!r} has no upstream counterpart")
        raw, findings = self.observer.take()
        if kind in ("root", "recurrent"):
            events = assemble_events(raw, kind)
        meta_out = {"events": [event_to_dict(e) for e in events],
                    "aliasing": [{"pool": f.pool, "env": f.env, "key": f.key, "other": f.other,
                                  "text": f.describe()} for f in findings]}
        return meta_out, outputs

    def _clear(self, call: ClearCall) -> Clear:
        """The policy's own clears: ``clear_caches``, one env's root map, or the epoch hook."""
        wm = self.world_model
        if call.op == "all":
            wm.clear_caches()
            return Clear(scope="all", reason=call.reason)
        if call.op == "root_env":
            if self.manager:
                wm.kv_cache_manager.init_pools[call.env].clear()
            else:
                wm.past_kv_cache_init_infer_envs[call.env].clear()
            return Clear(scope="root_env", reason=call.reason, env=call.env)
        wm.precompute_pos_emb_diff_kv()
        wm.clear_caches()
        return Clear(scope="all", reason="epoch")

    def state(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer, as ``w/<name>`` arrays (a weights record's layout)."""
        return {f"w/{k}": v.detach().cpu().numpy().copy() for k, v in self.world_model.state_dict().items()}


def _reply(kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    return encode_record(kind, meta, arrays)


def serve(channel: Any) -> None:
    """Answer records on ``channel`` until it closes. The first record (``init``) builds the model."""
    logging.disable(logging.WARNING)  # upstream logs per lookup; its import-time notices are noise
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # the same thread count in every worker: comparable, reproducible
    kind, meta, _ = decode_record(channel.receive())
    assert kind == "init", f"the first worker message must be 'init', got {kind!r}"
    try:
        model = UpstreamModel(meta["spec"])
    except Exception as exc:  # noqa: BLE001 - reported to the client in one line
        channel.send(_reply("error", {"error": f"{type(exc).__name__}: {exc}"}, {}))
        return
    channel.send(_reply("ready", {"torch": torch.__version__}, {}))
    for message in channel:
        kind, meta, arrays = decode_record(message)
        if kind == "noop":
            channel.send(_reply("result", {}, {}))
            continue
        if kind == "state":
            channel.send(_reply("result", {}, model.state()))
            continue
        start = time.perf_counter()
        try:
            meta_out, outputs = model.apply(kind, meta, arrays)
        except Exception as exc:  # noqa: BLE001 - an engine failure is an observation to report
            model.observer.take()
            meta_out, outputs = {"events": [], "aliasing": [], "error": f"{type(exc).__name__}: {exc}"}, {}
        meta_out["elapsed_s"] = time.perf_counter() - start
        channel.send(_reply("result", meta_out, outputs))
