"""Shared by every benchmark: machine description and the result file.

Every benchmark writes ``benchmarks/results/<name>.json`` holding its figure,
the baseline measured in the same run, their ratio and the machine, and
prints one summary line.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def report(
    name: str,
    value: float,
    unit: str,
    baseline_name: str,
    baseline_value: float,
    higher_is_better: bool = True,
    extra: dict | None = None,
) -> dict:
    ratio = value / baseline_value if baseline_value else float("nan")
    result = {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": {"name": baseline_name, "value": round(baseline_value, 4), "unit": unit},
        "ratio": round(ratio, 4),
        "higher_is_better": higher_is_better,
        "machine": machine(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if extra:
        result["extra"] = extra
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"BENCH {name}: {value:.4g} {unit} vs {baseline_name} {baseline_value:.4g} {unit}"
          f" (ratio {ratio:.3f})", flush=True)
    return result


def rate(fn, seconds: float = 2.0, batch: int = 1000) -> float:
    """Calls of fn() per second, timed over about ``seconds``."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)
