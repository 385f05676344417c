"""How much of Table 3's seed spread comes from training, and how much from the evaluation clips.

Reads the per-clip probabilities that ``train.sh`` saved (CE and ICL, several seeds, each
model evaluated on a large evaluation set: 200 recordings x 10 seconds x 9 devices) and,
for evaluation designs of several sizes (random subsets of that set drawn the way the
embedded generator draws its evaluation split: whole recordings balanced over scenes, then
seconds spread over them, the same seconds for every device), reports for the overall
log-loss:

- eval sd: the spread of one model's value over evaluation sets of that design (what a
  different draw of evaluation clips changes), averaged over models;
- seed sd: the spread over seeds with one evaluation set held fixed (what a leaderboard
  sees), as a root-mean-square over evaluation sets;
- the same two for the paired difference ICL - CE (same seed), and the smallest paired
  difference detectable at 80 % power with n seeds (``harness.results.stats``).

    python benchmarks/power/study.py OUT/probs [--draws 400] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.results.stats import detectable_difference

SCENE_COUNT = 10
EPS = 1e-15
DESIGNS = {  # name: (recordings, files per device)
    "default (30 rec, 70 files/device)": (30, 70),
    "30 rec, all 300 files": (30, 300),
    "100 rec, 300 files": (100, 300),
    "150 rec, 300 files": (150, 300),
    "200 rec, 400 files": (200, 400),
    "100 rec, 1000 files": (100, 1000),
    "200 rec, 2000 files": (200, 2000),
}
SEED_COUNTS = (3, 5, 8)


def load(folder: Path) -> tuple[dict[str, dict[int, np.ndarray]], np.ndarray, np.ndarray]:
    """Per-clip losses ``losses[method][seed]`` (clips in one shared order), each clip's
    recording index and second."""
    losses: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    order = None
    for path in sorted(folder.glob("*.npz")):
        method, seed = path.stem.rsplit("-", 1)
        data = np.load(path)
        names = data["names"]
        sort = np.argsort(names)
        if order is None:
            order = names[sort]
        elif not np.array_equal(order, names[sort]):
            raise SystemExit(f"{path}: evaluation clips differ from the other runs")
        probs = data["probs"][sort]
        probs = probs / probs.sum(axis=1, keepdims=True)
        true = probs[np.arange(len(probs)), data["labels"][sort]]
        losses[method][int(seed)] = -np.log(np.clip(true, EPS, 1.0))
    if order is None:
        raise SystemExit(f"no .npz files in {folder}")
    fields = [Path(n).stem.split("-") for n in order]
    recording_names = ["-".join(f[:-2]) for f in fields]
    _, recording = np.unique(recording_names, return_inverse=True)
    second = np.array([int(f[-2]) for f in fields])
    scene = np.array([f[0] for f in fields])
    return dict(losses), recording, second, scene


def draw_design(rng, recording, second, scene, n_recordings, n_files):
    """A boolean mask over clips: ``n_recordings`` recordings balanced over scenes, then
    ``n_files`` (recording, second) pairs spread as evenly as possible over them."""
    per_scene = defaultdict(list)
    for r, s in zip(recording, scene, strict=True):
        per_scene[s].append(r)
    scenes = sorted(per_scene)
    pools = {s: rng.permutation(np.unique(per_scene[s])) for s in scenes}
    chosen = [pools[scenes[i % len(scenes)]][i // len(scenes)] for i in range(n_recordings)]
    counts = np.full(n_recordings, n_files // n_recordings)
    counts[rng.permutation(n_recordings)[: n_files % n_recordings]] += 1
    keep = set()
    for rec, count in zip(chosen, counts, strict=True):
        for sec in rng.choice(10, count, replace=False):
            keep.add((int(rec), int(sec)))
    return np.array([(int(r), int(s)) in keep for r, s in zip(recording, second, strict=True)])


def analyse(losses, recording, second, scene, draws: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    methods = sorted(losses)
    seeds = sorted(set.intersection(*(set(losses[m]) for m in methods)))
    report = {"seeds": seeds, "methods": methods, "designs": {}}
    for name, (n_rec, n_files) in DESIGNS.items():
        values = {m: np.empty((draws, len(seeds))) for m in methods}
        for d in range(draws):
            mask = draw_design(rng, recording, second, scene, n_rec, n_files)
            for m in methods:
                values[m][d] = [losses[m][s][mask].mean() for s in seeds]
        diff = values["icl"] - values["ce"] if {"icl", "ce"} <= set(methods) else None
        entry = {}
        for key, table in {**values, **({"icl - ce": diff} if diff is not None else {})}.items():
            eval_sd = float(np.sqrt(np.mean(table.var(axis=0, ddof=1))))
            seed_sd = float(np.sqrt(np.mean(table.var(axis=1, ddof=1))))
            entry[key] = {"mean": float(table.mean()), "eval_sd": eval_sd, "seed_sd": seed_sd}
            if key == "icl - ce":
                entry[key]["detectable"] = {
                    n: detectable_difference(seed_sd, n) for n in SEED_COUNTS
                }
        report["designs"][name] = entry
    return report


def render(report: dict) -> str:
    lines = [
        f"seeds {report['seeds']}; overall log-loss; sd over evaluation draws (eval) and over "
        "seeds with the evaluation set fixed (seed), root-mean-square over draws",
        "",
        "| design | CE eval sd | CE seed sd | ICL eval sd | ICL seed sd | ICL-CE mean | "
        "ICL-CE eval sd | ICL-CE seed sd | "
        + " | ".join(f"detectable, {n} seeds" for n in SEED_COUNTS)
        + " |",
        "|---" * (8 + len(SEED_COUNTS)) + "|",
    ]
    for name, entry in report["designs"].items():
        ce, icl, diff = entry["ce"], entry["icl"], entry["icl - ce"]
        cells = [
            name,
            f"{ce['eval_sd']:.3f}",
            f"{ce['seed_sd']:.3f}",
            f"{icl['eval_sd']:.3f}",
            f"{icl['seed_sd']:.3f}",
            f"{diff['mean']:+.3f}",
            f"{diff['eval_sd']:.3f}",
            f"{diff['seed_sd']:.3f}",
            *(f"{v:.3f}" if math.isfinite(v) else "-" for v in diff["detectable"].values()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probs", type=Path)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = analyse(*load(args.probs), draws=args.draws)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
