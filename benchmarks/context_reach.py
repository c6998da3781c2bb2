"""How far a masked diffusion model reads: the change in its prediction at a masked position when one more token, at
distance d, is masked too.

    python benchmarks/context_reach.py --model src/transformers_mdlm/default_model

For positions of validation text, the script masks the position, reads the model's distribution there, then also
masks the token d positions away and reports the mean KL divergence between the two distributions (nats). A model
that uses its context shows clear values beyond its neighbours; one that reads only its neighbours shows about 0 from
d = 2 on. (The embedded model v8, 20 positions: 0.74 and 1.05 nats at d = -1 and +1, 0.003-0.020 from |d| = 2 to 40.)

`--windows` measures the same from the other side, on validation lines of at least 100 tokens (coherent paragraphs,
mostly Atatürk's speeches): the model's loss (nats) at a masked position when it sees its whole line, and when it sees
only the tokens within r positions (the rest masked). A model that reads far keeps losing when r shrinks. (v8, 6 lines,
76 positions: whole line 4.69, r = 24 4.67, r = 8 4.72, r = 3 4.82, r = 1 5.28: it reads about 8 tokens each way.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from transformers_mdlm import AutoModelForMaskedDiffusion

DISTANCES = (-40, -20, -10, -5, -3, -2, -1, 1, 2, 3, 5, 10, 20, 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="src/transformers_mdlm/default_model")
    parser.add_argument("--tokenizer", default=None, help="defaults to the model's")
    parser.add_argument("--data-dir", default="../shared/data/turkish")
    parser.add_argument("--positions", type=int, default=20, help="masked positions averaged over")
    parser.add_argument("--windows", action="store_true", help="the loss by visible window instead (see above)")
    args = parser.parse_args()
    model = AutoModelForMaskedDiffusion.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    mask_id = model.generation_config.mask_token_id
    lines = (Path(args.data_dir) / "corpus" / "validation.txt").read_text(encoding="utf-8").splitlines()
    if args.windows:
        print(json.dumps({"model": args.model, **loss_by_window(model, tokenizer, lines, mask_id)}))
        return
    span = max(DISTANCES) + 2 * args.positions + max(DISTANCES)
    ids = tokenizer(" ".join(lines), add_special_tokens=False)["input_ids"][: min(span, model.max_sequence_length())]
    tokens = torch.tensor([ids])
    positions = range(max(DISTANCES), max(DISTANCES) + 2 * args.positions, 2)
    if max(positions) + max(DISTANCES) >= tokens.shape[1]:
        raise ValueError(f"The validation text is too short for {args.positions} positions: {tokens.shape[1]} tokens.")

    def log_probs(masked: list[int], position: int) -> torch.Tensor:
        inputs = tokens.clone()
        inputs[0, masked] = mask_id
        with torch.inference_mode():
            return torch.log_softmax(model(input_ids=inputs).logits[0, position].float(), dim=-1)

    reach = {}
    for distance in DISTANCES:
        total = 0.0
        for position in positions:
            alone = log_probs([position], position)
            both = log_probs([position, position + distance], position)
            total += float((alone.exp() * (alone - both)).sum())
        reach[distance] = round(total / len(positions), 4)
    print(json.dumps({"model": args.model, "positions": len(positions), "kl_nats_by_distance": reach}))


def loss_by_window(model, tokenizer, lines: list[str], mask_id: int, radii=(1, 3, 8, 24)) -> dict:
    """Mean loss at a masked position of long lines, seeing the whole line or only `r` tokens each way."""
    rows = [tokenizer(line, add_special_tokens=False)["input_ids"][: model.max_sequence_length()] for line in lines]
    rows = [torch.tensor(row) for row in rows if len(row) >= 100]
    totals, count = {"whole line": 0.0, **{f"r={r}": 0.0 for r in radii}}, 0
    for row in rows:
        for position in range(30, len(row) - 30, 7):
            count += 1
            for name, radius in [("whole line", None), *((f"r={r}", r) for r in radii)]:
                inputs = row.clone()
                if radius is not None:
                    visible = torch.zeros(len(row), dtype=torch.bool)
                    visible[max(0, position - radius) : position + radius + 1] = True
                    inputs[~visible] = mask_id
                inputs[position] = mask_id
                with torch.inference_mode():
                    logits = model(input_ids=inputs[None]).logits[0, position].float()
                totals[name] -= float(torch.log_softmax(logits, dim=-1)[row[position]])
    if not count:
        raise ValueError("No validation line has 100 tokens or more.")
    return {"lines": len(rows), "positions": count, "loss_nats": {k: round(v / count, 3) for k, v in totals.items()}}


if __name__ == "__main__":
    main()
