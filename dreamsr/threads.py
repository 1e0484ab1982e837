"""CPU threads for PyTorch on a machine that other programs may be using.

Why this exists: PyTorch runs each operator on an OpenMP team of threads that spin while they wait for one
another. When another program holds one of the cores, every parallel region waits for the thread that lost its
core, and a 2-thread job on 2 cores runs 5-15x slower than the same job on 1 thread (docs/benchmarks.md, "Shared
CPU"). Passive waiting alone fixes the collapse but makes small operators slower on idle cores. So dreamsr picks:

- the **waiting**: unless the environment already says (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``), threads spin
  for at most :data:`SPIN_COUNT` iterations before they sleep (``GOMP_SPINCOUNT``; read by OpenMP when torch is
  imported, so :func:`prepare` must run first). On idle cores this is as fast as the unbounded default; when load
  arrives mid-job it limits the damage until the next re-measurement;
- the **number of threads**: the cores that other programs leave free, measured from ``/proc/stat`` (busy time of
  all cores minus this process's own), at least 1 and at most the cores this process may run on. Re-measured
  between network calls by :class:`ThreadGovernor` so a long job follows load that comes and goes.

What the user set wins: ``--threads N`` (any command), else ``OMP_NUM_THREADS`` in the environment, fixes the
count and nothing is measured. Training measures once at its start and then keeps the count (CPU kernels may
round differently with another thread count, and a run should be reproducible from its settings).

This module imports torch only inside functions, after :func:`prepare` has set the environment.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, MutableMapping

from dreamsr.errors import ConfigError

__all__ = ["SPIN_COUNT", "BUSY_THRESHOLD", "ThreadPlan", "CpuSample", "cpu_sample", "cores_busy_elsewhere",
           "threads_for", "available_cores", "prepare", "setup", "ThreadGovernor"]

# GOMP_SPINCOUNT dreamsr sets when the environment says nothing about waiting: about 10 microseconds of spinning
# (libgomp's own default is 300 000 iterations). Measured in docs/benchmarks.md ("Shared CPU").
SPIN_COUNT = 10_000
# cores used by other programs at or above this count as one busy core (a program that shares a core with one of
# our threads shows up as about half a core)
BUSY_THRESHOLD = 0.3
# a window shorter than this (seconds) is too coarse for /proc/stat's 10 ms ticks: the governor waits longer
MIN_WINDOW = 0.25

Source = Literal["--threads", "OMP_NUM_THREADS", "auto", "default"]


@dataclass(frozen=True)
class CpuSample:
    """One reading of the machine's CPU time and this process's own (both in clock ticks) at ``when`` (seconds)."""

    busy: int  # non-idle ticks of all cores (/proc/stat "cpu" line: everything but idle and iowait)
    total: int  # all ticks of all cores
    own: int  # this process's user + system ticks, all its threads (/proc/self/stat fields 14 and 15)
    cores: int  # cores counted in /proc/stat
    when: float  # time.monotonic()


def cpu_sample(stat: str = "/proc/stat", self_stat: str = "/proc/self/stat") -> CpuSample | None:
    """The current :class:`CpuSample`, or None where ``/proc`` is not there (not Linux)."""
    try:
        with open(stat, encoding="ascii") as fh:
            lines = fh.read().splitlines()
        with open(self_stat, encoding="ascii", errors="replace") as fh:
            own_fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = [int(v) for v in lines[0].split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    cores = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    own = int(own_fields[11]) + int(own_fields[12])  # utime, stime (fields 14, 15 counted from 1 with pid, comm)
    return CpuSample(busy=total - idle, total=total, own=own, cores=max(cores, 1), when=time.monotonic())


def cores_busy_elsewhere(before: CpuSample, after: CpuSample) -> float:
    """How many cores other programs kept busy between two samples (0 when the window holds no tick)."""
    elapsed = (after.total - before.total) / after.cores  # ticks of one core over the window
    if elapsed <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / elapsed)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_for(busy_elsewhere: float, cores: int) -> int:
    """The thread count for ``cores`` usable cores when other programs keep ``busy_elsewhere`` cores busy:
    every core not counted busy (a core counts from :data:`BUSY_THRESHOLD`), at least 1."""
    busy = math.ceil(busy_elsewhere - BUSY_THRESHOLD) if busy_elsewhere >= BUSY_THRESHOLD else 0
    return max(1, min(cores, cores - busy))


@dataclass
class ThreadPlan:
    """How many threads torch uses and why; the CLI prints :meth:`describe` and records :meth:`to_dict`."""

    threads: int
    source: Source
    cores: int
    busy_elsewhere: float | None = None  # cores other programs used, where measured
    wait: str = ""  # the waiting behaviour in effect ("spin 10000 then sleep", "OMP_WAIT_POLICY=PASSIVE", ...)
    changes: list[tuple[float, int]] = field(default_factory=list)  # (seconds since setup, threads) of each change

    @property
    def adaptive(self) -> bool:
        return self.source == "auto"

    def describe(self) -> str:
        why = {"--threads": "--threads", "OMP_NUM_THREADS": "OMP_NUM_THREADS", "default": "torch's default"}
        if self.source == "auto":
            seen = "" if self.busy_elsewhere is None else f", {self.busy_elsewhere:.1f} busy elsewhere"
            reason = f"auto: {self.cores} core(s){seen}"
        else:
            reason = why[self.source]
        return f"{self.threads} CPU thread(s) ({reason}; {self.wait})" if self.wait else \
            f"{self.threads} CPU thread(s) ({reason})"

    def to_dict(self) -> dict:
        return {"threads": self.threads, "source": self.source, "cores": self.cores,
                "busy_elsewhere": None if self.busy_elsewhere is None else round(self.busy_elsewhere, 2),
                "wait": self.wait, "changes": [[round(t, 2), n] for t, n in self.changes]}


def _wait_description(env: Mapping[str, str]) -> str:
    if "OMP_WAIT_POLICY" in env:
        return f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}"
    if "GOMP_SPINCOUNT" in env:
        return f"spin {env['GOMP_SPINCOUNT']} then sleep"
    return "OpenMP's default waiting"


def prepare(env: MutableMapping[str, str] | None = None) -> str:
    """Set the waiting behaviour in ``env`` (default ``os.environ``) before torch is imported; returns its
    description. Leaves ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` alone when either is already set."""
    env = os.environ if env is None else env
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return _wait_description(env)


def _env_threads(env: Mapping[str, str]) -> int | None:
    raw = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"OMP_NUM_THREADS must be a whole number of threads, got {raw!r}") from None
    return n if n >= 1 else None


def setup(threads: int | None = None, *, measure: bool = True, env: MutableMapping[str, str] | None = None,
          set_threads: Callable[[int], None] | None = None) -> ThreadPlan:
    """Choose and apply torch's CPU threads for a command (the CLI calls this first, before any torch work).

    Args:
        threads: ``--threads`` (None or 0: not given).
        measure: measure other programs' load (False: use every available core unless told otherwise).
        env: the environment to read and prepare (default ``os.environ``).
        set_threads: applies the count (default ``torch.set_num_threads``; imported here, after :func:`prepare`).
    """
    env = os.environ if env is None else env
    if threads is not None and threads < 0:
        raise ConfigError(f"--threads must be >= 1 (0: automatic), got {threads}")
    cores = available_cores()
    before = cpu_sample() if measure else None
    wait = prepare(env)
    if set_threads is None:
        import torch  # after prepare(): OpenMP reads the waiting behaviour when torch loads it

        set_threads = torch.set_num_threads
    if threads:
        plan = ThreadPlan(threads=threads, source="--threads", cores=cores, wait=wait)
    elif _env_threads(env) is not None:
        plan = ThreadPlan(threads=int(_env_threads(env) or 1), source="OMP_NUM_THREADS", cores=cores, wait=wait)
    elif before is None:
        plan = ThreadPlan(threads=cores, source="default", cores=cores, wait=wait)
    else:
        left = MIN_WINDOW - (time.monotonic() - before.when)
        if left > 0:  # the torch import usually fills the window; a second command in one process does not
            time.sleep(left)
        after = cpu_sample()
        busy = cores_busy_elsewhere(before, after) if after is not None else 0.0
        plan = ThreadPlan(threads=threads_for(busy, cores), source="auto", cores=cores, busy_elsewhere=busy,
                          wait=wait)
    set_threads(plan.threads)
    return plan


class ThreadGovernor:
    """Follows other programs' load during a job: call :meth:`follow` between network calls (cheap: it reads two
    small /proc files at most every ``interval`` seconds) and it moves torch's thread count to
    :func:`threads_for` of the load measured since its last reading. Does nothing for a fixed plan."""

    def __init__(self, plan: ThreadPlan, *, interval: float = 0.5,
                 set_threads: Callable[[int], None] | None = None) -> None:
        self.plan = plan
        self.interval = max(interval, MIN_WINDOW)
        self._set = set_threads
        self._start = time.monotonic()
        self._last = cpu_sample() if plan.adaptive else None

    def follow(self) -> int:
        """Re-measure if due; returns the thread count in effect."""
        if self._last is None or time.monotonic() - self._last.when < self.interval:
            return self.plan.threads
        now = cpu_sample()
        if now is None:
            return self.plan.threads
        busy = cores_busy_elsewhere(self._last, now)
        self._last = now
        want = threads_for(busy, self.plan.cores)
        self.plan.busy_elsewhere = busy
        if want != self.plan.threads:
            if self._set is None:
                import torch

                self._set = torch.set_num_threads
            self._set(want)
            self.plan.threads = want
            self.plan.changes.append((now.when - self._start, want))
        return want
