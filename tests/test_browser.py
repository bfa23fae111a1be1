"""The web page end to end in a real headless Chromium (Debian's, driven by Playwright): choose a file, see the tag
bars (the model's, and a tag pack's beside them), the taggram and the JSON; drop a file that is not audio, see the
error.

scripts/install-browser.sh installs /usr/bin/chromium (scripts/test.sh runs it); without it this test skips.
"""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
import soundfile as sf

from samplecnn import server
from samplecnn.library.index import tagger_and_record

from conftest import SR, music_like, write_pack
from test_server import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent: run scripts/install-browser.sh (Debian's chromium)")


@pytest.fixture(scope="module")
def page(ckpt_path, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    tagger, record = tagger_and_record(str(ckpt_path))
    pack = write_pack(tmp_path_factory.mktemp("pack") / "mine.json", ckpt_path)
    with LiveServer(server.create_app(tagger, record.model_id, tag_packs=[pack])) as live, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(live.url + "/")
        page.tagger, page.model_id, page.pack = tagger, record.model_id, pack
        yield page
        browser.close()


def test_choosing_a_file_shows_tag_bars_taggram_and_json(page, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, music_like(6.0, seed=8), SR)
    expected = page.tagger.tag(song)

    page.wait_for_selector(f"#model:has-text('{page.model_id}')")
    page.set_input_files("#file", str(song))
    page.wait_for_selector("#result:not([hidden])")

    assert page.text_content("#title") == "song.wav"
    bars = page.locator("#bars li")
    assert bars.count() == len(expected.tags)
    shown = [bars.nth(i).get_attribute("data-tag") for i in range(bars.count())]
    assert shown == [t for t, _ in expected.top(0)]  # all tags, best first
    values = [float(v) for v in page.locator("#bars .value").all_text_contents()]
    np.testing.assert_allclose(values, [s for _, s in expected.top(0)], atol=6e-4)
    decided = [li.get_attribute("data-tag") for li in page.locator("#bars li.decided").all()]
    assert decided == expected.decisions
    widths = page.eval_on_selector_all("#bars .fill", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths == sorted(widths, reverse=True) and widths[0] > 0

    # the tag pack's tags beside the 50: best first, its decided tag highlighted, its scores the pack's own
    assert page.is_visible("#own-box") and "your tag packs: mine (2)" in page.text_content("#model")
    own = page.pack.scores(page.tagger.embed(song))
    order = np.argsort(-own, kind="stable")
    mine = page.locator("#own-bars li")
    assert [mine.nth(i).get_attribute("data-tag") for i in range(mine.count())] == [page.pack.tags[i] for i in order]
    values = [float(v) for v in page.locator("#own-bars .value").all_text_contents()]
    np.testing.assert_allclose(values, own[order], atol=6e-4)
    assert [li.get_attribute("data-tag") for li in page.locator("#own-bars li.decided").all()] == ["my sound"]
    assert "your tags: my sound" in page.text_content("#summary")

    page.wait_for_function("() => { const i = document.getElementById('taggram'); "
                           "return i.complete && i.naturalWidth > 0; }")
    assert page.eval_on_selector("#taggram", "i => i.naturalWidth") > 800
    body = json.loads(page.text_content("#json"))
    assert body["filename"] == "song.wav" and body["decisions"] == expected.decisions
    np.testing.assert_allclose(list(body["scores"].values()), expected.scores, atol=1e-4)
    assert "Done in" in page.text_content("#status")


def test_dropping_a_file_that_is_not_audio_shows_the_error(page):
    data = base64.b64encode(b"these are my notes, not a song\n" * 40).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "notes.mp3", { type: "audio/mpeg" }));
            return dt;
        }""", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#status.error")
    status = page.text_content("#status")
    assert status.startswith("Error 415:") and "notes.mp3: not an audio file" in status
    assert page.is_hidden("#result")


def test_dropping_audio_tags_it(page):
    buf = io.BytesIO()
    sf.write(buf, music_like(3.0, seed=2), SR, format="WAV")
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.wav", { type: "audio/wav" }));
            return dt;
        }""", base64.b64encode(buf.getvalue()).decode())
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#title:has-text('dropped.wav')")
    assert page.locator("#bars li").count() == 50 and not page.is_hidden("#result")
