"""The Gradio demo, driven as a person would: a real headless Chromium types a question and watches the answer."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

gradio = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the demo test's browser driver) is missing")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
QUESTION = "Türkiye'nin başkenti neresidir?"


def test_canvas_html_shows_masks_as_blocks():
    from transformers_mdlm.demo import canvas_html

    page = canvas_html("Ankara <mask> <b>", "<mask>")
    assert page.count('class="mdlm-mask"') == 1 and "&lt;b&gt;" in page  # text is escaped


def test_streaming_yields_frames_then_the_answer():
    from transformers import pipeline

    from transformers_mdlm.demo import stream_denoising

    pipe = pipeline("masked-diffusion")
    events = list(
        stream_denoising(pipe, QUESTION, return_full_text=False, max_new_tokens=16, steps=16, block_length=16)
    )
    frames = [value for kind, value in events if kind == "frame"]
    assert len(frames) == 16 and 'class="mdlm-mask"' in frames[0] and 'class="mdlm-mask"' not in frames[-1]
    assert events[-1] == (
        "done",
        pipe(QUESTION, return_full_text=False, max_new_tokens=16, steps=16, block_length=16)[0]["generated_text"],
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="no Chromium and chromedriver here (.ci/run installs them)"
)
def test_a_browser_chats_and_sees_the_answer_denoise(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.common.by import By
    from transformers import pipeline

    from transformers_mdlm.demo import build_demo

    pipe = pipeline("masked-diffusion")  # the embedded model
    pipe.model.generation_config.update(steps=64, block_length=32)  # slow enough to see the canvas change
    expected = pipe([{"role": "user", "content": QUESTION}], return_full_text=False, steps=64, max_new_tokens=64,
                    block_length=32)[0]["generated_text"]  # fmt: skip
    port = _free_port()
    demo = build_demo(pipe)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        browser.get(f"http://127.0.0.1:{port}")
        box = _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#mdlm-message textarea"))
        box.send_keys(QUESTION)
        browser.find_element(By.CSS_SELECTOR, "#mdlm-send").click()
        masks_seen = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            canvas = browser.find_element(By.CSS_SELECTOR, "#mdlm-canvas").get_attribute("innerHTML")
            masks_seen = max(masks_seen, canvas.count('class="mdlm-mask"'))
            if expected in browser.find_element(By.CSS_SELECTOR, "#mdlm-chat").text:
                break
            time.sleep(0.05)
        chat = browser.find_element(By.CSS_SELECTOR, "#mdlm-chat").text
        assert QUESTION in chat and expected in chat  # the final answer, as the pipeline gives it
        assert masks_seen > 0  # masks were on screen while the answer denoised
        screenshot = tmp_path / "demo.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000

        # The infilling tab fills the example's blank.
        tabs = browser.find_elements(By.XPATH, "//button[contains(., 'Fill in the blanks')]")
        next(tab for tab in tabs if tab.is_displayed()).click()
        _wait_for(lambda: _visible(browser.find_element(By.CSS_SELECTOR, "#mdlm-fill"))).click()
        filled = pipe(f"Ankara Türkiye'nin {pipe.tokenizer.mask_token} şehridir.", steps=64, block_length=32)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = browser.find_element(By.CSS_SELECTOR, "#mdlm-infill-canvas").text
            if filled[0]["generated_text"] in shown:
                break
            time.sleep(0.1)
        assert filled[0]["generated_text"] in shown and "<mask>" not in shown
    finally:
        browser.quit()
        demo.close()


def _visible(element):
    if not element.is_displayed():
        raise LookupError("not displayed yet")
    return element


def _wait_for(find, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return find()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_chat_takes_gradio_6_histories_whose_contents_are_lists_of_parts():
    # Gradio 6 hands the history back as messages with `metadata`/`options` and content parts; the second turn of
    # every conversation failed ("Message 0 must have a string 'content', got list").
    from transformers_mdlm.demo import _plain_messages

    history = gradio.Chatbot().preprocess(gradio.Chatbot().postprocess(
        [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w3"}]))  # fmt: skip
    assert _plain_messages(history) == [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w3"}]
    assert _plain_messages([{"role": "user", "content": "w1"}]) == [{"role": "user", "content": "w1"}]
