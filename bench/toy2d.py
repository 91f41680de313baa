"""Figure-1 toy: a tiny SPM on 2-D points; delete points from its memory and compare with retraining.

A small MLP encoder + the library's `PairwiseRelationFusion` head (class-mean prototypes, SPM-C) is trained
episodically: each mini-batch is its own support set with every query's own point left out
(`leave_one_out_prototypes`). The sample memory (`spm_hf.SampleMemory`) stores the raw 2-D points with
stable ids; prototypes are the class means of the encoder's embeddings of the points still in memory,
recomputed at prediction time (the points are encoded on the fly: the memory holds the data itself).

Then, for each scenario ("class": delete the whole class C with `forget(classes=...)`; "cluster": delete
class A's satellite cluster, 30 points next to classes B and C, with `forget(ids=...)`):
  (a) base SPM, full memory;
  (b) the same weights after the deletion from memory: no parameter changes;
  (c) an SPM retrained from scratch (same seed, same schedule) on the points that were kept.

The plot (one row per scenario) shows the three decision regions, and the script prints the share of a
grid over the data on which the predicted class differs: (b) vs (c) (deletion vs retrain: small is good)
and (a) vs (c) (how far retraining moved: the change that deletion has to reproduce), over the whole grid
and over the grid points near kept data (within `--near-radius` of a kept point; elsewhere, e.g. where a
deleted class used to be, both models only extrapolate and their disagreement says little).

What it shows (seeds 0-3, default settings; deletion-vs-retrain against before-vs-retrain, near kept data):
deleting a whole class moves the SPM most of the way to the retrained one (1.0-6.8% against 6.2-14.0%;
whole grid 1.0-3.2% against 28-43%, except seed 1 whose emptied region is extrapolated differently: 35%).
Deleting a sub-cluster of a class does not (6.1-10.5% against 6.0-10.0%): the encoder was trained with
the satellite labelled A and keeps mapping that region next to A's prototype, so removing the points from
memory changes about 1% of the grid. Deletion removes samples from the prediction path; the parameters keep
what they learned from them: report the residual gap, do not claim exact unlearning (docs/contract.md).

    python bench/toy2d.py --out docs/toy2d.png                 # both scenarios, ~10 s on 2 CPU cores
    python bench/toy2d.py --scenario class --steps 100 --out ''   # fast, no plot
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spm_hf import SampleMemory
from spm_hf.files import write_figure
from spm_hf.modeling_spm import PairwiseRelationFusion, class_prototypes, leave_one_out_prototypes


LABEL_NAMES = ["A", "B", "C"]
COLORS = ["#4C72B0", "#DD8452", "#55A868"]


def make_points(n_per_class: int, seed: int):
    """Three Gaussian blobs; class A has a satellite cluster next to class B (the "cluster" to delete).

    Returns (points (N, 2) float32, labels (N,) int64, ids [str], satellite (N,) bool).
    """
    rng = np.random.default_rng(seed)
    centers = np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.2]])
    points, labels, satellite = [], [], []
    for c, center in enumerate(centers):
        points.append(center + 0.6 * rng.standard_normal((n_per_class, 2)))
        labels.append(np.full(n_per_class, c))
        satellite.append(np.zeros(n_per_class, dtype=bool))
    n_sat = max(4, n_per_class // 4)
    points.append(np.array([1.2, 0.9]) + 0.3 * rng.standard_normal((n_sat, 2)))
    labels.append(np.zeros(n_sat, dtype=int))
    satellite.append(np.ones(n_sat, dtype=bool))
    points = np.concatenate(points).astype(np.float32)
    labels = np.concatenate(labels).astype(np.int64)
    satellite = np.concatenate(satellite)
    ids = [f"pt{i:04d}" for i in range(len(labels))]
    return points, labels, ids, satellite


class ToySPM(nn.Module):
    """MLP encoder (2 -> hidden -> hidden -> dim) + pairwise-relation fusion over class-mean prototypes."""

    def __init__(self, num_classes: int, hidden: int = 64, dim: int = 16):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )
        self.fusion = PairwiseRelationFusion(dim, dim, num_experts=1)

    def episodic_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.encoder(x)
        prototypes, present = leave_one_out_prototypes(emb, y, self.num_classes)
        return F.nll_loss(self.fusion(emb, prototypes, present), y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, memory: SampleMemory) -> torch.Tensor:
        """(N, 2) queries -> (N, C) log-probabilities read from the points currently in `memory`."""
        prototypes, present = class_prototypes(self.encoder(memory.values), memory.labels, self.num_classes)
        return self.fusion(self.encoder(x), prototypes, present)


def train(points: np.ndarray, labels: np.ndarray, steps: int, batch_size: int, lr: float, seed: int) -> ToySPM:
    torch.manual_seed(seed)
    model = ToySPM(len(LABEL_NAMES))
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(points), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=generator)[:batch_size]
        loss = model.episodic_loss(x[idx], y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def build_memory(points: np.ndarray, labels: np.ndarray, ids: list[str]) -> SampleMemory:
    memory = SampleMemory(LABEL_NAMES, (2,), torch.float32)
    memory.add(ids, labels, torch.from_numpy(points))
    return memory


def run_scenario(args, scenario: str) -> tuple[dict, dict]:
    """Train, delete, retrain for one scenario. Returns (numbers, arrays for the plot)."""
    points, labels, ids, satellite = make_points(args.n_per_class, args.seed)
    if scenario == "cluster":
        deleted = satellite
        request = {"ids": [i for i, d in zip(ids, deleted) if d]}
    else:
        deleted = labels == 2
        request = {"classes": [LABEL_NAMES[2]]}
    kept = ~deleted

    t0 = time.perf_counter()
    base = train(points, labels, args.steps, args.batch_size, args.lr, args.seed)
    t_train = time.perf_counter() - t0
    memory = build_memory(points, labels, ids)

    lo, hi = points.min(0) - 1.0, points.max(0) + 1.0
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], args.grid), np.linspace(lo[1], hi[1], args.grid))
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))

    pred_before = base.predict(grid, memory).argmax(-1)
    receipt = memory.forget(**request)
    pred_deleted = base.predict(grid, memory).argmax(-1)

    t0 = time.perf_counter()
    retrained = train(points[kept], labels[kept], args.steps, args.batch_size, args.lr, args.seed)
    t_retrain = time.perf_counter() - t0
    retrain_memory = build_memory(points[kept], labels[kept], [i for i, k in zip(ids, kept) if k])
    pred_retrained = retrained.predict(grid, retrain_memory).argmax(-1)

    def pct(a, b, where=None):
        differ = (a != b).double()
        return 100.0 * (differ.mean() if where is None else differ[where].mean()).item()

    # Grid points within `near_radius` of a kept point: where the retrained model has data to go by (far from
    # every kept point, e.g. where a deleted class used to be, both models only extrapolate).
    near = torch.cdist(grid, torch.from_numpy(points[kept])).min(dim=1).values <= args.near_radius

    x_kept, y_kept = torch.from_numpy(points[kept]), torch.from_numpy(labels[kept])
    result = {
        "scenario": scenario,
        "deleted_points": int(deleted.sum()),
        "kept_points": int(kept.sum()),
        "grid_points": int(grid.shape[0]),
        "disagreement_deletion_vs_retrain_pct": pct(pred_deleted, pred_retrained),
        "disagreement_before_vs_retrain_pct": pct(pred_before, pred_retrained),
        "disagreement_before_vs_deletion_pct": pct(pred_before, pred_deleted),
        "near_radius": args.near_radius,
        "near_grid_points": int(near.sum()),
        "near_disagreement_deletion_vs_retrain_pct": pct(pred_deleted, pred_retrained, near),
        "near_disagreement_before_vs_retrain_pct": pct(pred_before, pred_retrained, near),
        "acc_kept_points_deletion_pct": 100.0 - pct(base.predict(x_kept, memory).argmax(-1), y_kept),
        "acc_kept_points_retrain_pct": 100.0 - pct(retrained.predict(x_kept, retrain_memory).argmax(-1), y_kept),
        "forget_ms": receipt.seconds * 1e3,
        "train_s": t_train,
        "retrain_s": t_retrain,
    }
    arrays = {
        "gx": gx, "gy": gy, "preds": [pred_before, pred_deleted, pred_retrained],
        "points": points, "labels": labels, "deleted": deleted,
    }
    return result, arrays


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/toy2d.png", help="PNG path ('' to skip the plot)")
    parser.add_argument("--scenario", choices=["both", "class", "cluster"], default="both",
                        help="delete the whole class C, class A's satellite cluster (by ids), or both (two rows)")
    parser.add_argument("--n-per-class", type=int, default=120)
    parser.add_argument("--steps", type=int, default=600, help="training steps for each SPM")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--grid", type=int, default=200, help="grid points per axis")
    parser.add_argument("--near-radius", type=float, default=0.75,
                        help="'near kept data' = grid points within this distance of a kept point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    scenarios = ["class", "cluster"] if args.scenario == "both" else [args.scenario]
    results, rows = [], []
    for scenario in scenarios:
        result, arrays = run_scenario(args, scenario)
        print(json.dumps(result, indent=2))
        results.append(result)
        rows.append(arrays)
    if args.out:
        plot(args.out, rows, results)
        print(f"wrote {args.out}")
    return results


def plot(path, rows, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(COLORS)
    fig, axes = plt.subplots(len(rows), 3, figsize=(15, 5.3 * len(rows)), squeeze=False)
    for r, (arrays, result) in enumerate(zip(rows, results)):
        what = "class C" if result["scenario"] == "class" else "class A's satellite cluster"
        titles = [
            "(a) Base SPM (before unlearning)",
            f"(b) Unlearned by deletion: {what}\n({result['deleted_points']} points) removed from memory "
            f"in {result['forget_ms']:.2f} ms",
            f"(c) Unlearned by retraining from scratch\nwithout them ({result['retrain_s']:.1f} s)",
        ]
        notes = [
            f"differs from (c) on {result[f'{pre}disagreement_{key}_vs_retrain_pct']:.1f}% of the "
            + ("grid" if pre == "" else "grid near kept data")
            for key in ("before", "deletion")
            for pre in ("", "near_")
        ]
        notes = ["\n".join(notes[0:2]), "\n".join(notes[2:4]),
                 f"reference\n(near kept data: within {result['near_radius']} of a kept point)"]
        points, labels, deleted = arrays["points"], arrays["labels"], arrays["deleted"]
        gx, gy = arrays["gx"], arrays["gy"]
        for k, ax in enumerate(axes[r]):
            ax.pcolormesh(gx, gy, arrays["preds"][k].reshape(gx.shape).numpy(), cmap=cmap, vmin=-0.5,
                          vmax=2.5, alpha=0.35, shading="auto")
            show = np.ones(len(labels), dtype=bool) if k == 0 else ~deleted
            for c in range(len(LABEL_NAMES)):
                sel = show & (labels == c)
                if sel.any():
                    ax.scatter(points[sel, 0], points[sel, 1], s=9, color=COLORS[c], edgecolors="k",
                               linewidths=0.2, label=f"class {LABEL_NAMES[c]}")
            if k > 0:
                ax.scatter(points[deleted, 0], points[deleted, 1], s=14, marker="x", color="0.3",
                           linewidths=0.8, label="deleted")
            ax.set_title(titles[k], fontsize=10.5)
            ax.text(0.02, 0.02, notes[k], transform=ax.transAxes, fontsize=10,
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
            ax.set_aspect("equal")
        axes[r][1].legend(loc="upper right", fontsize=8)
    side = int(np.sqrt(results[0]["grid_points"]))
    fig.suptitle(f"Tiny SPM (MLP encoder + pairwise-relation fusion over class means) on 2-D points; "
                 f"decision regions on a {side}x{side} grid", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    write_figure(fig, path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
