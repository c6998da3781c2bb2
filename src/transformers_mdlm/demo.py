"""A Gradio demo: chat with a masked diffusion model and watch each answer denoise, step by step; fill blanks.

`mdlm demo [--model ...]` serves it; `examples/space/app.py` is the same app as a Hugging Face Space. Needs the
optional `demo` extra (`pip install "transformers-mdlm[demo]"`).
"""

from __future__ import annotations

import html
import queue
import threading
from collections.abc import Iterator
from typing import Any

from .generation.configuration import REMASKING_STRATEGIES
from .tokenizer_utils import decode_frame
from .visualization import split_frame

CSS = """
.mdlm-canvas { font-family: ui-monospace, monospace; line-height: 1.9; white-space: pre-wrap; overflow-wrap: anywhere;
  min-height: 3em; }
.mdlm-mask { background: #c8ccd4; color: #c8ccd4; border-radius: 3px; padding: 0 2px; }
.mdlm-text { color: #111827; }
"""


def canvas_html(text: str, mask_token: str) -> str:
    """A denoising frame as HTML: committed text as text, every mask as a grey block (`class="mdlm-mask"`).

    Example:

    ```python
    >>> canvas_html("Ankara <mask>", "<mask>")
    '<div class="mdlm-canvas"><span class="mdlm-text">Ankara </span><span class="mdlm-mask">▒</span></div>'

    ```
    """
    pieces = [
        '<span class="mdlm-mask">▒</span>' if is_mask else f'<span class="mdlm-text">{html.escape(piece)}</span>'
        for piece, is_mask in split_frame(text, mask_token)
    ]
    return '<div class="mdlm-canvas">' + "".join(pieces) + "</div>"


def stream_denoising(pipe: Any, inputs: Any, whole: bool = False, **settings: Any) -> Iterator[tuple[str, Any]]:
    """Run the pipeline in a thread and yield `("frame", html)` after every step, then `("done", result)` (or
    `("error", message)`).

    A frame shows the new tokens (the answer being written), or the whole text with `whole=True` (infilling), masks
    as grey blocks.
    """
    frames: queue.Queue = queue.Queue()
    new_tokens = settings.get("max_new_tokens") or pipe.model.generation_config.max_new_tokens or 0
    mask_token = pipe.tokenizer.mask_token

    def on_step(model: Any, step: int, timestep: float, callback_kwargs: dict[str, Any]) -> None:
        sequence = callback_kwargs["sequences"][0].tolist()
        shown = sequence if whole or not new_tokens else sequence[-new_tokens:]
        frames.put(("frame", canvas_html(decode_frame(shown, pipe.tokenizer), mask_token)))

    def run() -> None:
        try:
            frames.put(("done", pipe(inputs, callback_on_step_end=on_step, **settings)[0]["generated_text"]))
        except Exception as error:  # shown in the page; the demo keeps serving
            frames.put(("error", f"{type(error).__name__}: {error}"))

    threading.Thread(target=run, daemon=True).start()
    while True:
        kind, value = frames.get()
        yield kind, value
        if kind != "frame":
            return


def _settings(steps: float, block_length: float, temperature: float, remasking: str, threshold: float) -> dict:
    return {
        "steps": int(steps),
        "max_new_tokens": int(steps),
        "block_length": int(block_length),
        "temperature": float(temperature),
        "remasking": remasking,
        "confidence_threshold": float(threshold) if threshold > 0 else None,
    }


def build_demo(pipe: Any) -> Any:
    """The Gradio app around a `masked-diffusion` pipeline: a chat tab and an infilling tab."""
    import gradio as gr

    defaults = pipe.model.generation_config
    with gr.Blocks(title="transformers-mdlm") as demo:
        gr.HTML(f"<style>{CSS}</style>")
        gr.Markdown("# Masked diffusion chat\nEach answer appears as a canvas of masks that sharpens step by step.")
        with gr.Accordion("Settings", open=False):
            steps = gr.Slider(8, 256, value=defaults.steps or 64, step=8, label="steps (= new tokens)")
            block = gr.Slider(4, 256, value=defaults.block_length or 32, step=4, label="block length")
            temperature = gr.Slider(0, 1.5, value=defaults.temperature, step=0.05, label="temperature")
            remasking = gr.Dropdown(list(REMASKING_STRATEGIES), value=defaults.remasking, label="remasking")
            threshold = gr.Slider(0, 1, value=defaults.confidence_threshold or 0, step=0.05,
                                  label="confidence threshold (0 = off)")  # fmt: skip
        controls = [steps, block, temperature, remasking, threshold]
        with gr.Tab("Chat"):
            chatbot = gr.Chatbot(label="conversation", elem_id="mdlm-chat")
            canvas = gr.HTML(elem_id="mdlm-canvas")
            message = gr.Textbox(
                label="message", placeholder="Türkiye'nin başkenti neresidir?", elem_id="mdlm-message"
            )
            send = gr.Button("Send", elem_id="mdlm-send")

            def chat(text: str, history: list, *values: Any) -> Iterator[tuple[list, str, str]]:
                conversation = [*_plain_messages(history), {"role": "user", "content": text}]
                for kind, value in stream_denoising(pipe, conversation, return_full_text=False, **_settings(*values)):
                    if kind == "frame":
                        yield [*conversation, {"role": "assistant", "content": "…"}], value, ""
                    else:
                        reply = value if kind == "done" else f"(error) {value}"
                        yield [*conversation, {"role": "assistant", "content": reply}], canvas_html(reply, "\0"), ""

            send.click(chat, [message, chatbot, *controls], [chatbot, canvas, message])
            message.submit(chat, [message, chatbot, *controls], [chatbot, canvas, message])
        with gr.Tab("Fill in the blanks"):
            mask = pipe.tokenizer.mask_token
            text = gr.Textbox(label=f"text with {mask} where words are missing",
                              value=f"Ankara Türkiye'nin {mask} şehridir.", elem_id="mdlm-infill-input")  # fmt: skip
            fill = gr.Button("Fill", elem_id="mdlm-fill")
            filled_canvas = gr.HTML(elem_id="mdlm-infill-canvas")

            def infill(value: str, *values: Any) -> Iterator[str]:
                settings = _settings(*values)
                settings.pop("max_new_tokens")
                for kind, result in stream_denoising(pipe, value, whole=True, **settings):
                    yield result if kind == "frame" else canvas_html(str(result), "\0")

            fill.click(infill, [text, *controls], [filled_canvas])
    return demo


def _plain_messages(history: Any) -> list[dict[str, str]]:
    """The chatbot's history as `{"role", "content"}` messages with string contents: Gradio 6 hands each message
    back with `metadata`/`options` and its content as a list of parts (`[{"type": "text", "text": ...}]`)."""
    messages = []
    for message in history or []:
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            content = "".join(
                part.get("text", "") if isinstance(part, dict) else str(part)
                for part in content
                if not isinstance(part, dict) or part.get("type", "text") == "text"
            )
        messages.append({"role": message.get("role"), "content": content})
    return messages


__all__ = ["build_demo", "canvas_html", "stream_denoising"]
