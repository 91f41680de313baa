"""Time the demo's forget + grid on this machine, headless, with the best driver available here.

    python bench/gpu/app_timing.py --classifier C --generator G --forget cat --out W/app [--mode auto]

Modes (`auto` takes the first that can run):

* `browser`: bench/app_demo.py: the app in headless Chromium (needs gradio, playwright and a Chromium);
  screenshots of the page before and after.
* `client`: the app (app/app.py's `build_demo`) launched on 127.0.0.1 and driven through gradio_client,
  as tests/test_app.py does: /generate (the pristine grid), /classify, /forget, /generate again. The grid
  a browser redraws after Forget is the second /generate here, so `grid_update_s` = /forget + /generate.
  The before/after "screenshots" are the two galleries, tiled.
* `direct`: no gradio on this machine (the device image has none): the same operations on the loaded models
  without the app: `forget` on the classifier and the generator, then one grid of the app's size and
  settings (DDIM steps, support 64, guidance 1.3) with `spm_hf.evaluation.grids.sample_grid`.

Writes `app_report.json` (the keys of bench/app_demo.py's report plus `mode`) and `app-before.png` /
`app-after.png` into --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

MODES = ("auto", "browser", "client", "direct")
APP_SUPPORT_SIZE = 64
APP_GUIDANCE = 1.3


def available_modes() -> list[str]:
    have = {m: importlib.util.find_spec(m) is not None for m in ("gradio", "gradio_client", "playwright")}
    modes = []
    if have["gradio"] and have["playwright"]:
        from app_demo import find_chromium

        if find_chromium():
            modes.append("browser")
    if have["gradio"] and have["gradio_client"]:
        modes.append("client")
    return modes + ["direct"]


def _machine(device) -> str:
    import torch

    name = torch.cuda.get_device_name(0) if str(device).startswith("cuda") else platform.processor() or platform.machine()
    return (f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
            f"device {device}, load average {os.getloadavg()[0]:.1f}")


def run_browser(args) -> dict:
    import app_demo

    report_path = os.path.join(args.out, "app_demo_report.json")
    app_demo.main(["--classifier", args.classifier, "--generator", args.generator, "--forget", args.forget,
                   "--images-per-class", str(args.images_per_class), "--steps", str(args.steps),
                   "--screenshots", os.path.join(args.out, "app"), "--report", report_path])
    with open(report_path) as f:
        return json.load(f)


def _gallery_png(gallery: list[dict], columns: int, path: str) -> None:
    from PIL import Image

    tiles = [Image.open(item["image"]).convert("RGB") for item in gallery]
    w, h = tiles[0].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * h), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * w, (k // columns) * h))
    sheet.save(path)


def run_client(args) -> dict:
    from gradio_client import Client, handle_file

    from spm_hf.cli import load_app_module

    app = load_app_module()
    models = app.load_models(args.classifier, args.generator, args.device)
    examples = app.find_examples(models.label_names)
    demo = app.build_demo(models, examples, args.images_per_class, args.steps)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.launch_options())
    try:
        client = Client(url, verbose=False)
        start = time.perf_counter()
        before, status = client.predict(0, api_name="/generate")
        first_grid = time.perf_counter() - start
        _gallery_png(before, args.images_per_class, os.path.join(args.out, "app-before.png"))
        image = next((p for p in examples if app.example_label(p) == args.forget), examples[0] if examples else None)
        top5_before = client.predict(handle_file(str(image)), api_name="/classify")[1] if image else None
        start = time.perf_counter()
        _, receipt, _, _, top5_after = client.predict([args.forget], handle_file(str(image)) if image else None,
                                                      api_name="/forget")
        classification = time.perf_counter() - start
        after, grid_status = client.predict(0, api_name="/generate")
        grid = time.perf_counter() - start
        _gallery_png(after, args.images_per_class, os.path.join(args.out, "app-after.png"))
    finally:
        demo.close()

    def labels(label):
        return [c["label"] for c in (label or {}).get("confidences", [])]

    gen = receipt["generator"]
    return {"first_grid_s": first_grid, "classification_update_s": classification, "grid_update_s": grid,
            "top5_before": labels(top5_before), "top5_after": labels(top5_after), "grid_status": grid_status,
            "receipt": f"classifier {receipt['classifier']['num_removed']} removed, generator {gen['num_removed']} "
                       f"removed; session copy {receipt.get('session_copy_ms')} ms",
            "machine": _machine(models.device)}


def run_direct(args) -> dict:
    import warnings

    import torch

    from spm_hf import SPMForImageClassification
    from spm_hf.evaluation.grids import sample_grid
    from spm_hf.generation import SPMDiffusionPipeline

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    clf = SPMForImageClassification.from_pretrained(args.classifier).eval().to(device)
    pipe = SPMDiffusionPipeline.from_pretrained(args.generator).to(device)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)

    def grid():
        return sample_grid(pipe, args.images_per_class, args.steps, APP_SUPPORT_SIZE, APP_GUIDANCE, seed=0)

    start = time.perf_counter()
    grid().save(os.path.join(args.out, "app-before.png"))
    first_grid = time.perf_counter() - start
    # In place: the app would first copy both memories for the visitor's session (`session_copy_ms` in its
    # receipt), which this mode does not time.
    start = time.perf_counter()
    receipts = {"classifier": clf.forget(classes=[args.forget]), "generator": pipe.forget(classes=[args.forget])}
    classification = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid().save(os.path.join(args.out, "app-after.png"))
    grid_s = time.perf_counter() - start
    return {"first_grid_s": first_grid, "classification_update_s": classification, "grid_update_s": grid_s,
            "receipt": f"classifier {receipts['classifier'].num_removed} removed in "
                       f"{receipts['classifier'].seconds * 1e3:.2f} ms, generator {receipts['generator'].num_removed}"
                       f" removed in {receipts['generator'].seconds * 1e3:.2f} ms",
            "machine": _machine(device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--forget", default="cat")
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--device", default=None)
    parser.add_argument("--mode", choices=MODES, default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    modes = available_modes()
    mode = modes[0] if args.mode == "auto" else args.mode
    if mode not in modes:
        raise SystemExit(f"--mode {mode}: not available on this machine (available: {modes})")
    report = {"browser": run_browser, "client": run_client, "direct": run_direct}[mode](args)
    report = {"mode": mode, "classifier": args.classifier, "generator": args.generator, "forget": args.forget,
              "images_per_class": args.images_per_class, "ddim_steps": args.steps,
              **{k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}}
    with open(os.path.join(args.out, "app_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
