"""Measure how often the tiny painter draws what it is asked, with plain diffusers.

    python examples/tiny-painter/evaluate.py examples/tiny-painter/data/pipeline --seeds 8

Runs every color x shape prompt, a background prompt per color pair and the "two ..."
prompts, reads each image back with judge.py and prints the share of images whose color,
shape, background and count match the prompt. ``--sheet`` saves the images as one PNG.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge import Verdict, judge
from scenes import BACKGROUNDS, COLORS, SHAPES, Scene

GROUPS = ("objects", "backgrounds", "counts")


def scenes_for(group: str) -> list[Scene]:
    """The prompts of one evaluation group."""
    if group == "objects":  # "a red circle"
        return [Scene(c, s) for c, s in itertools.product(COLORS, SHAPES)]
    if group == "backgrounds":  # "a red circle on a blue background", 2 shapes per pair
        pairs = [(c, b) for c, b in itertools.product(COLORS, BACKGROUNDS) if c != b]
        return [
            Scene(c, SHAPES[i % len(SHAPES)], b, background_named=True)
            for i, (c, b) in enumerate(pairs)
        ]
    if group == "counts":  # "two red circles"
        return [Scene(c, s, count=2) for c, s in itertools.product(COLORS, SHAPES)]
    raise ValueError(group)


def score(scene: Scene, verdict: Verdict) -> dict[str, bool]:
    return {
        "color": verdict.color == scene.color,
        "shape": verdict.shape == scene.shape,
        "background": verdict.background == scene.background,
        "count": verdict.count == scene.count,
    }


def summarize(results: list[tuple[Scene, Verdict]]) -> dict[str, Any]:
    """Overall hit rates, and per color and per shape."""
    total: dict[str, list[bool]] = defaultdict(list)
    by: dict[str, list[bool]] = defaultdict(list)
    for scene, verdict in results:
        hits = score(scene, verdict)
        for key, hit in hits.items():
            total[key].append(hit)
        by[f"color={scene.color}"].append(hits["color"])
        by[f"shape={scene.shape}"].append(hits["shape"])
    rate = {k: round(sum(v) / len(v), 4) for k, v in total.items()}
    return {"n": len(results), **rate, "by": {k: round(sum(v) / len(v), 4) for k, v in by.items()}}


def generate(pipe: Any, scenes: list[Scene], seeds: int, steps: int, guidance: float,
             batch: int = 32) -> list[tuple[Scene, Any]]:  # fmt: skip
    import torch

    jobs = [(s, seed) for s in scenes for seed in range(seeds)]
    out = []
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        images = pipe(
            [s.prompt for s, _ in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(seed) for _, seed in chunk],
            width=64,
            height=64,
        ).images
        out.extend(zip([s for s, _ in chunk], images, strict=True))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("pipeline", type=Path)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="the example's default_steps")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--scheduler", default=None, help="a diffusers scheduler class name")
    p.add_argument("--groups", default=",".join(GROUPS))
    p.add_argument("--sheet", type=Path, default=None, help="save every image into one PNG")
    args = p.parse_args(argv)

    import diffusers
    import torch
    from PIL import Image

    from impasto.diffusers.pipelines import quiet

    torch.set_num_threads(2)
    with quiet():
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler:
        pipe.scheduler = getattr(diffusers, args.scheduler).from_config(
            pipe.scheduler.config, clip_sample=False
        )
    report: dict[str, Any] = {}
    sheet: list[Any] = []
    for group in args.groups.split(","):
        started = time.perf_counter()
        images = generate(pipe, scenes_for(group), args.seeds, args.steps, args.guidance)
        sheet.extend(img for _, img in images)
        report[group] = summarize([(s, judge(img)) for s, img in images])
        report[group]["seconds"] = round(time.perf_counter() - started, 1)
        print(group, json.dumps(report[group]), flush=True)
    if args.sheet:
        cols = args.seeds * 4
        grid = Image.new("RGB", (64 * cols, 64 * -(-len(sheet) // cols)), "white")
        for i, img in enumerate(sheet):
            grid.paste(img, (64 * (i % cols), 64 * (i // cols)))
        grid.save(args.sheet)
    return report


if __name__ == "__main__":
    main()
