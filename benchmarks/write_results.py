"""Write ``benchmarks/RESULTS.md`` from the record of ``benchmarks/run.sh``.

Reads ``benchmarks/results.json`` and writes the whole of ``benchmarks/RESULTS.md``:
the machine, the command, every target of the performance issues checked against
the numbers (met or not, with the ratio) and one table per case. Nothing in it is
written by hand: to change it, change this script or the record::

    .venv/bin/python benchmarks/write_results.py [--json results.json] [--out RESULTS.md]
        [--command "..."] [--dask dask_results.md] [--readme README.md]

It also rewrites the README's headline table (between its two marker lines) from the
same record, so the README cannot quote another run than RESULTS.md.

How to read the numbers, where the time goes and notes on earlier runs are kept by
hand in ``benchmarks/NOTES.md``, which RESULTS.md links to.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
#: The first line of the written file.
GENERATED = (
    "<!-- Written by benchmarks/write_results.py from benchmarks/results.json; "
    "do not edit by hand. -->"
)

#: The headings every written file has, in order (the per-case tables follow).
SECTIONS = (
    "# Benchmark results",
    "## `dilconv bench`: dilconv against PyTorch, TensorFlow and SciPy",
    "### Machine and command",
    "### Targets",
    "### dilconv auto against the peers",
    "### Every contender (median ms)",
)


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def case_table(rows: list[dict[str, Any]]) -> list[str]:
    """One markdown table for the rows of a case: every contender's median in ms."""
    names: list[str] = []
    for r in rows:
        for n in r["contenders"]:
            if n not in names:
                names.append(n)
    head = "| row | " + " | ".join(names) + " | auto/best method |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for r in rows:
        cells = []
        for n in names:
            c = r["contenders"].get(n)
            cells.append("-" if c is None else f"{c['median_s'] * 1e3:.1f}")
        lines.append(
            f"| {r['row']} | " + " | ".join(cells) + f" | {fmt(r['auto_over_best_method'])} |"
        )
    return lines


def rate_table(rows: list[dict[str, Any]], peak: float) -> list[str]:
    """dilconv auto's rate, share of the matmul peak, memory and ratios to the peers.

    The share is of the higher of the two peaks measured (before and after the rows):
    a peak measured while another job held a core understates the machine.
    """
    lines = [
        "| case | row | auto ms | GFLOP/s | % of peak | extra MiB | /torch best | /tf best "
        "| /ndimage | /convolve2d | best method |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["contenders"]["dilconv auto"]
        b = r["ratio_best"]
        lines.append(
            f"| {r['case']} | {r['row']} | {a['median_s'] * 1e3:.1f} | {a['gflops']:.1f} | "
            f"{100 * a['gflops'] / peak:.1f} | {fmt(a['extra_mib'], 1)} | {fmt(b.get('torch'))} | "
            f"{fmt(b.get('tensorflow'))} | {fmt(b.get('ndimage'))} | "
            f"{fmt(b.get('convolve2d'))} | {r['best_method'] or '-'} |"
        )
    return lines


def _growth(rows: list[dict[str, Any]], last: str, label: str, verdict: Any) -> list[str]:
    """The target "dilconv auto at row ``last`` takes at most 1.3x its time at d=1"."""
    by = {r["row"]: r["contenders"]["dilconv auto"]["median_s"] for r in rows}
    if "d=1" not in by or last not in by:
        return []
    growth = by[last] / by["d=1"]
    return [f"- {label}: {verdict(growth <= 1.3)} ({growth:.2f}x)"]


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Each target of the issue, checked row by row."""
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    seed = [r for r in rows if r["case"] == "seed"]
    if seed:
        nd = [r["ratio_best"].get("ndimage") for r in seed]
        tor = [r["ratio_best"].get("torch") for r in seed]
        if all(v is not None for v in nd):
            out.append(
                f"- seed, <= 0.4x ndimage.correlate at every dilation: {verdict(max(nd) <= 0.4)}"
                f" (ratios {', '.join(fmt(v) for v in nd)})"
            )
        if all(v is not None for v in tor):
            out.append(
                f"- seed, <= 0.35x PyTorch at every dilation: {verdict(max(tor) <= 0.35)}"
                f" (ratios {', '.join(fmt(v) for v in tor)})"
            )
        out.extend(_growth(seed, "d=16", "seed, time at d=16 within 1.3x of d=1", verdict))
    for case in ("context", "aspp", "wave", "transpose"):
        sel = [r for r in rows if r["case"] == case]
        if not sel:
            continue
        tor = [(r["row"], r["ratio_best"].get("torch")) for r in sel]
        bad = [f"{row} {fmt(v)}" for row, v in tor if v is not None and v > 1.0]
        worst = max((v for _, v in tor if v is not None), default=None)
        out.append(
            f"- {case}, <= 1.0x the better PyTorch layout: {verdict(not bad)}"
            f" (worst {fmt(worst)}{'; over: ' + ', '.join(bad) if bad else ''})"
        )
        out.append(_ahead_of_tensorflow(case, sel, verdict))
    out.extend(layout_and_first_call_targets(rows, verdict))
    out.extend(rank_targets(rows, verdict))
    out.extend(stream_targets(rows, verdict))
    back = [r for r in rows if r["case"] == "backward"]
    for r in back:
        v = r["ratio_best"].get("torch")
        if v is not None:
            out.append(
                f"- backward {r['row']}, <= 1.0x PyTorch autograd: {verdict(v <= 1.0)} ({fmt(v)})"
            )
    extra = [
        (r["case"], r["row"], n, c["extra_mib"])
        for r in rows
        for n, c in r["contenders"].items()
        if c["extra_mib"] is not None
    ]
    over = [f"{c} {row} {n} {m:.0f} MiB" for c, row, n, m in extra if m > 256]
    worst_auto = max((m for _, _, n, m in extra if n == "dilconv auto"), default=0.0)
    out.append(
        f"- peak extra memory <= 256 MiB: {verdict(not over)} (dilconv auto at most "
        f"{worst_auto:.1f} MiB{'; over: ' + ', '.join(over) if over else ''})"
    )
    auto = [
        (r["case"], r["row"], r["auto_over_best_method"])
        for r in rows
        if r["auto_over_best_method"] is not None
    ]
    slow = [f"{c} {row} {v:.2f}" for c, row, v in auto if v > 1.1]
    out.append(
        f"- method='auto' within 10% of the best dilconv method on every case: "
        f"{verdict(not slow)}{' (over: ' + ', '.join(slow) + ')' if slow else ''}"
    )
    return out


Verdict = Callable[[bool], str]


def _ahead_of_tensorflow(case: str, sel: list[dict[str, Any]], verdict: Verdict) -> str:
    """The TensorFlow target of one case, with the rows its CPU build refused.

    A case where TensorFlow refused every row is reported as not measured, not as met.
    """
    tf = [(r["row"], r["ratio_best"].get("tensorflow")) for r in sel]
    measured = [(row, v) for row, v in tf if v is not None]
    refused = [r["row"] for r in sel if any(k.startswith("tf") for k in r["skipped"])]
    label = f"- {case}, ahead of TensorFlow (or listed as refused where its CPU refuses): "
    if not measured:
        return label + f"not measured (TensorFlow refused on: {', '.join(refused) or '-'})"
    behind = [(row, v) for row, v in measured if v >= 1.0]
    return (
        f"{label}{verdict(not behind)} (worst {fmt(max(v for _, v in measured))}"
        f"{'; behind: ' + _listed(behind) if behind else ''}"
        f"{'; refused on: ' + ', '.join(refused) if refused else ''})"
    )


def _listed(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{row} {fmt(v)}" for row, v in pairs)


def layout_and_first_call_targets(rows: list[dict[str, Any]], verdict: Verdict) -> list[str]:
    """Fast from the first call, in the caller's layout: the cold, NCHW and copy figures."""
    out = []
    for label, limit in (("warm cache", 1.2), ("empty cache", 2.0)):
        r = next((r for r in rows if r["case"] == "cold" and r["row"] == label), None)
        v = None if r is None else r["derived"].get("dilconv_over_ndimage")
        if v is not None:
            out.append(
                f"- cold, {label}: the 512x512 script <= {limit}x the same with "
                f"ndimage.correlate: {verdict(v <= limit)} ({fmt(v)})"
            )
    r = next((r for r in rows if r["case"] == "cold" and r["row"] == "import"), None)
    v = None if r is None else r["derived"].get("import_over_numpy")
    if v is not None:
        out.append(
            "- cold, import: `import dilconv` <= 2.0x `import numpy`, the interpreter's "
            f"start-up subtracted from both: {verdict(v <= 2.0)} ({fmt(v)})"
        )
    nchw = [(f"{r['case']} {r['row']}", r["derived"]["nchw_over_nhwc"]) for r in rows
            if "nchw_over_nhwc" in r.get("derived", {})]  # fmt: skip
    if nchw:
        worst = max(v for _, v in nchw)
        over = [(row, v) for row, v in nchw if v > 1.05]
        out.append(
            f"- NCHW call <= 1.05x the NHWC call on every row: {verdict(not over)} "
            f"(worst {fmt(worst)}{'; over: ' + _listed(over) if over else ''})"
        )
    for case in ("aspp", "context", "wave"):
        sel = [(r["row"], r["derived"]["nchw_over_torch_best"]) for r in rows
               if r["case"] == case and "nchw_over_torch_best" in r.get("derived", {})]  # fmt: skip
        if sel:
            over = [(row, v) for row, v in sel if v > 1.0]
            out.append(
                f"- {case}, dilconv on NCHW arrays <= 1.0x the better PyTorch layout: "
                f"{verdict(not over)} (worst {fmt(max(v for _, v in sel))}"
                f"{'; over: ' + _listed(over) if over else ''})"
            )
    copy = [(r["row"], r["derived"]["auto_over_copyto"]) for r in rows
            if r["case"] == "seed" and "auto_over_copyto" in r.get("derived", {})]  # fmt: skip
    if copy:
        out.append(
            f"- seed, <= 1.25x np.copyto of the same array at every dilation: "
            f"{verdict(max(v for _, v in copy) <= 1.25)} ({_listed(copy)})"
        )
    return out


def rank_targets(rows: list[dict[str, Any]], verdict: Verdict) -> list[str]:
    """One and three dimensions: signal1d, tcn1d, volume3d and their backward passes."""
    out = []
    signal = [r for r in rows if r["case"] == "signal1d"]
    tor = [(r["row"], r["ratio_best"].get("torch")) for r in signal]
    if signal and all(v is not None for _, v in tor):
        worst = max(v for _, v in tor if v is not None)
        out.append(
            f"- signal1d, <= 0.35x PyTorch conv1d at every dilation: {verdict(worst <= 0.35)}"
            f" ({_listed(tor)})"
        )
        out.extend(_growth(signal, "d=4096", "signal1d, time at d=4096 <= 1.3x d=1", verdict))
    for case in ("tcn1d", "volume3d", "back1d3d"):
        sel = [r for r in rows if r["case"] == case]
        if not sel:
            continue
        tor = [(r["row"], r["ratio_best"].get("torch")) for r in sel]
        over = [(row, v) for row, v in tor if v is not None and v > 1.0]
        worst = max((v for _, v in tor if v is not None), default=None)
        peer = "PyTorch autograd" if case == "back1d3d" else "the better PyTorch layout"
        out.append(
            f"- {case}, <= 1.0x {peer}: {verdict(not over)} (worst {fmt(worst)}"
            f"{'; over: ' + _listed(over) if over else ''})"
        )
        if case == "back1d3d":
            continue
        out.append(_ahead_of_tensorflow(case, sel, verdict))
    return out


def stream_targets(rows: list[dict[str, Any]], verdict: Verdict) -> list[str]:
    """Streaming: against the batch forward, real time, many streams, pytorch-tcn."""
    by = {r["row"]: r.get("derived", {}) for r in rows if r["case"] == "stream"}
    out = []
    for row, limit in (("block=256", 1.3), ("block=16", 4.0)):
        v = by.get(row, {}).get("over_batch_forward")
        if v is not None:
            out.append(
                f"- stream, {row}: <= {limit}x the batch forward: {verdict(v <= limit)} ({fmt(v)})"
            )
    us = by.get("block=1", {}).get("us_per_sample_per_stream")
    if us is not None:
        out.append(
            f"- stream, one sample at a time <= 62.5 us (real time at 16 kHz): "
            f"{verdict(us <= 62.5)} ({us:.1f} us)"
        )
    share = by.get("batch=64 block=16", {}).get("per_stream_throughput_vs_one")
    if share is not None:
        out.append(
            f"- stream, batch 64 at block 16: per-stream throughput >= 0.8x one stream's: "
            f"{verdict(share >= 0.8)} ({fmt(share)})"
        )
    for row in ("tcn block=1", "tcn block=16"):
        d = by.get(row, {})
        if "pytorch_tcn_us_per_block" in d:
            v = d["dilconv_us_per_block"] / d["pytorch_tcn_us_per_block"]
            out.append(
                f"- stream, {row}: <= 0.5x pytorch-tcn's time per block: {verdict(v <= 0.5)} "
                f"({fmt(v)}: {d['dilconv_us_per_block']:.0f} us against "
                f"{d['pytorch_tcn_us_per_block']:.0f} us)"
            )
    history = by.get("block=256", {}).get("history_kib_per_stream")
    if history is not None:
        out.append(f"- stream, memory per stream: the history only, {history:.1f} KiB")
    return out


def render(record: dict[str, Any], command: str) -> str:
    """The whole of RESULTS.md for ``record``, run as ``command``."""
    m = record["machine"]
    rows = record["rows"]
    lines = [
        GENERATED,
        SECTIONS[0],
        "",
        SECTIONS[1],
        "",
        "Written by `benchmarks/write_results.py` from `benchmarks/results.json`, the record of",
        "one run of the command below (every row's contenders timed side by side in that one",
        "process, alternating, warm-up first, medians; times in milliseconds; ratios are",
        'dilconv `method="auto"` time over the peer\'s time, below 1 means dilconv is faster).',
        "How to read the numbers, where the time goes and notes on earlier runs:",
        "[NOTES.md](NOTES.md).",
        "",
        SECTIONS[2],
        "",
        f"- CPU: {m['cpu']}, {m['cpus']} CPUs; dilconv's own threads: {m['dilconv_threads']}",
        f"- BLAS (threadpoolctl): {m['blas']}",
        "- thread pools: "
        + "; ".join(
            f"{p.get('internal_api')} {p.get('prefix')} x{p.get('num_threads')}"
            for p in m["thread_pools"]
        ),
        f"- float32 matmul peak (n={m['matmul_peak_n']}), measured in the run: "
        f"{m['matmul_peak_gflops']:.1f} GFLOP/s before, "
        f"{m.get('matmul_peak_gflops_after', float('nan')):.1f} after",
        f"- load average: {m['load_average']} before, {m.get('load_average_after')} after",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())};"
        f" Python {m['python']}; {m['platform']}",
        f"- environment: {m['environment'] or 'no OPENBLAS_/OMP_ variables set'}",
        f"- settings: repeats {record['settings']['repeats']} (contenders slower than "
        f"{record['settings']['slow_seconds']} s: {record['settings']['slow_repeats']}; "
        f"rows where dilconv auto is faster than "
        f"{record['settings'].get('fast_seconds', 0) * 1e3:.0f} ms: "
        f"{record['settings'].get('fast_factor', 1)}x as many for it and every contender "
        f"within {record['settings'].get('close_factor', 2.0):g}x of it), "
        f"workspace limit {record['settings']['workspace_limit_mib']:.0f} MiB, "
        f"pause before each timed call {record['settings'].get('settle_seconds', 0) * 1e3:.0f} ms"
        " (spent spinning on every core)",
        "",
        "```",
        command,
        "```",
        "",
        SECTIONS[3],
        "",
        *targets(rows),
        "",
    ]
    peak = max(m["matmul_peak_gflops"], m.get("matmul_peak_gflops_after", 0.0))
    lines += [SECTIONS[4], "", *rate_table(rows, peak), ""]
    lines += [SECTIONS[5], ""]
    for case in dict.fromkeys(r["case"] for r in rows):
        lines += [f"#### {case}", "", *case_table([r for r in rows if r["case"] == case]), ""]
        skipped = {
            f"{r['row']}: {k} ({v})"
            for r in rows
            if r["case"] == case
            for k, v in r["skipped"].items()
        }
        if skipped:
            lines += ["Not run: " + "; ".join(sorted(skipped)) + ".", ""]
    for peer, why in record["missing_peers"].items():
        lines.append(f"Peer {peer} not run: {why}")
    return "\n".join(lines).rstrip("\n") + "\n"


#: The command behind ``dask_results.md`` (a separate run: it starts its own clusters).
DASK_COMMAND = (
    ".venv/bin/python benchmarks/dask_throughput.py --size 8192 --chunk 1024 "
    "--out benchmarks/dask_results.md"
)


def dask_section(report: str) -> list[str]:
    """The scale-out section: the report ``benchmarks/dask_throughput.py`` wrote."""
    return [
        "## Scale-out: `dilconv apply` on Dask",
        "",
        "From `benchmarks/dask_results.md`, the report of a separate run of the command",
        "below (its tables, targets and machine line are the script's own):",
        "",
        "```",
        DASK_COMMAND,
        "```",
        "",
        *report.strip("\n").splitlines(),
        "",
    ]


#: The README's performance table sits between these two lines, written by ``main``.
README_START = "<!-- performance table: written by benchmarks/write_results.py -->"
README_END = "<!-- end of the performance table -->"

#: README rows: a label and what it summarises, the names of one or two cases, or a
#: case and a row prefix (``("context", "C=21")``).
README_ROWS = (
    ("seed 2048x2048, one channel, d = 1 / 2 / 4 / 8 / 16", ("seed",)),
    ("context layers, 21 channels, d = 1-16 (chain of 7)", ("context", "C=21")),
    ("context layers, 64 channels, d = 1-16 (chain of 7)", ("context", "C=64")),
    ("aspp 2048 -> 256, d = 6 / 12 / 18", ("aspp",)),
    ("wave; transpose", ("wave", "transpose")),
    ("backward (grad_input + grad_weight): aspp d=12 / context d=8", ("backward",)),
    ("1-D TCN, 64 channels, causal, k = 2 and 3, d = 1-256", ("tcn1d",)),
    ("3-D volume 64^3, 32 channels, d = 1 / 2 / 4", ("volume3d",)),
)


def _cell(rows: list[dict[str, Any]], peer: str) -> str:
    """One README cell: each row's ratio, ' / '-separated, or the range of many."""
    values = [r["ratio_best"].get(peer) for r in rows]
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    if len(rows) > 5:
        chains = [r for r in rows if r["row"].endswith("chain")]
        span = f"{min(got):.2f}-{max(got):.2f}"
        chain = chains[0]["ratio_best"].get(peer) if chains else None
        return span if chain is None else f"{span} ({chain:.2f})"
    return " / ".join(fmt(v) for v in values)


def readme_table(record: dict[str, Any]) -> list[str]:
    """The README's headline table: dilconv auto over each peer, case by case.

    Cells of two cases are joined by ``;``; a case of more than five rows shows the
    range of its ratios (and its chain row's ratio in brackets).
    """
    rows = record["rows"]
    out = [
        README_START,
        "| case | vs the better PyTorch layout | vs TensorFlow | vs `ndimage.correlate` |",
        "|---|---|---|---|",
    ]
    for label, key in README_ROWS:
        if key[-1].startswith("C="):
            groups = [[r for r in rows if r["case"] == key[0] and r["row"].startswith(key[1])]]
        else:
            groups = [[r for r in rows if r["case"] == case] for case in key]
        if not all(groups):
            continue
        cells = ["; ".join(_cell(g, peer) for g in groups) for peer in
                 ("torch", "tensorflow", "ndimage")]  # fmt: skip
        cells = ["-" if set(c) <= {"-", ";", " "} else c for c in cells]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    m = record["machine"]
    out += [
        "",
        f"Measured on {m['cpu']}, {m['cpus']} CPUs, {m['blas']}; "
        f"dilconv {m['versions'].get('dilconv', '?')}, torch {m['versions'].get('torch', '-')}, "
        f"tensorflow {m['versions'].get('tensorflow', '-')}.",
        README_END,
    ]
    return out


def write_readme(path: Path, record: dict[str, Any]) -> bool:
    """Replace the README's table between its markers; False if it has no markers."""
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    path.write_text(head + "\n".join(readme_table(record)) + tail, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--command", default="benchmarks/run.sh")
    parser.add_argument(
        "--dask", type=Path, default=HERE / "dask_results.md",
        help="dask_throughput.py's report, appended where the file exists",
    )  # fmt: skip
    parser.add_argument(
        "--readme", type=Path, default=HERE.parent / "README.md",
        help="the README whose performance table is rewritten from the record",
    )  # fmt: skip
    args = parser.parse_args(argv)
    record = json.loads(args.json.read_text(encoding="utf-8"))
    text = render(record, args.command)
    if args.dask.is_file():
        text += "\n" + "\n".join(dask_section(args.dask.read_text(encoding="utf-8")))
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    if args.readme.is_file() and write_readme(args.readme, record):
        print(f"rewrote the performance table of {args.readme}")


if __name__ == "__main__":
    main()
