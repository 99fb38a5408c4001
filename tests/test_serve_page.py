"""The page at / in a real headless Chromium (Debian's, driven by Playwright): a person gives
the token, chooses images and sees the boxes and class names drawn on them."""
import base64
import json
import os

import pytest
from playwright.sync_api import sync_playwright

from serving import (
    image_bytes, post_image, serve_tool, wait_until, write_config_and_weights
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# without the network flags Chromium keeps calling Google's hosts, which this machine refuses
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
TOKEN = "page-test-token"
SHOWN = 5  # max detections asked for on the page


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    config, weights = write_config_and_weights(str(tmp_path_factory.mktemp("model")))
    with serve_tool("-f", config, "-w", weights, "--engine", "eager", "--token", TOKEN) as (
            url, _):
        yield url


@pytest.fixture
def page():
    assert os.access(CHROMIUM, os.X_OK), (
        "no Chromium at {}: `make setup` installs Debian's chromium when run as root; else "
        "install it, or set CHROMIUM to its path".format(CHROMIUM))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


# The canvas pixels at the midpoints of a detection's four edges, as the page drew them (in
# canvas pixels: the image is enlarged `scale` times).
EDGE_PIXELS = """([card, box]) => {
    const canvas = card.querySelector("canvas");
    const scale = Number(canvas.dataset.scale);
    const [x1, y1, x2, y2] = box.map((v) => Math.round(v * scale));
    const [mx, my] = [Math.round((x1 + x2) / 2), Math.round((y1 + y2) / 2)];
    const context = canvas.getContext("2d");
    return [[x1, my], [x2, my], [mx, y1], [mx, y2]].map(
        ([x, y]) => Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3)));
}"""


# A file dropped on the page's drop zone, as a browser delivers it.
DROP = """([name, encoded]) => {
    const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, {type: "image/png"}));
    document.querySelector("#drop").dispatchEvent(
        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""


def test_the_page_draws_the_detections_of_chosen_images(page_url, page, tmp_path):
    images = {"street.png": image_bytes(60, 90, ".png", seed=5),
              "field.jpg": image_bytes(80, 60, ".jpg", seed=6)}
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.png").write_bytes(b"not an image at all")
    page.goto(page_url + "/")
    page.wait_for_selector("#token-field:not([hidden])")  # the server asked for its token
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.wait_for_selector("body[data-model=loaded]")
    assert "3 classes" in page.inner_text("#model")
    page.fill("#count", str(SHOWN))
    page.set_input_files("#files", [str(tmp_path / name) for name in
                                    ("street.png", "field.jpg", "notes.png")])
    # polled from here: the page's policy forbids the evaluated strings of wait_for_function
    wait_until(lambda: len(page.query_selector_all(
        ".card[data-state=done], .card[data-state=error]")) == 3, what="three answered cards")
    cards = {page.eval_on_selector(f".card:nth-child({i}) .name", "e => e.textContent"): i
             for i in (1, 2, 3)}
    error = page.inner_text(".card:nth-child({}) .status".format(cards["notes.png"]))
    assert error == "415: not a JPEG, PNG, WebP or BMP image (judged by its first bytes)"
    for name, data in images.items():
        card = page.query_selector(".card:nth-child({})".format(cards[name]))
        assert card.get_attribute("data-state") == "done"
        drawn = card.eval_on_selector_all(".detection", "items => items.map(i => ({...i.dataset}))")
        answer = post_image(page_url, data, query="?max_detections={}".format(SHOWN),
                            headers={"Authorization": "Bearer " + TOKEN}).json()
        assert [(d["name"], d["box"]) for d in drawn] == [
            (found["category_name"], ",".join(str(round(v)) for v in found["bbox"]))
            for found in answer["detections"]]
        assert len(drawn) == SHOWN
        for item, found in zip(drawn, answer["detections"]):
            color = [int(c) for c in item["color"].split(",")]
            edges = page.evaluate(EDGE_PIXELS, [card, found["bbox"]])
            assert color in edges, (found, color, edges)  # a later box may cover some edges
        shown = json.loads(card.query_selector("pre.json").text_content())
        assert shown["detections"] == answer["detections"]
        assert "engine" in card.query_selector(".timings").inner_text()
    page.evaluate(DROP, ["dropped.png", base64.b64encode(images["street.png"]).decode()])
    wait_until(lambda: page.query_selector(".card:nth-child(1)[data-state=done]") is not None,
               what="the dropped image's card")
    assert page.inner_text(".card:nth-child(1) .name") == "dropped.png"
    assert len(page.query_selector_all(".card:nth-child(1) .detection")) == SHOWN
