"""The transformers-mdlm demo as a Hugging Face Space (Gradio SDK): chat with live denoising, fill in blanks.

Locally: `python examples/space/app.py` (or `mdlm demo`). On a Space, set the `MDLM_MODEL` variable to a Hub id or
alias (e.g. `diffutron`); without it the package's embedded Turkish model runs.
"""

from __future__ import annotations

import os

import transformers_mdlm  # noqa: F401  (registers the "masked-diffusion" task; import it before `pipeline`)

# isort: split
from transformers import pipeline

from transformers_mdlm.demo import build_demo

demo = build_demo(pipeline("masked-diffusion", model=os.environ.get("MDLM_MODEL") or None))

if __name__ == "__main__":
    demo.launch()
