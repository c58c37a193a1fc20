"""``dilconv apply --overwrite``: refusals that protect unrelated data, and a replacement
that a signal at any step leaves with a complete old or a complete new output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dilconv
from dilconv.cli import _replace, main
from tests.extras import import_or_missing

zarr = import_or_missing("zarr")
import_or_missing("dask")

SRC = str(Path(dilconv.__file__).resolve().parents[1])
OLD = -1.0  # every value of the old output


def _setup(tmp_path: Path, out_name: str = "out.zarr") -> tuple[Path, Path, np.ndarray]:
    """An input Zarr, a kernel, an old output full of OLD; the new output expected."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    zarr.create_array(store=str(tmp_path / "in.zarr"), shape=x.shape, chunks=(32, 32),
                      dtype=x.dtype)[:] = x  # fmt: skip
    np.save(tmp_path / "k.npy", np.arange(9, dtype=np.float32).reshape(3, 3))
    expected = dilconv.conv2d(x, np.load(tmp_path / "k.npy"), dilation=2)
    out = tmp_path / out_name
    if out_name.endswith(".npy"):
        np.save(out, np.full(expected.shape, OLD, np.float32))
    else:
        zarr.create_array(store=str(out), shape=expected.shape, chunks=(16, 16),
                          dtype=np.float32)[:] = OLD  # fmt: skip
    return tmp_path / "in.zarr", out, expected


def _read(out: Path) -> np.ndarray:
    if out.name.endswith(".npy"):
        return np.load(out)
    return np.asarray(zarr.open_array(store=str(out), mode="r")[:])


def _state(out: Path, expected: np.ndarray) -> str:
    """``"old"`` or ``"new"`` if OUT holds one of them completely (else fails)."""
    assert out.exists(), "no output at all"
    got = _read(out)
    if np.all(got == OLD):
        return "old"
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    return "new"


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _argv(x: Path, out: Path) -> list[str]:
    return ["apply", str(x), str(out), "--kernel", str(x.parent / "k.npy"), "--dilation", "2",
            "--overwrite", "--scheduler", "threads", "--no-progress"]  # fmt: skip


def _signalled(argv: list[str], step: str, signum: int) -> subprocess.Popen[str]:
    """Run ``dilconv argv`` paused at ``step``, send ``signum`` there, wait for the end."""
    env = {**os.environ, "PYTHONPATH": SRC, _replace.PAUSE_VARIABLE: f"{step}:60"}
    proc = subprocess.Popen([sys.executable, "-m", "dilconv", *argv], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the pause is announced on stderr
        lines.append(line)
        if line.strip() == f"pausing at {step}":
            break
    else:
        proc.wait(10)
        pytest.fail(f"never paused at {step}: {''.join(lines)}")
    proc.send_signal(signum)
    proc.wait(60)
    proc.stderr.close()
    return proc


def _signal_at(monkeypatch: pytest.MonkeyPatch, step: str, signum: int) -> None:
    """Make the run in this process signal itself when it reaches ``step``."""

    def pause(self: _replace.Replacement, at: str) -> None:
        if at == step:
            os.kill(os.getpid(), signum)  # handled before the next line of Python runs

    monkeypatch.setattr(_replace.Replacement, "pause", pause)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("step", ["writing", "written", "aside", "renamed"])
def test_a_signal_at_any_step_leaves_a_complete_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, signum: int
) -> None:
    x, out, expected = _setup(tmp_path)
    _signal_at(monkeypatch, step, signum)
    handler = signal.getsignal(signal.SIGTERM)
    assert main(_argv(x, out)) == 128 + signum
    assert _state(out, expected) == ("new" if step == "renamed" else "old")
    assert _siblings(out) == []  # nothing partial or aside is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "k.npy", "out.zarr"]
    assert signal.getsignal(signal.SIGTERM) == handler  # put back after the run


class Killed(BaseException):
    """Stands for SIGKILL: the run stops where it is and cleans nothing up."""


@pytest.mark.parametrize("step", ["writing", "written", "aside", "renamed"])
def test_a_killed_run_is_reconciled_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A killed run leaves siblings (and at ``aside`` no OUT at all): the next run's
    reconciling puts a complete output back and removes them."""
    x, out, expected = _setup(tmp_path, "out.npy")

    def pause(self: _replace.Replacement, at: str) -> None:
        if at == step:
            raise Killed

    monkeypatch.setattr(_replace.Replacement, "pause", pause)
    monkeypatch.setattr(_replace.Replacement, "__exit__", lambda self, *exc: None)
    monkeypatch.setattr(_replace, "_alive", lambda pid: False)  # this process "died"
    with pytest.raises(Killed):
        main(_argv(x, out))
    assert _siblings(out)
    assert out.exists() == (step != "aside")
    _replace.reconcile(out, *_replace.leftovers(out))
    assert _state(out, expected) == ("new" if step == "renamed" else "old")
    assert _siblings(out) == []


def test_sigterm_in_a_real_process(tmp_path: Path) -> None:
    x, out, expected = _setup(tmp_path)
    proc = _signalled(_argv(x, out), "aside", signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM
    assert _state(out, expected) == "old"
    assert _siblings(out) == []


def test_the_next_run_restores_an_output_left_aside_by_sigkill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, out, expected = _setup(tmp_path)
    proc = _signalled(_argv(x, out), "aside", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert _siblings(out)
    assert main(_argv(x, out)) == 0
    assert "restored" in capsys.readouterr().err
    assert _state(out, expected) == "new"
    assert _siblings(out) == []


def test_leftovers_of_a_live_run_are_not_touched(tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    np.save(out, np.zeros(3))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    live = tmp_path / f".out.npy.partial-{os.getppid()}-0123abcd"
    stale = tmp_path / f".out.npy.old-{dead.stdout.strip()}-89abcdef"
    unrelated = tmp_path / ".out.npy.old-notes"
    for path in (live, stale, unrelated):
        path.write_bytes(b"x")
    assert _replace.leftovers(out) == ([], [stale])
    _replace.reconcile(out, *_replace.leftovers(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".out.npy.old-notes", live.name, "out.npy"]
    )


# --- refusals: nothing is written, nothing deleted ------------------------------------


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _refused(argv: list[str], root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = _tree(root)
    assert main(argv) == 2
    assert _tree(root) == before
    return capsys.readouterr().err


def test_output_that_contains_the_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reported case: OUT=victim deleted victim/precious.txt, victim/sub and the input."""
    victim = tmp_path / "victim"
    victim.mkdir()
    x, _, _ = _setup(victim, "old.zarr")
    (victim / "precious.txt").write_text("keep me")
    (victim / "sub").mkdir()
    k = str(victim / "k.npy")
    argv = ["apply", str(x), str(victim), "--kernel", k, "--overwrite"]
    assert "contains the input" in _refused(argv, tmp_path, capsys)
    argv = ["apply", str(x), str(x), "--kernel", k, "--overwrite"]
    assert "is the input" in _refused(argv, tmp_path, capsys)
    argv = ["apply", str(x), str(x / "out.zarr"), "--kernel", k, "--overwrite"]
    assert "lies inside the input" in _refused(argv, tmp_path, capsys)
    (tmp_path / "alias").symlink_to(victim)  # the same folder by another name
    argv = ["apply", str(tmp_path / "alias" / "in.zarr"), str(victim), "--kernel", k]
    assert "contains the input" in _refused([*argv, "--overwrite"], tmp_path, capsys)


@pytest.mark.parametrize("what", ["folder", "group", "text file", "link"])
def test_only_an_earlier_output_is_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    x, _, _ = _setup(tmp_path, "old.zarr")
    name = "out.npy" if what == "text file" else "out.zarr"
    out = tmp_path / name
    if what == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    elif what == "group":
        zarr.open_group(store=str(out), mode="w")
    elif what == "text file":
        out.write_text("not an array")
    else:
        out.symlink_to(tmp_path / "old.zarr")
    argv = ["apply", str(x), str(out), "--kernel", str(tmp_path / "k.npy"), "--overwrite"]
    err = _refused(argv, tmp_path, capsys)
    assert "--overwrite replaces only" in err
    assert str(out) in err


def test_overwriting_an_earlier_zarr_output_replaces_it(tmp_path: Path) -> None:
    x, out, expected = _setup(tmp_path)
    assert main(_argv(x, out)) == 0
    assert _state(out, expected) == "new"
    assert _siblings(out) == []


def test_apply_reports_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    x, out, expected = _setup(tmp_path)
    assert main([*_argv(x, out), "--json"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)  # nothing but the JSON on stdout
    assert record["output"]["shape"] == list(expected.shape)
    assert record["output"]["kind"] == "zarr"
    assert record["seconds"] > 0
    assert "dilconv apply:" not in captured.err  # --no-progress: no bar
    assert main([*_argv(x, out), "--json", str(tmp_path / "r" / "apply.json")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "apply.json").read_text())["input"]["shape"] == [64, 64]
