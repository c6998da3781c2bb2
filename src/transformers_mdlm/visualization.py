"""Watching masked diffusion decode: the denoising history as a GIF, a self-contained HTML page, or a live terminal view.

The history comes from `pipe(..., return_history=True)` (decoded text before the first step and after each step, with
the tokenizer's mask token where nothing is committed yet) or from `generate(..., output_history=True)` decoded by you.
"""

from __future__ import annotations

import html
import json
import os
import textwrap
from collections.abc import Sequence
from typing import Any

from .tokenizer_utils import decode_frame

MASK_GLYPH = "░░"


def split_frame(text: str, mask_token: str) -> list[tuple[str, bool]]:
    """Split a decoded frame into pieces, each flagged `True` when it is a mask.

    Example:

    ```python
    >>> split_frame("Ankara <mask> başkentidir<mask>", "<mask>")
    [('Ankara ', False), ('<mask>', True), (' başkentidir', False), ('<mask>', True)]

    ```
    """
    pieces: list[tuple[str, bool]] = []
    for index, chunk in enumerate(text.split(mask_token)):
        if index:
            pieces.append((mask_token, True))
        if chunk:
            pieces.append((chunk, False))
    return pieces


def _frame_lines(text: str, mask_token: str, width: int) -> list[list[tuple[str, str]]]:
    """Wrap a frame to `width` characters; each piece is tagged `mask`, `new` (committed) or `text`."""
    display = text.replace(mask_token, "\x00")
    lines = []
    for line in textwrap.wrap(display, width=width, replace_whitespace=False, drop_whitespace=False) or [""]:
        pieces = []
        for index, chunk in enumerate(line.split("\x00")):
            if index:
                pieces.append((MASK_GLYPH, "mask"))
            if chunk:
                pieces.append((chunk, "text"))
        lines.append(pieces)
    return lines


def render_gif(
    history: Sequence[str],
    path: str | os.PathLike,
    *,
    mask_token: str = "<mask>",
    width: int = 60,
    frame_ms: int = 250,
    font_size: int = 18,
) -> int:
    """Write the history as an animated GIF, one frame per step; returns the number of frames.

    Masks are drawn as grey blocks, committed text in black; the last frame is held a little longer.
    """
    from PIL import Image, ImageDraw

    if not history:
        raise ValueError(
            "`history` is empty: generate with `return_history=True` (pipeline) or `output_history=True`."
        )
    font = _font(font_size)
    line_height = int(font_size * 1.5)
    wrapped = [_frame_lines(text.strip(), mask_token, width) for text in history]
    rows = max(len(lines) for lines in wrapped) + 1
    char_width = font.getlength("M")
    size = (int(char_width * (width + 4)), line_height * (rows + 1))
    frames = []
    for step, lines in enumerate(wrapped):
        image = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(image)
        draw.text((10, 6), f"step {step}/{len(wrapped) - 1}", fill=(120, 120, 120), font=font)
        for row, pieces in enumerate(lines, start=1):
            x = 10.0
            y = 6 + row * line_height
            for chunk, kind in pieces:
                if kind == "mask":  # a grey box: the default font has no block glyphs
                    box = 1.6 * char_width
                    draw.rounded_rectangle((x + 1, y + 2, x + box - 1, y + font_size), radius=3, fill=(205, 205, 205))
                    x += box + 0.25 * char_width
                else:
                    draw.text((x, y), chunk, fill=(20, 20, 20), font=font)
                    x += font.getlength(chunk)
        frames.append(image)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, disposal=2)
    return len(frames)


def _font(size: int) -> Any:
    """DejaVu Sans when the system has it (it covers Turkish letters), else Pillow's bundled default font."""
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size, layout_engine=ImageFont.Layout.BASIC)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


_HTML = """<!DOCTYPE html>
<html lang="tr"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; color: #222; }}
#canvas {{ white-space: pre-wrap; font-size: 1.15rem; line-height: 1.7; min-height: 6rem; padding: 1rem;
          border: 1px solid #ddd; border-radius: 6px; }}
.mask {{ background: #ddd; color: #ddd; border-radius: 3px; }}
#controls {{ margin: 1rem 0; color: #666; }}
</style></head><body>
<h3>{title}</h3>
<div id="controls"><button id="play">⏯</button> <input id="slider" type="range" min="0" max="{last}" value="0">
 step <span id="step">0</span>/{last}</div>
<div id="canvas"></div>
<script>
const frames = {frames};
const mask = {mask};
const canvas = document.getElementById("canvas"), slider = document.getElementById("slider");
function esc(s) {{ return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }}
function show(i) {{
  canvas.innerHTML = frames[i].split(mask).map((p, k) => (k ? '<span class="mask">{glyph}</span>' : "") + esc(p)).join("");
  slider.value = i; document.getElementById("step").textContent = i;
}}
let timer = null, current = 0;
function play() {{ if (timer) {{ clearInterval(timer); timer = null; return; }}
  timer = setInterval(() => {{ current = (current + 1) % frames.length; show(current); }}, {frame_ms}); }}
document.getElementById("play").onclick = play;
slider.oninput = () => {{ current = +slider.value; show(current); }};
show(0); play();
</script></body></html>
"""


def render_html(
    history: Sequence[str],
    path: str | os.PathLike,
    *,
    mask_token: str = "<mask>",
    title: str = "Masked diffusion decoding",
    frame_ms: int = 400,
) -> int:
    """Write the history as one self-contained HTML page that plays the steps (with a slider); returns the frames."""
    if not history:
        raise ValueError(
            "`history` is empty: generate with `return_history=True` (pipeline) or `output_history=True`."
        )
    page = _HTML.format(
        title=html.escape(title),
        last=len(history) - 1,
        frames=_script_json([text.strip() for text in history]),
        mask=_script_json(mask_token),
        glyph=MASK_GLYPH,
        frame_ms=frame_ms,
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return len(history)


def _script_json(value: Any) -> str:
    """JSON safe inside a `<script>` element: a generated `</script>` (or `<!--`) would otherwise end the script."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def render_denoising(history: Sequence[str], path: str | os.PathLike, **kwargs: Any) -> int:
    """Write the history as a GIF (`.gif`) or an HTML page (`.html`), chosen by the file's suffix."""
    suffix = os.fspath(path).lower().rsplit(".", 1)[-1]
    if suffix == "gif":
        return render_gif(history, path, **kwargs)
    if suffix in ("html", "htm"):
        return render_html(history, path, **kwargs)
    raise ValueError(f"`path` must end in .gif or .html, got {os.fspath(path)!r}.")


class LiveDenoisingView:
    """A live terminal view (rich) of a generation: pass `view.callback` as `callback_on_step_end`.

    `start` is the first column of `sequences` to show (negative counts from the end: `-max_new_tokens` shows the
    new tokens of a single prompt). With `transient=True` the view disappears when the generation ends.

    Example:

    ```python
    >>> with LiveDenoisingView(tokenizer, start=input_ids.shape[1]) as view:  # doctest: +SKIP
    ...     model.generate(input_ids, callback_on_step_end=view.callback)
    ```
    """

    def __init__(
        self, tokenizer: Any, start: int = 0, console: Any | None = None, title: str = "", transient: bool = True
    ) -> None:
        from rich.console import Console

        self.tokenizer = tokenizer
        self.start = start
        self.console = console or Console()
        self.title = title
        self.transient = transient
        self._live = None
        self.frames = 0

    def render(self, text: str) -> Any:
        from rich.text import Text

        shown = Text(self.title)
        for chunk, is_mask in split_frame(text, self.tokenizer.mask_token):
            shown.append(MASK_GLYPH if is_mask else chunk, style="grey50" if is_mask else "bold")
        return shown

    def callback(self, model: Any, step: int, timestep: float, callback_kwargs: dict[str, Any]) -> None:
        text = decode_frame(callback_kwargs["sequences"][0, self.start :].tolist(), self.tokenizer)
        self.frames += 1
        if self._live is not None:
            self._live.update(self.render(text))

    def __enter__(self) -> LiveDenoisingView:
        from rich.live import Live

        self._live = Live(self.render(""), console=self.console, refresh_per_second=20, transient=self.transient)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
