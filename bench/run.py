"""The benchmark entry point: run the sections, print one table each, write JSON.

Every figure is a ratio against a baseline measured in the same run, because absolute
times on a shared machine are noise; the absolute numbers are kept for reference only.

    python -m bench                      # every section but peers
    python -m bench --quick              # small counts, for a smoke test
    python -m bench --only overhead,images --json out.json
    python -m bench --peers              # add the peer frameworks (installs them once)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .loadgen import REPO, generator_name

# name -> (module or module:object with TITLE, COLUMNS and run(quick, workdir), what it
# measures); run in this order
SECTIONS = {
    "overhead": ("bench.overhead", "serving overhead of a no-op model"),
    "images": ("bench.images", "image responses over HTTP"),
    "encoders": ("bench.images:Encoders", "pure encoder figures (bench/encoders.py)"),
    "batching": ("bench.batching", "the tiny diffusion pipeline, batching on vs off"),
    "continuous": ("bench.continuous", "Poisson arrivals, mixed steps: off, static, continuous"),
    "coldstart": ("bench.coldstart", "process start to first prediction; store vs folder"),
    "jobs": ("bench.jobs", "async jobs accepted per second on each store vs sync /predict"),
    "ray": ("bench.rayserve", "Ray Serve: ingress overhead, replicas (opt-in: --only ray)"),
    "painter": ("bench.painter", "the trained tiny painter vs random tiny-sd, request time"),
    "peers": ("bench.peers", "the same workloads on peer frameworks (opt-in: --peers)"),
}
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = "unknown"
    versions = {}
    for dist in ("impasto", "uvicorn", "uvloop", "httptools", "starlette", "pillow", "torch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    gen = generator_name()
    if gen == "wrk":
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        gen = (out.stdout or out.stderr).splitlines()[0].split(" [")[0] + " (1 thread)"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "gpu": "none (CPU only)" if shutil.which("nvidia-smi") is None else "present, unused",
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_generator": gen,
        "versions": versions,
        "load_average": _loadavg(),
    }


def _commit() -> str | None:
    """The checkout's commit, with ``+changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty.strip() else "")


def _loadavg() -> str | None:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return None


def section_module(name: str) -> Any:
    module, _, attr = SECTIONS[name][0].partition(":")
    found = importlib.import_module(module)
    return getattr(found, attr) if attr else found


def _cpu() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped
    children, monotonic time), or None where ``/proc/stat`` is missing."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # steal counts as busy
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return busy, ours, time.monotonic()


def foreign_cpu(before: tuple[float, float, float] | None) -> float | None:
    """The share of all cores that processes outside the benchmark used since ``before``
    (0.1: a tenth of the machine). Shared machines are noisy; this says how noisy."""
    after = _cpu()
    if before is None or after is None:
        return None
    wall = (after[2] - before[2]) * (os.cpu_count() or 1)
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, other / wall) if wall > 0 else None


def run_sections(names: list[str], quick: bool, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        module = section_module(name)
        print(f"\n== {name}: {SECTIONS[name][1]} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        cpu = _cpu()
        try:
            section = module.run(quick, workdir)
        except Exception as exc:
            traceback.print_exc()
            section = {
                "rows": [],
                "targets": [],
                "notes": [],
                "error": f"{type(exc).__name__}: {exc}",
            }
        section["title"] = module.TITLE
        section["columns"] = [key for key, _, _ in module.COLUMNS]
        section["seconds"] = round(time.monotonic() - started, 1)
        if getattr(module, "COUNTS_OWN_CPU", True):
            section["foreign_cpu"] = foreign_cpu(cpu)
        results[name] = section
        print(render_section(section, module.COLUMNS, markdown=False), flush=True)
    return results


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def render_section(
    section: dict[str, Any], columns: list[tuple[str, str, str]], *, markdown: bool
) -> str:
    """One section as a plain-text (or Markdown) table, then its targets and notes."""
    lines = [f"### {section['title']}" if markdown else f"\n{section['title']}"]
    if section.get("error"):
        lines.append(f"not measured: {section['error']}")
    rows = section["rows"]
    if rows:
        head = [title for _, title, _ in columns]
        body = [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
        if markdown:
            lines.append("")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
            lines += ["| " + " | ".join(cells) + " |" for cells in body]
            lines.append("")
        else:
            widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
            lines.append("  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                                   for i, (h, w) in enumerate(zip(head, widths, strict=True))))  # fmt: skip
            for cells in body:
                lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(cells, widths, strict=True))))  # fmt: skip
    for target in section.get("targets", []):
        mark = "met" if target["met"] else "MISSED"
        lines.append(f"{'- ' if markdown else '  '}[{mark}] {target['target']}: {target['value']}")
    for note in section.get("notes", []):
        lines.append(f"{'- ' if markdown else '  '}note: {note}")
    if section.get("foreign_cpu") is not None:
        lines.append(
            f"{'- ' if markdown else '  '}other processes on the machine used "
            f"{section['foreign_cpu']:.0%} of its CPU during this section "
            f"({section.get('seconds', 0):.0f} s)"
        )
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {m['date']} at commit {m.get('commit')} on {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, "
        f"{m['gpu']}, Python {m['python']}, {m['os']}; load generator {m['load_generator']}; "
        f"load average at the start {m['load_average']}; mode {report['mode']}.",
        "",
    ]
    for name, section in report["sections"].items():
        module = section_module(name)
        lines.append(render_section(section, module.COLUMNS, markdown=True))
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    parser.add_argument(
        "--only", help=f"comma-separated sections to run, from: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--peers", action="store_true", help="also run the peers section")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' log folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SECTIONS]
        if unknown:
            print(f"unknown sections: {', '.join(unknown)}; pick from {', '.join(SECTIONS)}")
            return 2
    else:
        names = [n for n in SECTIONS if n not in ("peers", "ray")]  # opt-in: --only
    if args.peers and "peers" not in names:
        names.append("peers")
    workdir = Path(tempfile.mkdtemp(prefix="impasto-bench-"))
    report: dict[str, Any] = {"machine": machine(), "mode": "quick" if args.quick else "full"}
    print(_machine_line(report["machine"]), flush=True)
    failed = False
    try:
        report["sections"] = run_sections(names, args.quick, workdir)
        failed = any(s.get("error") for s in report["sections"].values())
    finally:
        if args.keep_logs or failed:
            print(f"\nserver logs: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=_json_default))
    print(f"\nresults: {args.json}")
    if args.markdown:
        args.markdown.write_text(render_markdown(report))
        print(f"markdown: {args.markdown}")
    return 1 if failed else 0


def _machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['date']}: {m['cores']} cores ({m['cpu']}), {m['gpu']}, Python {m['python']}, "
        f"load generator {m['load_generator']}, load average {m['load_average']}"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Callable):  # type: ignore[arg-type]
        return repr(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")
