"""How a load test's result looks: a table, and an inline SVG plot of throughput and p99 latency per level.

The plot is drawn here (no plotting library): bars for requests per second, a line for p99 latency, one
column per concurrency level. Input is `LevelResult.to_dict()` values, so this module imports nothing.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["result_html", "result_svg", "result_text"]

_COLUMNS = ("concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "sent", "errors")
_WIDTH, _HEIGHT, _PAD = 420, 200, 36
_BAR_COLOUR, _LINE_COLOUR = "#4c78a8", "#e45756"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _errors(level: dict[str, Any]) -> str:
    if not level["errors"]:
        return "0"
    failed = {int(s): n for s, n in level["status_counts"].items() if int(s) >= 400 or int(s) == 0}
    return f"{level['errors']} (" + ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(failed.items())) + ")"


def _row(level: dict[str, Any]) -> list[str]:
    return [
        str(level["concurrency"]),
        f"{level['requests_per_s']:.1f}",
        _ms(level["p50_s"]),
        _ms(level["p90_s"]),
        _ms(level["p99_s"]),
        str(level["sent"]),
        _errors(level),
    ]


def result_text(url: str, levels: Sequence[dict[str, Any]]) -> str:
    rows = [list(_COLUMNS)] + [_row(level) for level in levels]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return f"BenchmarkResult({url})\n" + "\n".join(lines)


def result_svg(levels: Sequence[dict[str, Any]]) -> str:
    """Throughput bars (left axis) and p99 latency line (right axis), one column per level."""
    if not levels:
        return ""
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    top_rps = max(level["requests_per_s"] for level in levels) or 1.0
    top_p99 = max((level["p99_s"] or 0.0) for level in levels) or 1.0
    step = inner_w / len(levels)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" font-size="10" '
        'font-family="sans-serif">',
        f'<text x="{_PAD}" y="14" fill="{_BAR_COLOUR}">req/s (max {top_rps:.0f})</text>',
        f'<text x="{_WIDTH - _PAD}" y="14" fill="{_LINE_COLOUR}" text-anchor="end">p99 ms (max {top_p99 * 1000:.1f})'
        "</text>",
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" stroke="#888"/>',
    ]
    points = []
    for i, level in enumerate(levels):
        x = _PAD + step * i
        bar_h = inner_h * level["requests_per_s"] / top_rps
        parts.append(
            f'<rect x="{x + step * 0.2:.1f}" y="{_HEIGHT - _PAD - bar_h:.1f}" width="{step * 0.6:.1f}" '
            f'height="{bar_h:.1f}" fill="{_BAR_COLOUR}"/>'
        )
        label = f"c={level['concurrency']}"
        parts.append(f'<text x="{x + step / 2:.1f}" y="{_HEIGHT - _PAD + 14}" text-anchor="middle">{label}</text>')
        if level["p99_s"] is not None:
            points.append(f"{x + step / 2:.1f},{_HEIGHT - _PAD - inner_h * level['p99_s'] / top_p99:.1f}")
    if points:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{_LINE_COLOUR}" stroke-width="2"/>')
        parts.extend(
            f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="{_LINE_COLOUR}"/>' for p in points
        )
    parts.append("</svg>")
    return "".join(parts)


def result_html(url: str, levels: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{column}</th>" for column in _COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _row(level)) + "</tr>" for level in levels
    )
    return (
        f'<div class="litserve-benchmark"><p>load test of {html.escape(url)}</p>'
        f"<table><tr>{head}</tr>{rows}</table>{result_svg(levels)}</div>"
    )
