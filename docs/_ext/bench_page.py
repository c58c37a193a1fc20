"""The Benchmarks page: tables and one plot per case, from ``benchmarks/results.json``.

``render(results, image_dir)`` returns the page's Markdown and writes its plots; every
number on the page is read from the JSON record of one ``dilconv bench`` run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PEER_FAMILIES = {"torch": "PyTorch", "tensorflow": "TensorFlow", "ndimage": "ndimage.correlate",
                 "convolve2d": "convolve2d"}  # fmt: skip


def cases(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The rows grouped by case, in the order of the record."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["case"]), []).append(row)
    return grouped


def peers(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The contenders that are not dilconv, in the order they first appear."""
    found: list[str] = []
    for row in rows:
        for name in row["contenders"]:
            if not name.startswith("dilconv") and name not in found:
                found.append(name)
    return found


def _ms(contender: Mapping[str, Any] | None) -> str:
    if not contender or contender.get("median_s") is None:
        return "-"
    return f"{1000 * float(contender['median_s']):.3g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table of a case: times in ms, then auto over each peer family's best."""
    names = peers(rows)
    families = [f for f in PEER_FAMILIES if any(f in r.get("ratio_best", {}) for r in rows)]
    head = ["row", "dilconv `auto`", "fastest dilconv method"]
    head += list(names)
    head += [f"`auto` / best {PEER_FAMILIES[f]}" for f in families]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        contenders = row["contenders"]
        best = row.get("best_method")
        best_cell = "-"
        if best and best in contenders:
            best_cell = f"{_ms(contenders[best])} (`{best.removeprefix('dilconv ')}`)"
        cells = [str(row["row"]), _ms(contenders.get("dilconv auto"))]
        cells.append(best_cell)
        cells += [_ms(contenders.get(n)) for n in names]
        cells += [_ratio(row.get("ratio_best", {}).get(f)) for f in families]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(case: str, rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Horizontal bars per row: dilconv ``auto`` against every peer, time on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = ["dilconv auto", *peers(rows)]
    fig = Figure(figsize=(7.5, 0.45 * len(rows) * len(names) / 3 + 1.6), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        ys, xs = [], []
        for j, row in enumerate(rows):
            contender = row["contenders"].get(name)
            if contender and contender.get("median_s") is not None:
                ys.append(j + i * height)
                xs.append(1000 * float(contender["median_s"]))
        ax.barh(ys, xs, height=height, label=name, color=None if i else "#1f3b73")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(rows))])
    ax.set_yticklabels([str(r["row"]) for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time (ms, log scale; shorter is faster)")
    ax.set_title(f"{case}: dilconv against the peers")
    ax.legend(fontsize="small", loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    return path


def machine_lines(machine: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """A few lines on where and how the numbers were measured."""
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    return [
        f"- CPU: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs; "
        f"dilconv's threads: {machine.get('dilconv_threads', '?')}",
        f"- float32 matmul peak measured in the run: {machine.get('matmul_peak_gflops', 0):.1f} "
        "GFLOP/s",
        f"- versions: {versions}; Python {machine.get('python', '?')}",
        f"- repeats: {settings.get('repeats', '?')} (median taken); workspace limit "
        f"{settings.get('workspace_limit_mib', '?')} MiB",
    ]


def render(results: Mapping[str, Any], image_dir: Path, image_prefix: str) -> str:
    """The page body in Markdown; plots are written into ``image_dir``."""
    parts = machine_lines(results.get("machine", {}), results.get("settings", {}))
    missing = results.get("missing_peers") or {}
    if missing:
        parts.append("- peers not installed in that run: " + ", ".join(sorted(missing)))
    parts.append("")
    for case, rows in cases(results["rows"]).items():
        image = plot(case, rows, image_dir / f"bench_{case}.png")
        parts += [
            f"## {case}",
            "",
            table(rows),
            "",
            f"![{case}: median times of dilconv and the peers]({image_prefix}/{image.name})",
            "",
        ]
    return "\n".join(parts)
