"""The playground in a real browser: headless Chromium (Debian's) driven by Playwright.

One `impasto serve` of the tiny Stable Diffusion example (the playground on by default: the
server binds to loopback and Gradio is installed) and one in-process server with two
custom packages serve every test of the module. The page must make no request off this
machine: every request the browser makes is recorded and checked.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import PACKAGES, REPO, ProcessServer, ThreadServer, free_port, metric

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.timeout(600)

CHROMIUM = os.environ.get("IMPASTO_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")
TEXT2IMG = "#impasto-tiny-sd-text2img"
INPAINT = "#impasto-tiny-sd-inpaint"
SCREENSHOT = os.environ.get("IMPASTO_PLAYGROUND_SCREENSHOT")  # e.g. docs/playground.png


# fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1000},
        )
        yield browser
        browser.close()


class Page:
    """A page that records every request leaving this machine."""

    def __init__(self, context) -> None:
        self.page = context.new_page()
        self.external: list[str] = []
        self.page.on("request", self._request)
        self.page.set_default_timeout(120_000)

    def _request(self, request) -> None:
        if not request.url.startswith(LOCAL):
            self.external.append(request.url)

    def open(self, url: str) -> Page:
        self.page.goto(url)
        self.page.wait_for_selector('.impasto-state[data-state="ready"]')
        return self

    def close(self) -> None:
        assert self.external == [], f"the page reached off the machine: {self.external}"
        self.page.close()


@pytest.fixture
def page(browser) -> Iterator:
    pages: list[Page] = []

    def open_page(url: str) -> Page:
        opened = Page(browser).open(url)
        pages.append(opened)
        return opened

    yield open_page
    for p in pages:
        p.close()


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Iterator[ProcessServer]:
    home = tmp_path_factory.mktemp("impasto-home")
    log = tmp_path_factory.mktemp("log-ui") / "server.log"
    env = {"IMPASTO_HOME": str(home), "IMPASTO_UI": None}  # on by default: loopback, Gradio
    server = ProcessServer(REPO / "examples" / "tiny-sd", env=env, log=log)
    server.client.timeout = 120
    server.wait_live(120)
    server.wait_ready(300)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def custom() -> Iterator[ThreadServer]:
    """Two custom packages in one server: a tab per model, a tab per endpoint."""
    from impasto import build_app

    app = build_app([PACKAGES / "steps", PACKAGES / "echo"], ui=True)
    server = ThreadServer(app).start()
    server.wait_ready()
    yield server
    server.stop()


# helpers ---------------------------------------------------------------------------------------
def set_number(p, selector: str, value: object) -> None:
    box = p.locator(f"{selector} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def status(p, prefix: str) -> dict[str, str | None]:
    node = p.locator(f"{prefix}-status .impasto-status")
    return {k: node.get_attribute(f"data-{k}") for k in ("state", "step", "total")}


def generate(p, prefix: str) -> None:
    """Click Generate, marking what the page shows now as old (a new run replaces it)."""
    p.eval_on_selector_all(
        f"{prefix}-status .impasto-status, {prefix}-error .impasto-error",
        "nodes => nodes.forEach(n => n.setAttribute('data-old', '1'))",
    )
    p.click(f"{prefix}-generate")


def wait_state(p, prefix: str, *states: str) -> str:
    """Wait for the latest run to reach one of ``states``; the state it reached."""
    wanted = " or ".join(f'@data-state="{s}"' for s in states)
    node = p.wait_for_selector(f"{prefix}-status >> xpath=.//div[not(@data-old) and ({wanted})]")
    return str(node.get_attribute("data-state"))


def new_error(p, prefix: str):
    return p.wait_for_selector(f"{prefix}-error .impasto-error:not([data-old])")


def first_image(p, prefix: str) -> Image.Image:
    src = p.get_attribute(f"{prefix}-gallery img", "src")
    assert src
    return Image.open(io.BytesIO(httpx.get(src, timeout=30).content))


def open_api(p, prefix: str) -> None:
    p.locator(f"{prefix}-api").get_by_text("This request with impasto's API").click()


def code_text(p, selector: str) -> str:
    return p.locator(f"{selector} .cm-content").inner_text()


def steps_metric(server: ProcessServer, endpoint: str) -> float:
    text = server.client.get("/metrics").text
    return metric(text, "impasto_progress_steps_total", model="tiny-sd", endpoint=endpoint)


# the tiny Stable Diffusion ---------------------------------------------------------------------
def test_browser_at_root_gets_the_playground_and_clients_get_json(sd, page) -> None:
    assert sd.client.get("/").json() is True
    redirect = sd.client.get("/", headers={"Accept": "text/html"})
    assert redirect.status_code == 307
    assert redirect.headers["location"].endswith("/ui/")
    p = page(sd.url + "/").page  # the browser follows the redirect
    assert p.url.endswith("/ui/")
    assert "tiny-sd" in p.inner_text(".impasto-state")
    tabs = [t.inner_text() for t in p.get_by_role("tab").all()]
    assert tabs == ["text2img", "img2img", "inpaint"]


def test_generate_an_image_of_the_requested_size(sd, page) -> None:
    opened = page(sd.url + "/ui/")
    p = opened.page
    p.fill(f"{TEXT2IMG}-prompt textarea", "a red cat")
    set_number(p, f"{TEXT2IMG}-width", 96)
    set_number(p, f"{TEXT2IMG}-height", 64)
    p.uncheck(f"{TEXT2IMG}-seed-random input")
    p.fill(f"{TEXT2IMG}-seed input", "7")
    generate(p, TEXT2IMG)
    assert wait_state(p, TEXT2IMG, "done", "failed") == "done"
    image = first_image(p, TEXT2IMG)
    assert image.size == (96, 64)
    assert image.format == "PNG"  # the server's own encoding, as the API returns it
    recipe = p.inner_text(f"{TEXT2IMG}-result")
    assert "tiny-sd" in recipe and "seed" in recipe
    # the same request, copied from the page, gives the same image over impasto's API
    open_api(p, TEXT2IMG)
    curl = code_text(p, f"{TEXT2IMG}-curl")
    python = code_text(p, f"{TEXT2IMG}-python")
    assert f"{sd.url}/text2img" in curl and '"seed": 7' in curl
    namespace: dict = {}
    exec(python, namespace)
    result = namespace["result"]
    assert result["seeds"] == [7]
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (96, 64)
    if shutil.which("curl"):
        out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120)
        assert '"seeds":[7]' in out.stdout.replace(" ", "")


def test_paint_a_mask_and_inpaint(sd, page, tmp_path) -> None:
    source = tmp_path / "photo.png"
    Image.new("RGB", (80, 64), (40, 120, 200)).save(source)
    p = page(sd.url + "/ui/").page
    p.get_by_role("tab", name="inpaint").click()
    p.fill(f"{INPAINT}-prompt textarea", "a red cat")
    generate(p, INPAINT)  # nothing painted yet: said inline, nothing sent
    new_error(p, INPAINT)
    assert p.get_attribute(f"{INPAINT}-error .impasto-error", "data-field") == "image"
    with p.expect_file_chooser() as chooser:
        p.click(f"{INPAINT}-image button[aria-label='Upload']")
    chooser.value.set_files(str(source))
    p.click(f"{INPAINT}-image button[aria-label='Brush']")
    canvas = p.locator(f"{INPAINT}-image canvas").first
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    p.mouse.move(x - 20, y - 10)
    p.mouse.down()
    p.mouse.move(x + 20, y + 10, steps=8)
    p.mouse.up()
    generate(p, INPAINT)
    assert wait_state(p, INPAINT, "done", "failed") == "done", p.inner_text(f"{INPAINT}-error")
    assert first_image(p, INPAINT).size == (80, 64)  # the image's size, as the schema says
    open_api(p, INPAINT)
    curl = code_text(p, f"{INPAINT}-curl")
    assert "-F image=@image.png" in curl and "-F mask=@mask.png" in curl


def test_cancel_stops_a_long_generation_within_a_step(sd, page) -> None:
    p = page(sd.url + "/ui/").page
    before = steps_metric(sd, "text2img")
    canceled = metric(sd.client.get("/metrics").text, "impasto_canceled_total", reason="canceled")
    p.fill(f"{TEXT2IMG}-prompt textarea", "a long one")
    set_number(p, f"{TEXT2IMG}-num_inference_steps", 50)
    set_number(p, f"{TEXT2IMG}-width", 256)
    set_number(p, f"{TEXT2IMG}-height", 256)
    generate(p, TEXT2IMG)
    # "step N of M" advances on the page
    p.wait_for_selector(f"{TEXT2IMG}-status .impasto-status[data-total='50']")
    first = int(status(p, TEXT2IMG)["step"] or 0)
    p.wait_for_function(
        f"""() => Number(document.querySelector('{TEXT2IMG}-status .impasto-status')
                ?.dataset.step || 0) > {first}"""
    )
    assert "of 50" in p.inner_text(f"{TEXT2IMG}-status")
    p.click(f"{TEXT2IMG}-cancel")
    at_click = steps_metric(sd, "text2img")
    assert wait_state(p, TEXT2IMG, "canceled", "done", "failed") == "canceled"
    stopped = steps_metric(sd, "text2img")
    assert stopped - before < 50
    assert stopped - at_click <= 2  # the step running when Cancel landed, at most
    # one model slot: this runs only after the canceled call has returned its thread
    quick = sd.client.post(
        "/img2img",
        json={"prompt": "x", "image": _png_b64(64, 64), "num_inference_steps": 2, "strength": 1},
    )
    assert quick.status_code == 200, quick.text
    assert steps_metric(sd, "text2img") == stopped  # nothing advanced after the cancel
    after = metric(sd.client.get("/metrics").text, "impasto_canceled_total", reason="canceled")
    assert after == canceled + 1


def test_validation_error_shown_inline_with_the_field(sd, page) -> None:
    p = page(sd.url + "/ui/").page
    p.fill(f"{TEXT2IMG}-prompt textarea", "x" * 2001)  # max_prompt_chars is 2000
    generate(p, TEXT2IMG)
    error = new_error(p, TEXT2IMG)
    assert error.get_attribute("data-field") == "prompt"
    assert error.get_attribute("data-type") == "invalid_input"
    assert "2000" in error.inner_text()
    assert wait_state(p, TEXT2IMG, "failed") == "failed"


def _png_b64(w: int, h: int) -> str:
    import base64

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (9, 9, 9)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# the tiny painter: what the README serves --------------------------------------------------------
def test_the_painter_draws_the_asked_picture_in_the_playground(page, tmp_path_factory) -> None:
    """The README's playground command (`impasto serve examples/tiny-painter`): a prompt
    typed into the page comes back as the picture it asks for."""
    from painter_example import example_module

    judge = example_module("judge")
    home = tmp_path_factory.mktemp("painter-ui-home")
    log = tmp_path_factory.mktemp("log-painter-ui") / "server.log"
    env = {"IMPASTO_HOME": str(home), "IMPASTO_UI": None}
    server = ProcessServer(REPO / "examples" / "tiny-painter", env=env, log=log)
    try:
        server.wait_live(120)
        server.wait_ready(300)
        prefix = "#impasto-tiny-painter-text2img"
        p = page(server.url + "/ui/").page
        p.fill(f"{prefix}-prompt textarea", "a blue triangle on a yellow background")
        p.uncheck(f"{prefix}-seed-random input")
        p.fill(f"{prefix}-seed input", "3")
        generate(p, prefix)
        assert wait_state(p, prefix, "done", "failed") == "done"
        seen = judge.judge(first_image(p, prefix))
        assert (seen.background, seen.color, seen.shape) == ("yellow", "blue", "triangle"), seen
        if SCREENSHOT:
            p.screenshot(path=SCREENSHOT, full_page=True)
    finally:
        server.stop()


# custom packages -------------------------------------------------------------------------------
def test_custom_endpoints_work_from_their_tabs(custom, page) -> None:
    p = page(custom.url + "/ui/").page
    states = {
        s.get_attribute("data-model"): s.get_attribute("data-state")
        for s in p.locator(".impasto-state").all()
    }
    assert states == {"steps": "ready", "echo": "ready"}
    prefix = "#impasto-steps-count"
    p.get_by_role("tab", name="count").click()
    set_number(p, f"{prefix}-n", 4)
    generate(p, prefix)
    assert wait_state(p, prefix, "done", "failed") == "done"
    assert '"counted":4' in "".join(p.inner_text(f"{prefix}-result").split())
    # a model without an input schema takes its body as JSON text
    p.get_by_role("tab", name="echo").click()
    prefix = "#impasto-echo-predict"
    editor = p.locator(f"{prefix}-body .cm-content")
    editor.click()
    p.keyboard.press("Control+A")
    p.keyboard.type('{"text": "hello"')  # the editor closes the brace
    generate(p, prefix)
    assert wait_state(p, prefix, "done", "failed") == "done", p.inner_text(f"{prefix}-error")
    result = p.inner_text(f"{prefix}-result")
    assert "HELLO" in result and "postprocess" in result


def test_video_result_plays_in_a_player_with_its_frames(page) -> None:
    """A model returning impasto.Video: the page shows a player whose file is the video."""
    import av

    from impasto import build_app

    server = ThreadServer(build_app(PACKAGES / "media_io", ui=True)).start()
    try:
        server.wait_ready()
        p = page(server.url + "/ui/").page
        prefix = "#impasto-media-io-video"
        p.get_by_role("tab", name="video", exact=True).click()
        set_number(p, f"{prefix}-frames", 6)
        generate(p, prefix)
        assert wait_state(p, prefix, "done", "failed") == "done", p.inner_text(f"{prefix}-error")
        src = p.wait_for_selector(f"{prefix}-video video[src]").get_attribute("src")
        assert src
        data = httpx.get(src if "://" in src else server.url + src, timeout=30).content
        with av.open(io.BytesIO(data)) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 6 and (frames[0].width, frames[0].height) == (32, 16)
    finally:
        server.stop()


def test_api_key_asked_for_and_passed(page) -> None:
    """With API keys on, the page asks for one and the in-process call checks it."""
    from impasto import load_package
    from impasto.metrics import Metrics
    from impasto.server import create_app
    from impasto.serving import runner_for
    from impasto.ui import mount_ui

    class Keys:
        def accepts(self, key: str | None) -> bool:
            return key == "sesame"

        def __bool__(self) -> bool:
            return True

    app = create_app(runner_for(load_package(PACKAGES / "steps"), Metrics()))
    mount_ui(app, app.state.models, auth=Keys())
    server = ThreadServer(app).start()
    try:
        server.wait_ready()
        p = page(server.url + "/ui/").page
        prefix = "#impasto-steps-count"
        generate(p, prefix)
        error = new_error(p, prefix)
        assert error.get_attribute("data-field") == "api_key"
        assert "missing API key" in error.inner_text()
        p.fill("#impasto-api-key input", "wrong")
        generate(p, prefix)
        assert "invalid API key" in new_error(p, prefix).inner_text()
        p.fill("#impasto-api-key input", "sesame")
        generate(p, prefix)
        assert wait_state(p, prefix, "done", "failed") == "done"
        open_api(p, prefix)
        curl = code_text(p, f"{prefix}-curl")
        assert "$IMPASTO_API_KEY" in curl and "sesame" not in curl
    finally:
        server.stop()


# impasto ui --url ------------------------------------------------------------------------------
@pytest.fixture
def remote_ui(sd, tmp_path) -> Iterator[str]:
    """`impasto ui --url` in front of the tiny SD server, as its own process."""
    port = free_port()
    log_path = tmp_path / "ui.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "impasto.cli.main", "ui", "--url", sd.url, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(url + "/ui/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_remote_playground_over_http(sd, remote_ui, page) -> None:
    p = page(remote_ui + "/").page
    assert p.url.endswith("/ui/")
    p.fill(f"{TEXT2IMG}-prompt textarea", "a blue dog")
    set_number(p, f"{TEXT2IMG}-width", 48)
    generate(p, TEXT2IMG)
    assert wait_state(p, TEXT2IMG, "done", "failed") == "done", p.inner_text(f"{TEXT2IMG}-error")
    assert first_image(p, TEXT2IMG).size == (48, 64)
    open_api(p, TEXT2IMG)
    assert f"{sd.url}/text2img" in code_text(p, f"{TEXT2IMG}-curl")
    # the remote server's validation error, named inline
    p.fill(f"{TEXT2IMG}-prompt textarea", "x" * 2001)
    generate(p, TEXT2IMG)
    error = new_error(p, TEXT2IMG)
    assert error.get_attribute("data-field") == "prompt"


def test_remote_progress_and_cancel_by_closing_the_stream(sd, remote_ui, page) -> None:
    gone = metric(sd.client.get("/metrics").text, "impasto_canceled_total", reason="disconnected")
    p = page(remote_ui + "/ui/").page
    p.fill(f"{TEXT2IMG}-prompt textarea", "a long one")
    set_number(p, f"{TEXT2IMG}-num_inference_steps", 50)
    set_number(p, f"{TEXT2IMG}-width", 256)
    set_number(p, f"{TEXT2IMG}-height", 256)
    generate(p, TEXT2IMG)
    p.wait_for_selector(f"{TEXT2IMG}-status .impasto-status[data-total='50']")
    first = int(status(p, TEXT2IMG)["step"] or 0)
    p.wait_for_function(
        f"""() => Number(document.querySelector('{TEXT2IMG}-status .impasto-status')
                ?.dataset.step || 0) > {first}"""
    )
    p.click(f"{TEXT2IMG}-cancel")
    assert wait_state(p, TEXT2IMG, "canceled", "done", "failed") == "canceled"
    deadline = time.monotonic() + 60  # the server sees the stream close and aborts
    while True:
        text = sd.client.get("/metrics").text
        if metric(text, "impasto_canceled_total", reason="disconnected") == gone + 1:
            break
        assert time.monotonic() < deadline, "the server did not cancel the prediction"
        time.sleep(0.1)
