"""A deliberately naive statement of the reference sampler (Diffutron's authors), written from its specification.

It follows `../shared/DESIGN.md` §3 step by step, in the reference's own layout: prompts given as a list, a canvas
right-padded with EOS, logits at every position, Python loops over the batch. The tests compare the package's
vectorised decoder with it token for token; nothing in the package imports it.
"""

from __future__ import annotations

import math

import torch


def alpha(t: float, schedule: str) -> torch.Tensor:
    t32 = torch.tensor(t, dtype=torch.float32)
    if schedule == "linear":
        return 1 - t32
    return 1 - torch.cos((math.pi / 2) * (1 - t32))


def transfer_counts(num_masked: list[int], steps: int, schedule: str = "linear") -> list[list[int]]:
    """Per row: round(n_left * (1 - (1 - alpha(s)) / (1 - alpha(t)))) per step, zeros dropped, rows padded to a width."""
    rows = []
    for n in num_masked:
        left = n
        counts = []
        for j in range(steps):
            t, s = (steps - j) / steps, (steps - j - 1) / steps
            stay = ((1 - alpha(s, schedule)) / (1 - alpha(t, schedule))).item()
            k = int(torch.round(torch.tensor(left, dtype=torch.float64) * (1 - stay)).item())
            k = min(k, left)
            counts.append(k)
            left -= k
            if left == 0:
                break
        rows.append([k for k in counts if k > 0])
    width = max((len(r) for r in rows), default=0)
    return [r + [0] * (width - len(r)) for r in rows]


def _logits(model, x, attention_mask):
    return model(input_ids=x, attention_mask=attention_mask).logits


def _step_logits(model, x, attention_mask, given, cfg_scale, mask_id):
    if cfg_scale > 0:
        uncond = x.clone()
        uncond[given] = mask_id
        both = torch.cat([x, uncond])
        mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        cond_logits, uncond_logits = _logits(model, both, mask).chunk(2)
        return uncond_logits + (cfg_scale + 1) * (cond_logits - uncond_logits)
    return _logits(model, x, attention_mask)


def _penalise(logits, x, penalty, mask_id, eos_id):
    if penalty == 1.0:
        return logits
    for b in range(x.shape[0]):
        ids = torch.unique(x[b])
        ids = ids[(ids != mask_id) & (ids != eos_id)]
        if ids.numel() == 0:
            continue
        chunk = logits[b, :, ids]
        logits[b, :, ids] = torch.where(chunk > 0, chunk / penalty, chunk * penalty)
    return logits


def _propose(logits, temperature, remasking):
    if temperature == 0:
        x0 = logits.argmax(-1)
    else:
        l64 = logits.to(torch.float64)
        x0 = (l64.exp() / (-torch.log(torch.rand_like(l64))) ** temperature).argmax(-1)
    if remasking == "low_confidence":
        conf = torch.softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)
    else:
        conf = torch.rand(x0.shape, device=x0.device)
    return x0, conf


def _commit(x, x0, conf, counts_for_step, mask_id):
    masked = x == mask_id
    x0 = torch.where(masked, x0, x)
    conf = torch.where(masked, conf, torch.tensor(-math.inf))
    chosen = torch.zeros_like(x, dtype=torch.bool)
    for b in range(x.shape[0]):
        k = min(int(counts_for_step[b]), int(masked[b].sum()))
        if k > 0:
            chosen[b, torch.topk(conf[b], k).indices] = True
    x[chosen] = x0[chosen]


@torch.no_grad()
def reference_generate(
    model,
    prompts: list[list[int]],
    *,
    mask_id: int,
    eos_id: int,
    max_new_tokens: int,
    steps: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    repetition_penalty: float = 1.2,  # the authors' default
    schedule: str = "linear",
) -> torch.Tensor:
    """Returns the canvas `(batch, max_prompt + max_new_tokens)`: prompt, new tokens, EOS padding."""
    lengths = [len(p) for p in prompts]
    width = max(lengths) + max_new_tokens
    x = torch.full((len(prompts), width), eos_id, dtype=torch.long, device=model.device)
    for b, p in enumerate(prompts):
        x[b, : lengths[b]] = torch.tensor(p, dtype=torch.long)
        x[b, lengths[b] : lengths[b] + max_new_tokens] = mask_id
    attention_mask = (x != eos_id).long() if len(prompts) > 1 else None
    given = (x != mask_id) & (x != eos_id)
    num_blocks = math.ceil(max_new_tokens / block_length)
    per_block = math.ceil(steps / num_blocks)
    for blk in range(num_blocks):
        n = []
        for b in range(len(prompts)):
            start = lengths[b] + blk * block_length
            end = min(start + block_length, lengths[b] + max_new_tokens)
            n.append(int((x[b, start:end] == mask_id).sum()))
        counts = transfer_counts(n, per_block, schedule)
        for i in range(len(counts[0]) if counts else 0):
            if not bool((x == mask_id).any()):
                break
            logits = _step_logits(model, x, attention_mask, given, cfg_scale, mask_id)
            logits = _penalise(logits, x, repetition_penalty, mask_id, eos_id)
            x0, conf = _propose(logits, temperature, remasking)
            for b in range(len(prompts)):
                conf[b, lengths[b] + (blk + 1) * block_length :] = -math.inf
            _commit(x, x0, conf, [row[i] for row in counts], mask_id)
    return x


@torch.no_grad()
def reference_infill(
    model,
    inputs: list[list[int]],
    *,
    mask_id: int,
    eos_id: int,
    steps: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    repetition_penalty: float = 1.2,  # the authors' default
) -> torch.Tensor:
    """Fills the masks of each input; returns `(batch, max_length)` right-padded with EOS."""
    lengths = [len(t) for t in inputs]
    width = max(lengths)
    x = torch.full((len(inputs), width), eos_id, dtype=torch.long, device=model.device)
    for b, t in enumerate(inputs):
        x[b, : lengths[b]] = torch.tensor(t, dtype=torch.long)
    attention_mask = (x != eos_id).long()
    given = (x != mask_id) & (x != eos_id)
    num_blocks = math.ceil(width / block_length)
    per_block = math.ceil(steps / num_blocks)
    for blk in range(num_blocks):
        start, stop = blk * block_length, min((blk + 1) * block_length, width)
        widths = [max(0, min(lengths[b], stop) - start) for b in range(len(inputs))]
        n = [int((x[b, start : start + widths[b]] == mask_id).sum()) for b in range(len(inputs))]
        counts = transfer_counts(n, per_block)
        for i in range(len(counts[0]) if counts else 0):
            if not bool((x == mask_id).any()):
                break
            logits = _step_logits(model, x, attention_mask, given, cfg_scale, mask_id)
            logits = _penalise(logits, x, repetition_penalty, mask_id, eos_id)
            x0, conf = _propose(logits, temperature, remasking)
            for b in range(len(inputs)):
                conf[b, :start] = -math.inf
                conf[b, start + widths[b] :] = -math.inf
            _commit(x, x0, conf, [row[i] for row in counts], mask_id)
    return x
