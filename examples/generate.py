"""Generate Turkish text offline with the package's embedded model (the README's main command).

Run: `python examples/generate.py`

`pipeline("masked-diffusion")` with no model loads the small Turkish model shipped inside the package; no network is
needed. It shows a chat answer, a completion, a filled-in blank, and the canvas of one answer being denoised step by
step. The model is tiny (about 9M parameters): it writes Turkish words, rarely a correct or relevant sentence.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the package itself

import transformers_mdlm  # noqa: F401  (registers the "masked-diffusion" task; import it before `pipeline`)

# isort: split
from transformers import pipeline


def main() -> None:
    pipe = pipeline("masked-diffusion")  # the embedded model
    model = pipe.model
    print(f"model: {model.name_or_path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)\n")

    question = [
        {"role": "user", "content": "Aşağıdaki cümledeki özel adları listeleyin: Atatürk 1919'da Samsun'a çıktı."}
    ]
    record = pipe(question, return_history=True)[0]
    print("chat:", record["generated_text"][-1]["content"])

    completion = pipe("Türkiye'nin en büyük şehri", max_new_tokens=24, steps=24, block_length=24)[0]
    print("completion:", completion["generated_text"])  # the prompt and its continuation, as in transformers

    mask = pipe.tokenizer.mask_token
    print("infilling:", pipe(f"Ankara Türkiye'nin {mask} şehridir.", steps=2)[0]["generated_text"])

    every = max(1, (len(record["history"]) - 1) // 8)  # about 8 frames, whatever the number of steps
    print(f"\nthe chat answer, denoised in {len(record['history']) - 1} steps ({mask} = still masked):")
    for step, frame in enumerate(record["history"]):
        if step % every == 0 or step == len(record["history"]) - 1:
            answer = frame.split("[Answer]")[-1].strip().replace("\n", " ")
            print(f"  step {step:3d}: {answer[:150]}")


if __name__ == "__main__":
    main()
