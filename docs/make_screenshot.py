"""Remake docs/web_page.png: the web page of `samplecnn serve` after tagging the bundled example, in headless Chromium.

    .venv/bin/python docs/make_screenshot.py [--model NAME_OR_CKPT]

The model is the bundled default unless --model names another.
Needs Debian's /usr/bin/chromium (scripts/install-browser.sh) and the playwright package (the test extra).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--song", default=str(ROOT / "examples" / "loop_amen_full.flac"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "web_page.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen([sys.executable, "-m", "samplecnn", "serve", "--model", args.model, "--port", "0"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        url = next(m.group(1) for line in proc.stderr
                   if (m := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)))
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            page.set_input_files("#file", args.song)
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
            page.wait_for_function("() => { const i = document.getElementById('taggram'); "
                                   "return i.complete && i.naturalWidth > 0; }")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
