"""Drive the Gradio demo (app/app.py) in headless Chromium: screenshot it, forget a class, time the update.

    python bench/app_demo.py --classifier outputs/quickstart/model --generator outputs/c10-gen \
        --forget cat --screenshots docs/app --phone

Launches the app on 127.0.0.1, opens it in Debian's `chromium` (driven by playwright's Python API), waits
for the first grid, saves `<screenshots>-before.png`, ticks the class, presses Forget, and records how
long the classification panel and the regenerated grid took to show, then saves `<screenshots>-after.png`.
With `--phone` it does the same again at a phone's width (390 x 844 CSS pixels, `<screenshots>-phone-*.png`).
Each pass also measures the page at first sight and after the forget (`layout`, see `LAYOUT_JS`).
Prints a JSON report (with the machine) and, with `--report`, writes it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

from spm_hf.files import write_json

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# Chromium runs as root in CI containers (no sandbox there) and /dev/shm is small in containers.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
DESKTOP, PHONE = (1400, 1000), (390, 844)
# What a first look at the page shows, measured: the test image's drawn size (it is 28-32 px of its own),
# cells whose text is cut (scrollWidth > clientWidth), the receipt table's overflow, the grid's columns and
# whether the page scrolls sideways.
LAYOUT_JS = """() => {
  const cut = el => el.scrollWidth > el.clientWidth + 1;
  const img = document.querySelector('#test-image img');
  const grid = document.querySelector('#grid .grid-container');
  const receipt = document.querySelector('#receipt table');
  return {
    image: img ? {width: img.clientWidth, height: img.clientHeight, natural_width: img.naturalWidth,
                  rendering: getComputedStyle(img).imageRendering} : null,
    memory_table_cut: [...document.querySelectorAll('#memory-table th .header, #memory-table td span')]
                        .filter(cut).map(el => el.innerText),
    memory_table_overflow: (() => { const t = document.querySelector('#memory-table table');
                                    const box = document.querySelector('#memory-table');
                                    return t ? Math.max(0, Math.round(t.getBoundingClientRect().right
                                                        - box.getBoundingClientRect().right)) : null; })(),
    receipt_headers: receipt ? [...receipt.querySelectorAll('th')].map(th => th.innerText) : [],
    receipt_cut: receipt ? [...receipt.querySelectorAll('th, td')].filter(cut).map(el => el.innerText) : [],
    receipt_overflow: receipt ? receipt.scrollWidth - receipt.clientWidth : null,
    grid_columns: grid ? getComputedStyle(grid).gridTemplateColumns.split(' ').length : null,
    grid_overflow: grid ? grid.scrollWidth - grid.clientWidth : null,
    page_overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    top5_first: (document.querySelector('#top5-before h2, #top5-before .output-class') || {}).innerText || null,
  };
}"""


def find_chromium() -> str | None:
    """Path of a system Chromium (`$CHROMIUM` first), or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


def _wait_text(page, selector: str, js_condition: str, timeout_s: float) -> None:
    page.wait_for_function(
        f"(() => {{ const el = document.querySelector({selector!r}); if (!el) return false; "
        f"const text = el.innerText; return {js_condition}; }})()",
        timeout=timeout_s * 1000,
    )


def _screenshot(page, path: str) -> None:
    """A full-page screenshot with every gallery image loaded (gradio's gallery loads them lazily, as they
    scroll into view)."""
    height = page.evaluate("document.documentElement.scrollHeight")
    for y in range(0, height, 400):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(30)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(img => img.complete)", timeout=30_000)
    page.screenshot(path=path, full_page=True)


def forget_in_browser(url: str, forget: str, chromium: str, before_png: str | None = None,
                      after_png: str | None = None, timeout_s: float = 600, viewport=DESKTOP) -> dict:
    """Open the app, wait for the first grid, forget `forget`, wait for the top-5 and the regenerated grid.

    Returns the page text after the forget, the seconds from the click to each update and the layout
    (`LAYOUT_JS`) at first sight and after the forget. A viewport as narrow as a phone's is opened as a
    phone (touch, device scale 2)."""
    from playwright.sync_api import sync_playwright

    phone = viewport[0] < 600
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, is_mobile=phone,
                                    has_touch=phone, device_scale_factor=2 if phone else 1)
            start = time.perf_counter()
            page.goto(url, wait_until="domcontentloaded")
            _wait_text(page, "#grid-status", "text.includes('Nothing forgotten')", timeout_s)
            first_grid_s = time.perf_counter() - start
            _wait_text(page, "#top5-before", "text.split('\\n').length > 2", timeout_s)
            first_sight = page.evaluate(LAYOUT_JS)
            examples = page.locator("#test-examples").get_by_text(forget, exact=True)
            if examples.count():  # show a test image of the class about to be forgotten
                examples.first.click()
            _wait_text(page, "#top5-after", f"text.split('\\n').map(s => s.trim()).includes({forget!r})", timeout_s)
            if before_png:
                _screenshot(page, before_png)
            page.locator("#forget-classes").get_by_role("checkbox", name=forget, exact=True).check()
            start = time.perf_counter()
            page.click("#forget-button")
            # The label's lines are whole class names: a class has left the top-5 when no line equals it.
            _wait_text(page, "#top5-after", f"!text.split('\\n').map(s => s.trim()).includes({forget!r})", timeout_s)
            classification_s = time.perf_counter() - start
            _wait_text(page, "#grid-status", "text.includes('Forgotten rows')", timeout_s)
            grid_s = time.perf_counter() - start
            text = page.inner_text("body")
            top5_after, receipt = page.inner_text("#top5-after"), page.inner_text("#receipt")
            grid_status = page.inner_text("#grid-status")
            after_forget = page.evaluate(LAYOUT_JS)
            if after_png:
                _screenshot(page, after_png)
        finally:
            browser.close()
    return {"first_grid_s": first_grid_s, "classification_update_s": classification_s,
            "grid_update_s": grid_s, "page_text": text, "top5_after": top5_after, "receipt": receipt,
            "grid_status": grid_status, "layout": {"first_sight": first_sight, "after_forget": after_forget}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--forget", default="cat")
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--screenshots", help="path prefix: writes PREFIX-before.png and PREFIX-after.png")
    parser.add_argument("--phone", action="store_true",
                        help="also at a phone's width (390 px): PREFIX-phone-before.png, PREFIX-phone-after.png")
    parser.add_argument("--report", help="write the JSON report here")
    args = parser.parse_args(argv)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    import torch

    from spm_hf.cli import load_app_module

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium found (apt-get install chromium, or set CHROMIUM)")
    app = load_app_module()
    models = app.load_models(args.classifier, args.generator)
    demo = app.build_demo(models, app.find_examples(models.label_names), args.images_per_class, args.steps)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.launch_options())
    try:
        shots = (f"{args.screenshots}-before.png", f"{args.screenshots}-after.png") if args.screenshots else (None, None)
        timings = forget_in_browser(url, args.forget, chromium, *shots)
        phone = None
        if args.phone:
            shots = ((f"{args.screenshots}-phone-before.png", f"{args.screenshots}-phone-after.png")
                     if args.screenshots else (None, None))
            phone = forget_in_browser(url, args.forget, chromium, *shots, viewport=PHONE)["layout"]
    finally:
        demo.close()
    report = {
        "classifier": args.classifier, "generator": args.generator, "forget": args.forget,
        "images_per_class": args.images_per_class, "num_classes": len(models.label_names), "ddim_steps": args.steps,
        **{k: round(v, 3) for k, v in timings.items() if k.endswith("_s")},
        "receipt": " ".join(line for line in timings["receipt"].splitlines() if line.startswith("Forgot") or "copied" in line), "grid_status": timings["grid_status"],
        "layout": {"desktop": timings["layout"], **({"phone": phone} if phone else {})},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                   f"{torch.get_num_threads()}, device {models.device}, load average {os.getloadavg()[0]:.1f}",
    }
    print(json.dumps(report, indent=1))
    if args.report:
        write_json(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
