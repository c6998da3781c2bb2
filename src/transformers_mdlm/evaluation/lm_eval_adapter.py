"""An lm-evaluation-harness model class for masked diffusion models, registered as `mdlm`.

    lm_eval --model mdlm --model_args pretrained=diffutron,num_samples=32 --tasks xcopa_tr

Importing this module (which needs the optional `lm-eval` extra) registers the class. Log-likelihoods are minus the
evidence bound (a lower bound; see `transformers_mdlm.evaluation.likelihood`), so `loglikelihood` answers what
lm-eval's multiple-choice and perplexity tasks need; `is_greedy` is whether the continuation equals the greedy
infilling of its masked tokens. Requests are tokenized by lm-eval's `TemplateLM` (the context's trailing whitespace
moves to the continuation, the joined text is tokenized whole; an empty context becomes the BOS token, else EOS, as
lm-eval's Hugging Face model does). `generate_until` runs `model.generate` and cuts at the stop strings.
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from transformers.utils import logging

from ..validation import check_int
from .likelihood import evidence_bound

logger = logging.get_logger(__name__)


@register_model("mdlm", "masked-diffusion")
class MaskedDiffusionLM(TemplateLM):
    """lm-eval adapter over any model that `AutoModelForMaskedDiffusion` loads.

    Args:
        pretrained: folder, Hub id or alias of the model (or a loaded model with `tokenizer=`).
        num_samples: Monte-Carlo draws of the evidence bound per request. seed: their seed.
        max_length: longest scored window, in tokens (default: the model's positions).
        generation kwargs: any `MaskedDiffusionGenerationConfig` parameter, used by `generate_until`.
    """

    def __init__(
        self,
        pretrained: Any = None,
        tokenizer: Any = None,
        num_samples: int = 32,
        seed: int = 0,
        batch_size: int | str = 64,
        max_length: int | None = None,
        device: str | None = None,
        **generation_kwargs: Any,
    ) -> None:
        super().__init__()
        # Checked before the model loads; lm-eval passes `--model_args` values as numbers where they parse as such.
        check_int("num_samples", num_samples, minimum=2)  # the evidence bound's standard error needs two draws
        check_int("seed", seed, minimum=0)
        check_int("max_length", max_length, minimum=1, optional=True)
        batch = _batch_size(batch_size)
        from transformers import AutoTokenizer

        from ..modeling_auto import AutoModelForMaskedDiffusion
        from ..presets import default_model_path, resolve_model_name

        if pretrained is None:
            pretrained = default_model_path()
        if isinstance(pretrained, str):
            name = resolve_model_name(pretrained)
            self.model = AutoModelForMaskedDiffusion.from_pretrained(name, dtype=torch.float32)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
        else:
            if tokenizer is None:
                raise ValueError(
                    "`tokenizer` is needed with a loaded model as `pretrained` (only a name loads its own)."
                )
            self.model, self.tokenizer = pretrained, tokenizer
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for CUDA by default; its own HF model falls back to the CPU the same way.
            logger.warning("CUDA is not available; the mdlm model runs on the CPU.")
            device = "cpu"
        if device:
            self.model.to(device)
        self.model.eval()
        self.num_samples, self.seed, self.batch = num_samples, seed, batch
        self.max_length = int(max_length) if max_length else (self.model.max_sequence_length() or 512)
        self.generation_kwargs = {key: _parse(value) for key, value in generation_kwargs.items()}

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The context of a request whose context is empty: BOS, else EOS (lm-eval's Hugging Face model's choice)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids without special tokens unless asked: masked diffusion prompts carry none."""
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        results = []
        for _, context_ids, continuation_ids in requests:
            ids = (context_ids + continuation_ids)[-self.max_length :]
            context_length = max(len(ids) - len(continuation_ids), 0)
            (bound,) = evidence_bound(
                self.model, [ids], mask_token_id=self.tokenizer.mask_token_id, context_lengths=[context_length],
                num_samples=self.num_samples, seed=self.seed, batch_size=self.batch,
            )  # fmt: skip
            results.append((-bound.nats, self._is_greedy(ids, context_length)))
        return results

    @torch.no_grad()
    def _is_greedy(self, ids: list[int], context_length: int) -> bool:
        masked = torch.tensor([ids[:context_length] + [self.tokenizer.mask_token_id] * (len(ids) - context_length)])
        # Greedy whatever the model's saved decoding settings (sampling, penalties, bans): the argmax infilling.
        filled = self.model.infill(
            masked, steps=max(len(ids) - context_length, 1), block_length=len(ids), do_sample=False,
            repetition_penalty=1.0, no_repeat_ngram_size=0, suppress_tokens=None, cfg_scale=0.0,
            remasking="low_confidence", stochastic_transfer=False, confidence_threshold=None, kv_cache=None,
        )  # fmt: skip
        return filled[0, context_length:].tolist() == ids[context_length:]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        results = []
        for request in requests:
            (text,) = request.args
            ids = self.tok_encode(text)
            windows = [ids[i : i + self.max_length] for i in range(0, len(ids), self.max_length)] or [[]]
            bounds = evidence_bound(
                self.model, windows, mask_token_id=self.tokenizer.mask_token_id, num_samples=self.num_samples,
                seed=self.seed, batch_size=self.batch,
            )  # fmt: skip
            results.append(-sum(b.nats for b in bounds))
        return results

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        outputs = []
        for request in requests:
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", self.generation_kwargs.get("max_new_tokens", 64)))
            # The task's own settings (do_sample, temperature, ...) win over the model arguments', as in lm-eval's HF
            # model; one this decoding does not have raises a TypeError naming it.
            settings = {**self.generation_kwargs, **gen_kwargs, "max_new_tokens": max_new}
            settings.setdefault("steps", max_new)
            if not 1 <= max_new < self.max_length:  # a slice [-0:] would keep the whole context, past the positions
                raise ValueError(
                    f"`max_gen_toks` is {max_new}: it must be at least 1 and leave room for the context in "
                    f"`max_length` ({self.max_length} tokens)."
                )
            ids = torch.tensor([self.tok_encode(context)[-(self.max_length - max_new) :]], dtype=torch.long)
            out = self.model.generate(ids, tokenizer=self.tokenizer, **settings)
            text = self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            outputs.append(text)
        return outputs


def _parse(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _batch_size(value: Any) -> int:
    """Requests scored together: a positive integer, or lm-eval's `auto` / `auto:N` (a fixed 64 here)."""
    text = str(value)
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text == "auto" or text.startswith("auto:"):
        return 64
    raise ValueError(f"`batch_size` must be a positive integer or 'auto', got {value!r}.")
