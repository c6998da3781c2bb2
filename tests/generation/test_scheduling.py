"""MaskedDiffusionScheduler: commit counts per step, selection, timesteps, noising and its config file."""

from __future__ import annotations

import pytest
import torch

from reference_sampler import transfer_counts
from transformers_mdlm import MaskedDiffusionScheduler, SamplingParameters


@pytest.mark.parametrize(
    ("num_masked", "steps", "expected"),
    [
        (32, 4, [8, 8, 8, 8]),
        (5, 4, [1, 1, 2, 1]),  # 3 * 0.5 = 1.5 rounds half to even: 2
        (3, 2, [2, 1]),
        (7, 3, [2, 2, 3]),  # 5 * 0.5 = 2.5 rounds to 2
        (2, 5, [1, 1]),  # steps that would commit nothing are dropped
        (1, 64, [1]),
        (10, 1, [10]),
        (0, 8, []),
    ],
)
def test_linear_counts_by_hand(num_masked, steps, expected):
    counts = MaskedDiffusionScheduler().get_num_transfer_tokens(torch.tensor([num_masked]), steps)
    assert counts[0].tolist() == expected


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_counts_match_reference_on_a_grid(schedule):
    scheduler = MaskedDiffusionScheduler(schedule=schedule)
    for n in range(0, 41):
        for steps in (1, 2, 3, 5, 7, 8, 13, 16, 32, 64):
            counts = scheduler.get_num_transfer_tokens(torch.tensor([n]), steps)[0].tolist()
            assert counts == transfer_counts([n], steps, schedule)[0]
            assert sum(counts) == n
            assert len(counts) <= min(n, steps)


def test_rows_with_different_mask_counts_are_padded_with_zeros():
    counts = MaskedDiffusionScheduler().get_num_transfer_tokens(torch.tensor([8, 2, 0]), 4)
    assert counts.tolist() == [[2, 2, 2, 2], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_cosine_commits_fewer_tokens_first_than_linear():
    n = torch.tensor([64])
    linear = MaskedDiffusionScheduler().get_num_transfer_tokens(n, 8)[0]
    cosine = MaskedDiffusionScheduler(schedule="cosine").get_num_transfer_tokens(n, 8)[0]
    assert cosine[0] < linear[0]
    assert cosine.sum() == linear.sum() == 64


def test_stochastic_transfer_is_binomial_and_reproducible():
    scheduler = MaskedDiffusionScheduler(stochastic_transfer=True)
    n = torch.full((4000,), 20)
    counts = scheduler.get_num_transfer_tokens(n, 4, generator=torch.Generator().manual_seed(0))
    assert (counts.sum(dim=1) == 20).all()
    first = counts[:, 0].double()
    assert abs(first.mean().item() - 5.0) < 0.15  # Binomial(20, 0.25): mean 5, sd of the mean ~0.03
    assert abs(first.var().item() - 3.75) < 0.4
    again = scheduler.get_num_transfer_tokens(n, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(counts, again)


def test_timesteps_are_decreasing_in_unit_interval():
    scheduler = MaskedDiffusionScheduler()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [1.0, 0.75, 0.5, 0.25]
    assert len(scheduler) == 4
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(0)


def _logits_favouring(tokens: list[int], strengths: list[float], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(1, len(tokens), vocab)
    for pos, (tok, s) in enumerate(zip(tokens, strengths, strict=True)):
        logits[0, pos, tok] = s
    return logits


def test_step_commits_the_most_confident_masked_positions():
    scheduler = MaskedDiffusionScheduler()
    sample = torch.tensor([[9, 0, 0, 0, 0]])  # 0 is the mask id here; position 0 is not masked
    logits = _logits_favouring([5, 6, 7, 8, 3], [9.0, 1.0, 4.0, 2.0, 3.0])
    out = scheduler.step(
        logits, 1.0, sample, sampling=SamplingParameters(mask_token_id=0), num_transfer_tokens=torch.tensor([2])
    )
    assert out.transfer_index.tolist() == [[False, False, True, False, True]]
    assert out.prev_sample.tolist() == [[9, 0, 7, 0, 3]]
    assert out.confidence[0, 0] == float("-inf")
    assert out.pred_logits.shape == logits.shape


def test_step_from_timestep_follows_the_schedule():
    scheduler = MaskedDiffusionScheduler()
    scheduler.set_timesteps(2)
    sample = torch.zeros(1, 3, dtype=torch.long)
    logits = _logits_favouring([5, 6, 7], [1.0, 3.0, 2.0])
    first = scheduler.step(logits, scheduler.timesteps[0], sample, sampling=SamplingParameters(mask_token_id=0))
    assert first.transfer_index.sum() == 2  # round(3 * 0.5) = 2
    second = scheduler.step(
        logits, scheduler.timesteps[1], first.prev_sample, sampling=SamplingParameters(mask_token_id=0)
    )
    assert second.transfer_index.sum() == 1
    assert (second.prev_sample != 0).all()


@pytest.mark.parametrize("timestep", [0.7, 0.26, 1.2, 0.0])
def test_step_refuses_a_time_off_the_grid(timestep):
    # 0.7 and 0.26 used to take the nearer step's count (0.75, 0.25) silently; diffusers' schedulers refuse them too.
    scheduler = MaskedDiffusionScheduler()
    scheduler.set_timesteps(4)
    logits = _logits_favouring([5, 6, 7], [1.0, 3.0, 2.0])
    sample = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"`timestep` must be one of `scheduler\.timesteps`"):
        scheduler.step(logits, timestep, sample, sampling=SamplingParameters(mask_token_id=0))
    for grid_time in scheduler.timesteps:  # float32 grid points, and the same times as Python floats, are accepted
        scheduler.step(logits, grid_time, sample, sampling=SamplingParameters(mask_token_id=0))
        scheduler.step(logits, float(grid_time), sample, sampling=SamplingParameters(mask_token_id=0))


def test_confidence_threshold_commits_all_confident_and_at_least_one():
    scheduler = MaskedDiffusionScheduler(confidence_threshold=0.5)
    sample = torch.zeros(1, 4, dtype=torch.long)
    logits = _logits_favouring([5, 6, 7, 8], [9.0, 0.5, 8.0, 1.0])
    out = scheduler.step(logits, 1.0, sample, sampling=SamplingParameters(mask_token_id=0))
    assert out.transfer_index.tolist() == [[True, False, True, False]]
    timid = _logits_favouring([5, 6, 7, 8], [0.1, 0.3, 0.2, 0.0])
    out = scheduler.step(timid, 1.0, sample, sampling=SamplingParameters(mask_token_id=0))
    assert out.transfer_index.tolist() == [[False, True, False, False]]


def test_config_round_trip(tmp_path):
    scheduler = MaskedDiffusionScheduler(
        schedule="cosine", remasking="margin", stochastic_transfer=True, confidence_threshold=0.9
    )
    scheduler.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = MaskedDiffusionScheduler.from_pretrained(tmp_path)
    assert dict(loaded.config) == dict(scheduler.config)
    assert loaded.config.schedule == "cosine" and loaded.config.confidence_threshold == 0.9


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"schedule": "quadratic"}, "schedule"),
        ({"remasking": "best"}, "remasking"),
        ({"confidence_threshold": 1.5}, "confidence_threshold"),
        ({"stochastic_transfer": "yes"}, "stochastic_transfer"),
    ],
)
def test_bad_scheduler_config(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        MaskedDiffusionScheduler(**kwargs)


def test_add_noise_masks_a_fraction_t_of_the_maskable_tokens():
    scheduler = MaskedDiffusionScheduler()
    clean = torch.randint(5, 50, (4, 4000), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    maskable = torch.ones_like(clean, dtype=torch.bool)
    maskable[:, :100] = False
    noisy, masked = scheduler.add_noise(
        clean, t, mask_token_id=4, maskable=maskable, generator=torch.Generator().manual_seed(1)
    )
    rates = masked[:, 100:].double().mean(dim=1)
    assert torch.allclose(rates, t.double(), atol=0.03)
    assert not masked[:, :100].any()
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], 4))
    assert torch.equal(noisy[~masked], clean[~masked])
