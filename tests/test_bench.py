"""``dilconv bench --quick``: a smoke run of the harness (no test asserts a time)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from dilconv.bench import cases, report, runner
from dilconv.cli import main


@pytest.fixture(scope="module")
def quick_record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    # a short pause: the smoke run has hundreds of timed calls
    argv = ["bench", "--quick", "--repeats", "1", "--settle", "0.02", "--no-progress"]
    status = main([*argv, "--json", str(out)])
    assert status == 0
    return json.loads(Path(out).read_text(encoding="utf-8"))


def test_the_help_names_every_case() -> None:
    from dilconv.cli import bench

    assert bench.CASE_NAMES == tuple(cases.all_cases(True))


def test_quick_run_covers_every_case_and_row(quick_record: dict) -> None:
    expected = {(name, row.label) for name, rows in cases.all_cases(True).items() for row in rows}
    got = {(r["case"], r["row"]) for r in quick_record["rows"]}
    assert got == expected


def test_every_row_reports_auto_with_rates_memory_and_ratios(quick_record: dict) -> None:
    for r in quick_record["rows"]:
        auto = r["contenders"]["dilconv auto"]
        assert auto["median_s"] > 0
        arithmetic = (r["case"], r["row"]) != ("cold", "import")  # an import does none
        assert (auto["gflops"] > 0) == arithmetic
        assert (auto["peak_share"] > 0) == arithmetic
        assert auto["extra_mib"] is not None
        assert auto["extra_mib"] >= 0
        fast = auto["median_s"] < runner.FAST_SECONDS
        assert auto["repeats"] == (runner.FAST_FACTOR if fast else 1)
        peers = [n for n in r["contenders"] if not n.startswith("dilconv")]
        assert set(r["ratios"]) == set(peers)


def test_peers_that_ran_agree_with_dilconv(quick_record: dict) -> None:
    for r in quick_record["rows"]:
        for name, c in r["contenders"].items():
            if c["agree_rel_diff"] is not None:
                assert c["agree_rel_diff"] < 1e-3, (r["case"], r["row"], name)


def test_further_rounds_keep_close_contenders_together() -> None:
    """Only rows where auto is fast get further rounds, and then every contender
    within CLOSE_FACTOR of auto gets them, faster or slower, never one alone."""
    fast, close = runner.FAST_SECONDS, runner.CLOSE_FACTOR
    medians = {"dilconv auto": fast / 2, "a": fast / 10, "b": fast / 2 * close, "c": 1.1 * fast}
    assert runner.fast_contenders(medians, "dilconv auto") == ["dilconv auto", "a", "b"]
    slow_auto = {"dilconv auto": 1.2 * fast, "dilconv winograd": 0.9 * fast}
    assert runner.fast_contenders(slow_auto, "dilconv auto") == []


def test_fast_contenders_get_more_rounds(quick_record: dict) -> None:
    """Calls under FAST_SECONDS are timed FAST_FACTOR times as often (quick: all)."""
    assert quick_record["settings"]["settle_seconds"] == 0.02
    counts = {c["repeats"] for r in quick_record["rows"] for c in r["contenders"].values()}
    assert runner.FAST_FACTOR in counts


def test_machine_record_names_blas_threads_and_peak(quick_record: dict) -> None:
    m = quick_record["machine"]
    assert m["matmul_peak_gflops"] > 0
    assert m["blas"]
    assert any(p.get("user_api") == "blas" for p in m["thread_pools"])
    assert "numpy" in m["versions"]


def test_forward_rows_time_the_methods_that_apply(quick_record: dict) -> None:
    seed = next(r for r in quick_record["rows"] if r["case"] == "seed")
    assert "dilconv shift_add" in seed["contenders"]
    assert seed["best_method"] is not None
    assert seed["auto_over_best_method"] > 0


def test_report_renders_every_row(quick_record: dict) -> None:
    text = report.render(quick_record)
    for r in quick_record["rows"]:
        assert f"{r['case']} {r['row']}" in text
    assert "BLAS:" in text


def test_options_are_checked(tmp_path: Path) -> None:
    assert main(["bench", "--quick", "--cases", "nope", "--no-progress"]) == 2
    assert main(["bench", "--quick", "--methods", "nope", "--no-progress"]) == 2
    assert main(["bench", "--quick", "--settle", "-1", "--no-progress"]) == 2
    assert main(["bench", "--quick", "--peers", "matlab", "--no-progress"]) == 2


def test_cases_and_methods_select(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["bench", "--quick", "--cases", "wave", "--methods", "im2col", "--peers", "scipy"]
    assert main([*argv, "--repeats", "1", "--no-progress", "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert [r["case"] for r in record["rows"]] == ["wave"]
    row = record["rows"][0]
    assert set(row["contenders"]) == {"dilconv auto", "dilconv auto NCHW", "dilconv im2col"}
    assert row["contenders"]["dilconv auto NCHW"]["agree_rel_diff"] < 1e-5
    assert row["derived"]["nchw_over_nhwc"] > 0
    assert row["best_method"] == "dilconv im2col"  # auto in either layout is not a method
    assert "wave d=2" in capsys.readouterr().out


def test_seed_rows_time_the_copy_of_the_same_array(quick_record: dict) -> None:
    for r in (r for r in quick_record["rows"] if r["case"] == "seed"):
        assert "numpy copyto" in r["contenders"]
        auto, copy = (r["contenders"][n]["median_s"] for n in ("dilconv auto", "numpy copyto"))
        assert r["derived"]["auto_over_copyto"] == pytest.approx(auto / copy)


def test_cold_rows_time_whole_scripts_in_fresh_processes(quick_record: dict) -> None:
    rows = {r["row"]: r for r in quick_record["rows"] if r["case"] == "cold"}
    assert set(rows) == {"warm cache", "empty cache", "import"}
    imports = rows.pop("import")
    med = {n: c["median_s"] for n, c in imports["contenders"].items()}
    assert set(med) == {"dilconv auto", "numpy import", "no import"}
    figure = (med["dilconv auto"] - med["no import"]) / (med["numpy import"] - med["no import"])
    assert imports["derived"]["import_over_numpy"] == pytest.approx(figure)
    for r in rows.values():
        assert r["contenders"]["dilconv auto"]["median_s"] > 0.05  # an interpreter's start
        if "ndimage correlate" in r["contenders"]:
            assert r["derived"]["dilconv_over_ndimage"] > 0


def test_the_scripts_run_with_python_bytecode_caches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from dilconv.bench import cold_cases

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    check = "import sys\nif sys.dont_write_bytecode: raise SystemExit('no caches')\n"
    cold_cases._process(check)()


def test_a_failing_script_is_an_error() -> None:
    from dilconv.bench import cold_cases

    with pytest.raises(RuntimeError, match="the script failed"):
        cold_cases._process("raise SystemExit('no')")()


def test_stream_rows_derive_real_time_and_per_stream_figures(quick_record: dict) -> None:
    rows = {r["row"]: r for r in quick_record["rows"] if r["case"] == "stream"}
    assert set(rows) == {r.label for r in cases.all_cases(True)["stream"]}
    for label in ("block=256", "block=16", "block=1"):
        d = rows[label]["derived"]
        assert d["real_time_factor"] > 0
        assert d["over_batch_forward"] > 0
        assert d["history_kib_per_stream"] == pytest.approx(3 * 1023 * 8 * 4 / 1024)
        assert rows[label]["contenders"]["batch forward"]["agree_rel_diff"] < 1e-5
    assert rows["batch=64 block=16"]["derived"]["per_stream_throughput_vs_one"] > 0
    for label in ("tcn block=1", "tcn block=16"):
        assert rows[label]["derived"]["dilconv_us_per_block"] > 0
        peer = rows[label]["contenders"].get("pytorch-tcn")
        if peer is not None:  # installed with the peers extra: the same stack, streamed
            assert peer["agree_rel_diff"] < 1e-5
            assert rows[label]["derived"]["pytorch_tcn_us_per_block"] > 0


def _results_writer() -> Any:
    """benchmarks/write_results.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "write_results", Path(__file__).parents[1] / "benchmarks" / "write_results.py"
    )
    assert spec is not None
    assert spec.loader is not None
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    return writer


def test_results_writer_writes_every_section_from_the_quick_record(
    quick_record: dict, tmp_path: Path
) -> None:
    """benchmarks/write_results.py turns a record into the whole RESULTS.md."""
    writer = _results_writer()
    record, out = tmp_path / "quick.json", tmp_path / "RESULTS.md"
    record.write_text(json.dumps(quick_record), encoding="utf-8")
    out.write_text("text written by hand\n", encoding="utf-8")
    dask = tmp_path / "dask_results.md"
    dask.write_text("| run | compressor |\n|---|---|\n| a row of the Dask report | none |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{writer.README_START}\nold table\n{writer.README_END}\nrest\n")
    argv = ["--json", str(record), "--out", str(out), "--command", "dilconv bench --quick"]
    argv += ["--readme", str(readme)]
    writer.main([*argv, "--dask", str(dask)])
    written = readme.read_text(encoding="utf-8")
    assert "old table" not in written
    assert written.startswith("intro\n")
    assert written.endswith("\nrest\n")
    assert "\n".join(writer.readme_table(quick_record)) in written
    text = out.read_text(encoding="utf-8")
    assert "## Scale-out: `dilconv apply` on Dask" in text
    assert "| a row of the Dask report | none |" in text
    assert writer.DASK_COMMAND in text
    writer.main([*argv, "--dask", str(tmp_path / "none.md")])  # no report: no section
    assert "## Scale-out" not in out.read_text(encoding="utf-8")
    writer.main([*argv, "--dask", str(dask)])
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == writer.GENERATED
    assert "text written by hand" not in text
    positions = [lines.index(heading) for heading in writer.SECTIONS]
    assert positions == sorted(positions)
    for case in dict.fromkeys(r["case"] for r in quick_record["rows"]):
        assert f"#### {case}" in lines
    assert "dilconv bench --quick" in text
    assert any(line.startswith("- method='auto' within 10%") for line in lines)
    assert any(line.startswith("- cold, import: `import dilconv` <= 2.0x") for line in lines)


def test_the_readme_quotes_the_recorded_run() -> None:
    """README's performance table is the one write_results.py makes from results.json."""
    root = Path(__file__).parents[1]
    writer = _results_writer()
    record = json.loads((root / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = "\n".join(writer.readme_table(record))
    assert table in readme, "run benchmarks/write_results.py to rewrite README's table"
    assert "| seed 2048x2048" in table
    assert "| context layers, 21 channels" in table


def test_a_target_tensorflow_refused_everywhere_is_not_measured() -> None:
    """A case whose every TensorFlow row was refused is reported as such, not as met."""
    writer = _results_writer()
    row = {"row": "s=2 d=2", "ratio_best": {"torch": 0.7}, "skipped": {"tf conv2d_transpose": "x"}}
    refused = writer._ahead_of_tensorflow("transpose", [row], lambda ok: "met" if ok else "NOT")
    assert "not measured (TensorFlow refused on: s=2 d=2)" in refused
    behind = {"row": "d=1", "ratio_best": {"tensorflow": 1.2}, "skipped": {}}
    text = writer._ahead_of_tensorflow("x", [behind, row], lambda ok: "met" if ok else "NOT")
    assert ": NOT (worst 1.20; behind: d=1 1.20; refused on: s=2 d=2)" in text
