"""The result record as text: one block per row, then a summary of the ratios."""

from __future__ import annotations

from typing import Any


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:10.2f}"


def _ratio(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.2f}"


def row_block(row: dict[str, Any]) -> list[str]:
    """The contenders of one row, fastest first."""
    lines = [f"{row['case']} {row['row']}  ({row['gflop']:.2f} GFLOP)"]
    lines.append(
        f"  {'contender':<22}{'median ms':>10} {'n':>2} {'GFLOP/s':>8} {'%peak':>6} "
        f"{'extra MiB':>9} {'auto/this':>9} {'agree':>8}"
    )
    auto = row["contenders"].get("dilconv auto", {}).get("median_s")
    items = sorted(row["contenders"].items(), key=lambda kv: kv[1]["median_s"])
    for name, c in items:
        extra = "" if c["extra_mib"] is None else f"{c['extra_mib']:.1f}"
        agree = c["agree_rel_diff"]
        lines.append(
            f"  {name:<22}{_ms(c['median_s'])} {c['repeats']:>2} {c['gflops']:8.1f} "
            f"{100 * c['peak_share']:5.1f}% {extra:>9} "
            f"{_ratio(auto / c['median_s'] if auto else None):>9} "
            f"{'' if agree is None else f'{agree:.0e}':>8}"
        )
    for name, why in row["skipped"].items():
        label = name if " " in name else f"dilconv {name}"  # a peer's label, or a method
        lines.append(f"  {label:<22}   not run: {why}")
    for name, value in row.get("derived", {}).items():
        lines.append(f"  {name}: {value:.4g}")
    return lines


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row: dilconv auto against the best of each peer, and against itself."""
    head = (
        f"{'case':<10}{'row':<16}{'auto ms':>10}{'/torch':>8}{'/tf':>8}{'/ndimage':>9}"
        f"{'/conv2d':>8}{'/best m':>8}  best method"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        auto = r["contenders"].get("dilconv auto", {}).get("median_s", float("nan"))
        best = r["ratio_best"]
        lines.append(
            f"{r['case']:<10}{r['row']:<16}{_ms(auto)}"
            f"{_ratio(best.get('torch')):>8}{_ratio(best.get('tensorflow')):>8}"
            f"{_ratio(best.get('ndimage')):>9}{_ratio(best.get('convolve2d')):>8}"
            f"{_ratio(r['auto_over_best_method']):>8}  {r['best_method'] or '-'}"
        )
    return lines


def render(result: dict[str, Any]) -> str:
    """The whole report: machine, every row, then the summary."""
    m = result["machine"]
    lines = [
        f"CPU: {m['cpu']} ({m['cpus']} CPUs), dilconv threads {m['dilconv_threads']}",
        f"BLAS: {m['blas']}",
        f"float32 matmul peak: {m['matmul_peak_gflops']:.1f} GFLOP/s (n={m['matmul_peak_n']}),"
        f" {m.get('matmul_peak_gflops_after', float('nan')):.1f} after",
        f"load average: {m['load_average']} before, {m.get('load_average_after')} after",
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
    ]
    for peer, why in result["missing_peers"].items():
        lines.append(f"peer {peer} not run: {why}")
    for row in result["rows"]:
        lines.append("")
        lines.extend(row_block(row))
    lines.append("")
    lines.append("ratios: dilconv auto time / the peer's best time (below 1: dilconv faster)")
    lines.extend(summary(result["rows"]))
    return "\n".join(lines)
