"""Encoder speed and size for impasto's media outputs, against a naive baseline.

Images: a photo-like picture (smooth gradients plus sigma=6 noise) at 512 and 1024 px. Every
row is timed end to end as a client receives it: encode, base64, JSON body. The baseline is
the naive path, Pillow PNG at its default compress_level 6 in JSON; ratios are row / baseline
(below 1 is better). Videos (photo-like frames) are compared against libx264 preset medium.
Rows named ``impasto ...`` are what :func:`impasto.media.to_jsonable` ships.

    python bench/encoders.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from impasto.config import MediaConfig
from impasto.media import Video, to_jsonable

try:
    import simplejpeg
except ImportError:  # optional: only compared when installed
    simplejpeg = None


def photo_like(size: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus Gaussian noise (sigma 6), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack(
        [
            128 + 90 * np.sin(6 * x + 1 + seed),
            128 + 90 * np.cos(4 * y + 2 * x),
            128 + 80 * np.sin(5 * (x + y)),
        ],
        axis=-1,
    )
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def _timed(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Median milliseconds over ``reps`` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def _pil(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _json_body(data: bytes, content_type: str) -> bytes:
    b64 = base64.b64encode(data).decode("ascii")
    return json.dumps({"output": {"data": b64, "content_type": content_type}}).encode()


def _image_candidates(img: Image.Image, arr: np.ndarray) -> dict[str, Callable[[], bytes]]:
    """Name -> a function returning the whole JSON body."""

    def pil(fmt: str, ctype: str, **options: Any) -> Callable[[], bytes]:
        return lambda: _json_body(_pil(img, fmt, **options), ctype)

    def shipped(fmt: str, **config: Any) -> Callable[[], bytes]:
        cfg = MediaConfig(**config)
        return lambda: json.dumps({"output": to_jsonable(img, format=fmt, config=cfg)}).encode()

    rows = {
        "baseline: Pillow PNG level 6": pil("PNG", "image/png"),
        "Pillow PNG level 1": pil("PNG", "image/png", compress_level=1),
        "Pillow PNG level 1, Z_RLE": pil("PNG", "image/png", compress_level=1, compress_type=3),
        "Pillow PNG level 0 (stored)": pil("PNG", "image/png", compress_level=0),
        "impasto png (Up filter, Z_RLE, level 1)": shipped("png"),
        "impasto png, level 6 (Pillow)": shipped("png", png_compress_level=6),
        "Pillow JPEG q90 4:4:4": pil("JPEG", "image/jpeg", quality=90, subsampling=0),
        "impasto jpeg q90 (Pillow, 4:2:0)": shipped("jpeg"),
        "Pillow WebP q90 method 4 (default)": pil("WEBP", "image/webp", quality=90),
        "Pillow WebP q80 method 0": pil("WEBP", "image/webp", quality=80, method=0),
        "impasto webp q90 (method 0)": shipped("webp"),
    }
    if simplejpeg is not None:
        sj = simplejpeg.encode_jpeg

        def sj_row(src: Callable[[], np.ndarray], sub: str) -> Callable[[], bytes]:
            return lambda: _json_body(sj(src(), quality=90, colorsubsampling=sub), "image/jpeg")

        rows["simplejpeg q90 4:4:4 (default), from array"] = sj_row(lambda: arr, "444")
        rows["simplejpeg q90 4:2:0, from array"] = sj_row(lambda: arr, "420")
        rows["simplejpeg q90 4:2:0, from PIL image"] = sj_row(lambda: np.asarray(img), "420")
    return rows


def _x264(frames: list[np.ndarray], fps: float, preset: str, to_file: Path | None) -> bytes:
    target: Any = to_file or io.BytesIO()
    with av.open(target, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": preset}
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return to_file.read_bytes() if to_file else target.getvalue()


def _video_candidates(frames: list[np.ndarray], quick: bool) -> dict[str, Callable[[], bytes]]:
    images = [Image.fromarray(a) for a in frames]
    video = Video(images, fps=8)
    tmp = Path("/tmp/impasto-bench.mp4")
    lossless = {"lossless": True, "method": 0}

    def shipped(fmt: str) -> Callable[[], bytes]:
        return lambda: json.dumps({"output": to_jsonable(video, format=fmt)}).encode()

    def body(fn: Callable[[], bytes], ctype: str) -> Callable[[], bytes]:
        return lambda: _json_body(fn(), ctype)

    rows = {
        "baseline: x264 preset medium, in memory": body(
            lambda: _x264(frames, 8, "medium", None), "video/mp4"
        ),
        "x264 preset medium, to a file": body(lambda: _x264(frames, 8, "medium", tmp), "video/mp4"),
        "x264 preset ultrafast, in memory": body(
            lambda: _x264(frames, 8, "ultrafast", None), "video/mp4"
        ),
        "impasto mp4 (x264 veryfast, crf 20)": shipped("mp4"),
        "impasto gif (FASTOCTREE pre-quantized)": shipped("gif"),
        "Pillow animated WebP lossless method 0": body(
            lambda: _pil(images[0], "WEBP", save_all=True, append_images=images[1:], **lossless),
            "image/webp",
        ),
        "impasto webp (lossy q90, method 0)": shipped("webp"),
    }
    if not quick:  # seconds per call: measured once, only in the full run
        rows["Pillow GIF from RGB frames (naive)"] = body(
            lambda: _pil(images[0], "GIF", save_all=True, append_images=images[1:]), "image/gif"
        )
    return rows


def _measure(
    group: str, candidates: dict[str, Callable[[], bytes]], reps: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, fn in candidates.items():
        ms, body = _once(fn) if "naive" in name else _timed(fn, reps)
        rows.append({"group": group, "name": name, "ms": round(ms, 2), "json_bytes": len(body)})
    base = rows[0]
    for row in rows:
        row["ms_ratio"] = round(row["ms"] / base["ms"], 3)
        row["bytes_ratio"] = round(row["json_bytes"] / base["json_bytes"], 3)
    return rows


def _once(fn: Callable[[], bytes]) -> tuple[float, bytes]:
    start = time.perf_counter()
    body = fn()
    return (time.perf_counter() - start) * 1000, body


def _in_threads(images: list[Image.Image]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        return list(pool.map(lambda img: to_jsonable(img, format="png"), images))


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure every encoder; one dict per row (group, name, ms, json_bytes, ratios)."""
    reps = 3 if quick else 9
    rows: list[dict[str, Any]] = []
    for size in (512, 1024):
        arr = photo_like(size)
        img = Image.fromarray(arr)
        rows += _measure(f"image {size}x{size}", _image_candidates(img, arr), reps)
    count, side = (8, 256) if quick else (25, 512)
    frames = [photo_like(side, seed=i) for i in range(count)]
    rows += _measure(f"video {count}x{side}x{side}", _video_candidates(frames, quick), reps)
    batch = [Image.fromarray(photo_like(1024, seed=i)) for i in range(4)]
    threaded = {  # whether encoding a multi-image output in threads would pay on this host
        "baseline: to_jsonable(4 PNGs), one by one": lambda: json.dumps(
            to_jsonable(batch, format="png")
        ).encode(),
        "4 PNGs encoded in 4 threads": lambda: json.dumps(_in_threads(batch)).encode(),
    }
    rows += _measure("batch of 4 images 1024x1024", threaded, reps)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            print(f"\n{group}")
            print(f"  {'encoder':<44} {'ms':>9} {'x base':>7} {'JSON bytes':>11} {'x base':>7}")
        print(
            f"  {row['name']:<44} {row['ms']:>9.2f} {row['ms_ratio']:>7.3f} "
            f"{row['json_bytes']:>11,} {row['bytes_ratio']:>7.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller video")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = run(args.quick)
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
