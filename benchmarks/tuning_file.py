"""The tuning file the tuner writes and ``dsl/targets/cuda.py`` ``parse_tuning`` reads.

``{"fallback": op, "ops": {op: {device, date, torch, triton, method, complete,
"best": [{dtype, cols_hi, rows_lo, block_m, num_warps, grid, score,
speedup_vs_default}, ...], "measurements": [...]}}}``, sorted keys, lists of
numbers on one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path


def section(meta: dict, results: list, spec_dtypes: list[str]) -> dict:
    """One op's part of the file from its buckets' results (benchmarks.tune.Result); fp16, when not
    measured, copies bf16 (same size, same memory behaviour)."""
    best = []
    for r in results:
        scores = r.scores()
        b, c = r.bucket, r.best
        row = {"dtype": b.dtype, "cols_hi": b.cols_hi, "rows_lo": b.rows_lo, **asdict(c)}
        row |= {"score": round(scores[c], 4), "speedup_vs_default": round(scores[b.default] / scores[c], 4)}
        best.append(row)
    if "fp16" in spec_dtypes and not any(row["dtype"] == "fp16" for row in best):
        best += [{**row, "dtype": "fp16", "measured_as": "bf16"} for row in best if row["dtype"] == "bf16"]
    measurements = [
        {
            "dtype": r.bucket.dtype,
            "cols_hi": r.bucket.cols_hi,
            "rows_lo": r.bucket.rows_lo,
            "cells": [f"{m} {rows}x{cols}" for m, rows, cols in r.cells],
            "candidates": [{**asdict(c), "us": [round(t, 3) for t in ts]} for c, ts in sorted(r.times.items())],
            "skipped": [{**asdict(c), "reason": why} for c, why in sorted(r.skipped.items())],
        }  # fmt: skip
        for r in results
    ]
    return {**meta, "best": best, "measurements": measurements}


def tuning_text(data: dict) -> str:
    """Sorted keys, lists of numbers on one line."""

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(item.strip() for item in match.group(1).split(",") if item.strip()) + "]"

    return re.sub(r"\[([-+\d.eE,\s]*)\]", one_line, json.dumps(data, sort_keys=True, indent=1)) + "\n"


def merged(path: Path, sections: dict[str, dict]) -> dict:
    """The file's contents with these ops' sections replaced (the others and the fallback kept)."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"fallback": None, "ops": {}}
    data["ops"] = {**data["ops"], **sections}
    data["fallback"] = data.get("fallback") or next(iter(sorted(data["ops"])), None)
    return data
