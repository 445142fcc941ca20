"""Where a server's time goes, for targets a run does not meet: py-spy samples
the process from outside (no overhead inside it, unlike an in-process
profiler, which slows a gevent server with thousands of greenlets to a
crawl), and the samples are summed per function."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


def _py_spy() -> Optional[str]:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")

#: py-spy needs a moment to attach before its first sample.
ATTACH_SECONDS = 0.5


class Profile:
    """The summary of one sampling session; ``text`` stays empty until it ends."""

    def __init__(self) -> None:
        self.text = ""


@contextmanager
def sampled(pid: int, seconds: float = 30.0, rate: int = 250) -> Iterator[Profile]:
    """Sample ``pid`` while the block runs (at most ``seconds``)."""
    profile = Profile()
    spy = _py_spy()
    if spy is None:
        profile.text = "(py-spy not installed: pip install py-spy)"
        yield profile
        return
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "samples.txt"
        process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
             "--function", "--nonblocking", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(ATTACH_SECONDS)
        try:
            yield profile
        finally:
            process.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            _, errors = process.communicate(timeout=30)
            if out.exists():
                profile.text = summarise(out.read_text())
            else:
                profile.text = f"(py-spy failed: {errors.decode(errors='replace').strip()[-300:]})"


def summarise(raw: str, top: int = 15, deep: int = 35) -> str:
    """Inclusive and own time per function from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_short(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    if not total:
        return "(no samples: the process was idle)"
    lines = [f"{total} samples (busy time only)", "", "inclusive  function"]
    # Deep enough to get past the server's own frames, which are in every stack.
    lines += [f"{100 * n / total:8.1f}%  {frame}" for frame, n in inclusive.most_common(deep)]
    lines += ["", "     own  function"]
    lines += [f"{100 * n / total:8.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``poll (/work/main/bus/dispatcher.py:130)`` -> ``poll (bus/dispatcher.py:130)``."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where}" if where else name
