"""The tuning file the tuner writes and ``dsl/targets/cuda.py`` ``parse_tuning`` reads.

``{"fallback": op, "ops": {op: {device, date, torch, triton, method, complete,
"best": [{dtype, cols_hi, rows_lo, block_m, num_warps, grid, [passes, block_n,]
score, speedup_vs_default}, ...], "measurements": [...]}}}``, sorted keys, lists of
numbers on one line. ``passes`` and ``block_n`` appear where a config launches another
kernel than its bucket's (the multi-pass kernel in a single-pass bucket).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path


def config_fields(config) -> dict:
    """A benchmarks.tune.Config as the file writes it: passes and block_n only where set."""
    return {k: v for k, v in asdict(config).items() if k not in ("passes", "block_n") or v}


def section(meta: dict, results: list, spec_dtypes: list[str]) -> dict:
    """One op's part of the file from its buckets' results (benchmarks.tune.Result); fp16, when not
    measured, copies bf16 (same size, same memory behaviour)."""
    best = []
    for r in results:
        scores = r.scores()
        b, c = r.bucket, r.best
        row = {"dtype": b.dtype, "cols_hi": b.cols_hi, "rows_lo": b.rows_lo, **config_fields(c)}
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
            "candidates": [{**config_fields(c), "us": [round(t, 3) for t in ts]} for c, ts in sorted(r.times.items())],
            "skipped": [{**config_fields(c), "reason": why} for c, why in sorted(r.skipped.items())],
        }  # fmt: skip
        for r in results
    ]
    return {**meta, "best": best, "measurements": measurements}


def tuning_text(data: dict) -> str:
    """Sorted keys, lists of numbers on one line."""

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(item.strip() for item in match.group(1).split(",") if item.strip()) + "]"

    return re.sub(r"\[([-+\d.eE,\s]*)\]", one_line, json.dumps(data, sort_keys=True, indent=1)) + "\n"


def bucket_key(row: dict) -> tuple:
    """A best or measurements row's bucket, in the file's order (the multi-pass bucket, cols_hi None, last)."""
    return row["dtype"], row["cols_hi"] is None, row["cols_hi"] or 0, row["rows_lo"]


def kept(old: dict | None, new: dict) -> dict:
    """An op's new section, with the rows of the buckets this run did not measure kept from the
    old one (each with the date it was measured); complete only if both are."""
    if not old:
        return new
    measured = {bucket_key(row) for row in new["best"]}
    date = old.get("date")
    section = dict(new, complete=bool(new.get("complete") and old.get("complete")))
    for key in ("best", "measurements"):
        rest = [{"date": date, **row} for row in old.get(key, []) if bucket_key(row) not in measured]
        section[key] = sorted(new[key] + rest, key=bucket_key)
    return section


def merged(path: Path, sections: dict[str, dict]) -> dict:
    """The file's contents with these ops' measured buckets replaced (their other buckets, the other
    ops and the fallback kept)."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"fallback": None, "ops": {}}
    data["ops"] = {**data["ops"], **{op: kept(data["ops"].get(op), new) for op, new in sections.items()}}
    data["fallback"] = data.get("fallback") or next(iter(sorted(data["ops"])), None)
    return data
