"""The uncached reference world model: full recomputation from the recorded context."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import first_actions, make_config, make_legacy, make_obs
from reference.context import SearchTree, window_length
from reference.distance import closer_side, distance_from_reference, max_distance
from reference.world_model import UncachedWorldModel
from unizero.world_model import InputError

OUTPUTS = ("latent", "reward_logits", "policy_logits", "value_logits")


def make_reference(**overrides) -> UncachedWorldModel:
    model = UncachedWorldModel(make_config(**overrides))
    model.record_events(True)
    return model


def max_error(first, second) -> float:
    return max(float((first.as_dict()[name] - second.as_dict()[name]).abs().max()) for name in OUTPUTS)


def root(model, step: int, rows: int = 1):
    """Root call ``step`` of a fixed observation stream (``step`` 0 is a first step)."""
    last = make_obs(100 + step - 1, rows) if step else np.zeros((rows, 4), np.float32)
    acts = first_actions(rows) if step == 0 else [step % 3] * rows
    return model.initial_inference(last, acts, make_obs(100 + step, rows), np.zeros(rows, np.int64))


def expand(model, parent_latents: torch.Tensor, action: int, depth: int):
    latent = parent_latents.detach().cpu().numpy().astype(np.float32)
    rows = latent.shape[0]
    return model.recurrent_inference(latent, [action] * rows, 0, [depth] * rows, np.zeros(rows, np.int64))


def test_window_length_is_c_minus_one_rounded_down_to_odd() -> None:
    assert [window_length(c) for c in (3, 4, 8, 9)] == [1, 3, 7, 7]


def test_a_first_step_root_equals_legacy() -> None:
    legacy, reference = make_legacy(), make_reference()
    assert max_error(root(legacy, 0, rows=2), root(reference, 0, rows=2)) < 1e-6


def test_untrimmed_unpadded_calls_equal_legacy_a_full_forward_being_what_its_cache_holds() -> None:
    legacy, reference = make_legacy(), make_reference()
    outputs = []
    for model in (legacy, reference):
        seq = [root(model, 0), root(model, 1)]            # context 1, then 3 tokens
        seq.append(expand(model, seq[-1].latent, 2, 1))  # 3 + 2 = 5 tokens
        seq.append(expand(model, seq[-1].latent, 0, 2))  # 5 + 2 = 7 = C - 1, no trim yet
        outputs.append(seq)
    for legacy_out, reference_out in zip(*outputs):
        assert max_error(legacy_out, reference_out) < 1e-5


def test_past_legacy_trim_the_reference_departs_by_design() -> None:
    legacy, reference = make_legacy(), make_reference()
    # Root contexts grow 1, 3, 5, 7; legacy stores the 7-token one trimmed to 5.
    legacy_roots, reference_roots = ([root(model, step) for step in range(4)]
                                     for model in (legacy, reference))
    assert max_error(legacy_roots[2], reference_roots[2]) < 1e-5
    assert max_error(legacy_roots[3], reference_roots[3]) < 1e-5  # that forward saw all 7
    after_trim = [root(model, 4) for model in (legacy, reference)]
    assert max_error(*after_trim) > 1e-4


def test_the_reference_emits_no_cache_events() -> None:
    reference = make_reference()
    out = root(reference, 0, rows=2)
    expand(reference, out.latent, 1, 1)
    reference.clear_caches()
    assert reference.take_events() == []


def test_clears_do_not_change_an_uncached_result() -> None:
    plain, cleared = make_reference(), make_reference()
    for step in range(3):
        root(plain, step)
        root(cleared, step)
    cleared.clear_caches(reason="periodic")
    cleared.clear_root_cache(0)
    cleared.recompute_pos_emb_diff_and_clear_cache()
    assert max_error(root(plain, 3), root(cleared, 3)) == 0.0


def test_a_weight_update_reaches_the_whole_context() -> None:
    updated, fresh = make_reference(), make_reference(weight_seed=7)
    for step in range(3):
        root(updated, step)
    updated.load_weights(fresh.net.state_dict())
    for step in range(3):
        root(fresh, step)
    assert max_error(root(updated, 3), root(fresh, 3)) == 0.0


def test_a_root_whose_last_obs_does_not_continue_the_history_restarts_there() -> None:
    reference, restarted = make_reference(), make_reference()
    root(reference, 0)
    other = make_obs(999, 1)
    out = reference.initial_inference(other, [1], make_obs(101, 1), [0])
    expected = restarted.initial_inference(other, [1], make_obs(101, 1), [0])  # no history at all
    assert max_error(out, expected) == 0.0
    assert reference.stats()["root_restarted"] == restarted.stats()["root_restarted"] == 1


def test_recorded_latents_identify_parents_by_their_bytes() -> None:
    reference = make_reference()
    out = root(reference, 0, rows=2)
    child = expand(reference, out.latent, 1, 1)
    recorded = child.latent.numpy() + np.float32(0.5)  # what a cached producer might have returned
    reference.note_recorded_latents(recorded)
    expand(reference, torch.from_numpy(recorded), 2, 2)
    parents = [parent for parent, _ in reference.last_expansions]
    assert [p.action for p in parents] == [1, 1] and [p.depth for p in parents] == [1, 1]
    assert reference.stats() == {"parent_exact": 4, "parent_nearest": 0, "parent_orphan": 0,
                                 "root_continued": 0, "root_restarted": 0}


def test_without_recorded_latents_the_nearest_node_of_the_parents_depth_is_taken() -> None:
    reference = make_reference()
    out = root(reference, 0)
    first = expand(reference, out.latent, 0, 1)
    expand(reference, out.latent, 1, 1)
    near_first = first.latent.numpy() + np.float32(1e-3)
    expand(reference, torch.from_numpy(near_first), 2, 2)
    (parent, _), = reference.last_expansions
    assert parent.action == 0 and reference.stats()["parent_nearest"] == 1


def test_a_parent_no_tree_knows_becomes_an_orphan_context_of_that_latent_alone() -> None:
    reference = make_reference()
    root(reference, 0)
    stranger = np.random.default_rng(5).standard_normal((1, 16)).astype(np.float32)
    reference.recurrent_inference(stranger, [1], 0, [9], [0])
    (parent, _), = reference.last_expansions
    assert parent.orphan and reference.stats()["parent_orphan"] == 1


def test_note_recorded_latents_rejects_a_wrong_row_count_naming_the_argument() -> None:
    reference = make_reference()
    root(reference, 0, rows=2)
    with pytest.raises(InputError, match=r"latents: expected float32 \[2, 16\]"):
        reference.note_recorded_latents(np.zeros((1, 16), np.float32))


def test_reanalysis_roots_do_not_replace_the_live_histories() -> None:
    plain, reanalysed = make_reference(), make_reference()
    for step in range(3):
        root(plain, step)
        root(reanalysed, step)
    reanalysed.set_reanalyze_phase(True)
    replay_root = root(reanalysed, 0)
    expand(reanalysed, replay_root.latent, 1, 1)
    reanalysed.set_reanalyze_phase(False)
    assert max_error(root(plain, 3), root(reanalysed, 3)) == 0.0


def test_search_tree_ties_go_to_the_earliest_node() -> None:
    tree = SearchTree.rooted(np.zeros(4, np.float32))
    root_node = tree.nodes[0]
    a = tree.add_child(root_node, 0, np.ones(4, np.float32))
    tree.add_child(root_node, 1, -np.ones(4, np.float32))
    found, how = tree.find_parent(np.full(4, 0.5, np.float32) - np.float32(0.5), 1)
    assert (found, how) == (a, "nearest")


def test_distance_is_the_max_abs_error_per_shared_output() -> None:
    found = distance_from_reference(
        {"latent": np.array([[1.0, 2.0]]), "value_logits": np.zeros((1, 3)), "only_here": np.ones(1)},
        {"latent": np.array([[1.5, 1.0]]), "value_logits": np.zeros((1, 2))})
    assert found == {"latent": 1.0, "value_logits": float("inf")}
    assert distance_from_reference({"x": np.array([np.nan])}, {"x": np.array([0.0])}) == {"x": float("inf")}


def test_the_closer_side_is_the_one_with_the_smaller_worst_distance() -> None:
    assert closer_side({"latent": 0.1}, {"latent": 0.3}) == "control"
    assert closer_side({"latent": 0.3, "value_logits": 0.0}, {"latent": 0.1}) == "candidate"
    assert closer_side({"latent": 0.2}, {"latent": 0.2 + 1e-9}) == "tie"


def test_a_closed_loop_parent_is_found_by_the_references_own_latent_after_recorded_naming() -> None:
    reference = make_reference()
    out = root(reference, 0)
    child = expand(reference, out.latent, 1, 1)
    reference.note_recorded_latents(child.latent.numpy() + np.float32(0.25))
    expand(reference, child.latent, 2, 2)  # its own prediction, as a closed loop feeds it
    (parent, _), = reference.last_expansions
    assert parent.action == 1 and reference.stats()["parent_exact"] == 2


def test_the_max_distance_is_unmeasured_when_not_finite_or_nothing_is_shared() -> None:
    reference = {"latent": np.zeros((1, 2)), "value_logits": np.zeros((1, 3))}
    assert max_distance({"latent": np.array([[0.5, -2.0]]), "value_logits": np.ones((1, 3))},
                        reference) == 2.0
    assert max_distance({"latent": np.array([[np.inf, 0.0]])}, reference) is None
    assert max_distance({}, reference) is None
