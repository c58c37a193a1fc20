"""Writing a command's output so that an interruption never loses data.

:func:`check_target` refuses, before any work, an output that is, contains or lies
inside the input (symbolic links resolved), and an existing output that is not the
kind the command writes (a Zarr array directory, or an ``.npy`` file): ``--overwrite``
replaces an earlier result, never an unrelated folder.

:class:`Replacement` writes the new output beside the old one and swaps them in four
steps, each of which leaves a complete old or a complete new output in place or
recoverable:

1. the new output is written to a hidden sibling, ``.OUT.partial-PID-TOKEN``;
2. the old output (if any) is renamed aside, to ``.OUT.old-PID-TOKEN``;
3. the new output is renamed to OUT;
4. the old output is deleted.

On any exception (SIGINT, and SIGTERM under :func:`signals_as_interrupts`) the
siblings are reconciled: the old output goes back if the new one is not in place, and
whatever is left over is deleted. A run killed outright (SIGKILL, a power cut) leaves
siblings that the next run on the same OUT reconciles the same way before it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

#: Hidden environment variable that makes :meth:`Replacement.commit` pause at a step
#: (``STEP:SECONDS``; steps in :data:`STEPS`), so a test can signal it there.
PAUSE_VARIABLE = "_DILCONV_APPLY_PAUSE"
#: The moments a pause can be injected: while the new output is being written
#: (``writing``, see :meth:`Replacement.pause`), then before steps 2, 3 and 4.
STEPS = ("writing", "written", "aside", "renamed")
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[0-9a-f]{8}")


class Terminated(BaseException):
    """SIGTERM, raised like :class:`KeyboardInterrupt` so that cleanup runs."""


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (SIGINT already raises)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    try:
        before = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def output_kind(path: Path) -> str:
    """``"npy"`` for a name ending in ``.npy``, else ``"zarr"``."""
    return "npy" if path.name.endswith(".npy") else "zarr"


def _is_zarr_array(path: Path) -> bool:
    if (path / ".zarray").is_file():  # Zarr format 2
        return True
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "array"


def _is_npy(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def check_target(source: Path, output: Path, *, overwrite: bool) -> None:
    """Refuse an ``output`` that would destroy anything but an earlier output."""
    src, dst = source.resolve(), output.resolve()
    if dst == src:
        raise ValueError(f"output {str(output)!r} is the input {str(source)!r}")
    if src.is_relative_to(dst):
        raise ValueError(f"output {str(output)!r} contains the input {str(source)!r}")
    if dst.is_relative_to(src):
        raise ValueError(f"output {str(output)!r} lies inside the input {str(source)!r}")
    if not (output.exists() or output.is_symlink()):
        return
    if not overwrite:
        raise ValueError(f"output {str(output)!r} exists; pass --overwrite to replace it")
    if output.is_symlink():
        raise ValueError(
            f"output {str(output)!r} is a symbolic link; --overwrite replaces only a Zarr "
            "array or an .npy file: name the path it points to, or remove the link"
        )
    kind = output_kind(output)
    if kind == "npy" and not (output.is_file() and _is_npy(output)):
        raise ValueError(
            f"output {str(output)!r} exists and is not an .npy file; --overwrite replaces "
            "only an .npy file there: remove it yourself or choose another name"
        )
    if kind == "zarr" and not (output.is_dir() and _is_zarr_array(output)):
        raise ValueError(
            f"output {str(output)!r} exists and is not a Zarr array; --overwrite replaces "
            "only a Zarr array directory there: remove it yourself or choose another name"
        )


def remove(path: Path) -> None:
    """Delete a file, a link or a directory tree; nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def discard(partial: Path) -> None:
    """Remove a partial output, even with chunk writes still in flight.

    The Zarr metadata goes first, so a chunk task that has not opened the array
    yet fails instead of writing; one that already has is given a moment to
    finish, and anything it wrote is removed with the rest.
    """
    if partial.is_dir():
        (partial / "zarr.json").unlink(missing_ok=True)
    for _ in range(20):
        remove(partial)
        if not (partial.exists() or partial.is_symlink()):
            return
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def leftovers(output: Path, *, include_live: bool = False) -> tuple[list[Path], list[Path]]:
    """``(partials, olds)``: siblings of ``output`` left by runs that are not running."""
    partials: list[Path] = []
    olds: list[Path] = []
    if not output.parent.is_dir():
        return partials, olds
    for path in output.parent.iterdir():
        match = _SIBLING.fullmatch(path.name)
        if match is None or match["name"] != output.name:
            continue
        if not include_live and _alive(int(match["pid"])):
            continue
        (partials if match["kind"] == "partial" else olds).append(path)
    olds.sort(key=lambda p: p.lstat().st_mtime, reverse=True)
    return partials, olds


def reconcile(output: Path, partials: list[Path], olds: list[Path]) -> str | None:
    """Put the newest old output back where no output is, delete the rest; what was done."""
    done = None
    if olds and not (output.exists() or output.is_symlink()):
        os.rename(olds[0], output)
        olds = olds[1:]
        done = f"restored {str(output)!r} from an interrupted replacement"
    for path in partials:
        discard(path)
    for path in olds:
        remove(path)
    return done


class Replacement:
    """Context manager: write to :attr:`partial`, then :meth:`commit` (see the module)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.partial = output.with_name(f".{output.name}.partial-{token}")
        self.old = output.with_name(f".{output.name}.old-{token}")

    def __enter__(self) -> Replacement:
        note = reconcile(self.output, *leftovers(self.output))
        if note:
            print(f"dilconv: {note}", file=sys.stderr, flush=True)
        return self

    def pause(self, step: str) -> None:
        """Sleep at ``step`` if :data:`PAUSE_VARIABLE` asks (tests only), saying so on stderr."""
        wanted = os.environ.get(PAUSE_VARIABLE, "")
        name, _, seconds = wanted.partition(":")
        if name == step:
            print(f"pausing at {step}", file=sys.stderr, flush=True)
            time.sleep(float(seconds or 30))

    def commit(self) -> None:
        """Steps 2 to 4: the old output aside, the new one in, the old one deleted."""
        self.pause("written")
        if self.output.exists() or self.output.is_symlink():
            os.rename(self.output, self.old)
        self.pause("aside")
        os.rename(self.partial, self.output)
        self.pause("renamed")
        remove(self.old)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A second Ctrl+C or SIGTERM must not interrupt the reconciling itself.
        masked = hasattr(signal, "pthread_sigmask")
        if masked:
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            partials = [self.partial] if self.partial.exists() else []
            olds = [self.old] if (self.old.exists() or self.old.is_symlink()) else []
            reconcile(self.output, partials, olds)
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
