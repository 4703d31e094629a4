"""Process isolation (``attn_isolate``): a backend that kills or breaks its process fails its own
cells only.

Why: a kernel that aborts, segfaults or is OOM-killed ends the process it runs in, and with it a
serial run, its matrix and its report. One that leaves the process broken (a sticky CUDA error after
an illegal memory access, a monkeypatched torch function) fails every later cell there, so other
backends look broken. And a hung call abandoned by guard.py keeps what it holds.

How: an isolated backend's cells run one at a time in a worker process of its own, a
``ProcessPoolExecutor`` with one worker. Workers are forked from a forkserver that imported torch and
attnparity once (about 0.1 s a worker instead of a fresh torch import), or spawned where there is no
forkserver. Neither inherits the parent's state: a worker rebuilds the run from the options (the
``build`` callable session.py passes in), after importing the modules that called
``register_backend`` (conftest.py files) so that their backends exist there too. The worker notes
each case before running it (check/progress.py) in a file: when it dies, the pool raises
``BrokenProcessPool`` and the cell fails naming the signal, the case and its reproduce line; the
backend's next cell gets a fresh worker. A cell past ``attn_timeout`` has its worker killed, which
frees its memory, threads and device context, and the next cell gets a fresh worker too.

On CUDA a worker pins the device of the process that started it (``torch.cuda.set_device``) before
any CUDA call, so under xdist with one GPU per worker the isolated cells stay on that worker's GPU.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import Check, SuiteContext, error_record

if TYPE_CHECKING:
    from concurrent.futures.process import ProcessPoolExecutor

    from attnparity.backends.base import Backend
    from attnparity.results.record import ResultRecord

#: What the forkserver imports once, so that each worker forked from it starts warm. diffusers'
#: attention dispatch is what the registry's built-in backends import: 5 s of each worker's start on
#: the 2-core machine (measured with -X importtime); a missing one is skipped.
PRELOAD = ("torch", "hypothesis", "attnparity.session", "attnparity.suite.op", "attnparity.check.reference",
           "attnparity.backends.registry", "diffusers.models.attention_dispatch")
#: Workers kept alive at once (least recently used goes first). The pipeline and perf suites visit
#: backends in turn, once per pipeline or shape; each idle worker holds a torch (~0.3 GB on CPU).
MAX_LIVE = 3
#: Seconds a new worker may take to import the registering modules and rebuild the run.
START_LIMIT_S = 300.0
#: Lines of a dead worker's own output (faulthandler's traceback, a kernel's last words) in its cells'
#: failure message.
LOG_TAIL = 12


def isolated_backends(backends: Iterable["Backend"], mode: str, device: str) -> frozenset[str]:
    """Names of the backends whose cells run in a worker process under ``mode``.

    'auto' isolates what attnparity does not ship (entry points, register_backend: the vendor code
    under development, where crashes come from) and, on CUDA, every backend: one illegal memory
    access leaves the CUDA context unusable for every later call in that process. torch's own
    kernels on CPU stay in-process: they are the bulk of the CPU matrix, and a worker each would
    only add start-up time.
    """
    if mode not in ("auto", "all", "none"):
        raise ValueError(f"isolation mode must be auto, all or none, not {mode!r}")
    if mode == "none":
        return frozenset()
    return frozenset(b.name for b in backends
                     if mode == "all" or b.origin != "builtin" or device.startswith("cuda"))


def registering_modules(backends: Iterable["Backend"],
                        registered_from: Callable[[str], tuple[str, str | None] | None]) -> tuple[tuple[str, str | None], ...]:
    """(module name, file) of each module that registered one of ``backends``, once each."""
    seen: dict[str, tuple[str, str | None]] = {}
    for backend in backends:
        where = registered_from(backend.name)
        if where is not None:
            seen.setdefault(where[1] or where[0], where)
    return tuple(seen.values())


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the parent's run; everything here pickles."""

    #: rebuilds the SuiteContext from the options (a module-level function or a partial of one)
    build: Callable[[], SuiteContext]
    #: modules that called register_backend, imported (again) before ``build``
    registering: tuple[tuple[str, str | None], ...]
    suite_modules: tuple[str, ...]
    sys_path: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]
    torch_threads: int
    device: str
    #: file that receives the worker's stdout and stderr
    log: str = ""
    #: the parent's attnparity/__init__.py (resolved): the worker must run the same code
    package: str = ""


# -- in the worker process ------------------------------------------------------------------------
# A worker serves one backend for its whole life; its checks are built once, on start.
_WORKER: dict[str, Any] = {}


def pin_device(device: str, set_device: Callable[[Any], None] | None = None) -> str | None:
    """Make ``device`` current in this process before anything touches CUDA; returns what was
    pinned (None on CPU). ``set_device`` stands in for torch.cuda.set_device in tests."""
    if not device.startswith("cuda"):
        return None
    if set_device is None:
        import torch

        set_device = torch.cuda.set_device
    index = device.partition(":")[2] or "0"
    if not index.isdigit():
        raise ValueError(f"cannot pin device {device!r}: expected cuda or cuda:N")
    set_device(int(index))
    return f"cuda:{index}"


def _import_registering(name: str, file: str | None, n: int) -> None:
    import importlib
    import importlib.util

    if file is None:
        importlib.import_module(name)
        return
    found = importlib.util.find_spec(name) if name and not name.startswith("__") else None
    if found is not None and found.origin and os.path.samefile(found.origin, file) and name != "conftest":
        importlib.import_module(name)
        return
    # conftest.py files (all named "conftest") and scripts: by file, under a name of their own
    alias = name if name and name not in sys.modules and not name.startswith("__") else f"_attnparity_registering_{n}"
    spec = importlib.util.spec_from_file_location(alias, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}, which registered a backend")
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)


def worker_start(spec: WorkerSpec) -> int:
    """Build this worker's checks; returns its pid."""
    import faulthandler

    if spec.log:
        fd = os.open(spec.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    faulthandler.enable()  # a fatal signal prints the Python stack into the log first
    os.chdir(spec.cwd)
    sys.path[:] = spec.sys_path
    os.environ.clear()
    os.environ.update(dict(spec.env))
    pin_device(spec.device)
    import attnparity
    import attnparity.suite as suite

    if spec.package and os.path.realpath(attnparity.__file__) != spec.package:
        raise ImportError(f"the isolated worker imported attnparity from {attnparity.__file__}, not {spec.package} as "
                          "this run did (a forkserver started earlier with another sys.path?); use --attn-isolate=none "
                          "or install the attnparity you run")
    for n, (name, file) in enumerate(spec.registering):
        _import_registering(name, file, n)
    suite.SUITE_MODULES = spec.suite_modules  # the parent's, even where a conftest set it on import
    ctx = spec.build()
    import torch

    torch.set_num_threads(spec.torch_threads)
    _WORKER["checks"] = {(c.check, c.item_param): c for c in suite.collect(ctx)}
    return os.getpid()


def worker_run(key: tuple[str, str], progress: str) -> dict[str, Any]:
    """Run the cell ``key`` (check, param); its record as JSON. Notes each case in ``progress``."""
    from attnparity.check.progress import set_case_sink

    check = _WORKER["checks"].get(key)
    if check is None:
        raise LookupError(f"cell {key[0]}[{key[1]}] does not exist in the isolated worker: its run was built "
                          "differently there (was the backend registered at import time of its module?)")

    def sink(note: dict[str, Any]) -> None:
        # a fresh file per note, renamed into place: a death mid-write leaves the last whole note
        Path(progress + ".tmp").write_text(json.dumps(note))
        os.replace(progress + ".tmp", progress)

    set_case_sink(sink)
    try:
        record = check.run()
    except Exception as exc:  # a raising backend fails its own cell, as in-process
        record = error_record(check, exc)
    finally:
        set_case_sink(None)
    return record.to_json()


# -- in the parent ----------------------------------------------------------------------------------
def _mp_context() -> Any:
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))  # applies when this process starts its forkserver
        return ctx
    return multiprocessing.get_context("spawn")


@contextmanager
def _forkserver_path(sys_path: tuple[str, ...]) -> Iterator[None]:
    """PYTHONPATH for a forkserver started now: it is a fresh interpreter that imports PRELOAD, and
    a worker unpickles its first call, before it can set its own sys.path. Without this, a run from
    a source tree finds the installed attnparity there, not the one running here."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys_path if p)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def describe_exit(code: int | None) -> str:
    """How a worker process ended, in words: the signal by name where there was one."""
    if code is None:
        return "ended (exit status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"killed by {name} (signal {-code})"
        if -code == signal.SIGKILL:
            text += "; the kernel's OOM killer ends processes this way when memory runs out"
        return text
    return f"exited with status {code}"


def last_words(log: Path) -> str:
    """What a dead worker printed last, indented: from faulthandler's "Fatal Python error" on (its
    stack is most recent call first) where there is one, else the log's last lines."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("Extension modules:")]
    except OSError:
        return ""
    fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
    shown = lines[fatal[-1]:fatal[-1] + LOG_TAIL] if fatal else lines[-LOG_TAIL:]
    return "\n".join("    " + (line if len(line) <= 200 else line[:197] + "...") for line in shown)


class _Worker:
    """One backend's worker process and the pool that runs it."""

    def __init__(self, backend: str, spec: WorkerSpec) -> None:
        # from the submodule: concurrent.futures caches its lazily imported name, which outlives a
        # re-import of the submodule (pytester's in-process runs), and then cannot pickle its worker
        from concurrent.futures.process import ProcessPoolExecutor

        self.backend = backend
        self.log = spec.log
        self.pool: "ProcessPoolExecutor" = ProcessPoolExecutor(max_workers=1, mp_context=_mp_context())
        with _forkserver_path(spec.sys_path):
            start = self.pool.submit(worker_start, spec)  # starts the process (and the forkserver, once)
        # The pool keeps its processes private; this one is needed for its exit status after a crash.
        self.process = next(iter(getattr(self.pool, "_processes", {}).values()), None)
        self.pid: int | None = None
        try:
            self.pid = start.result(timeout=START_LIMIT_S)
        except BaseException:
            self.kill()
            raise

    def exit_code(self) -> int | None:
        # shutdown joins the pool's manager thread, which reaps the dead process first
        self.pool.shutdown(wait=True, cancel_futures=True)
        return getattr(self.process, "exitcode", None)

    def kill(self) -> None:
        pid = self.pid if self.pid is not None else getattr(self.process, "pid", None)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pool.shutdown(wait=True, cancel_futures=True)

    def log_tail(self) -> str:
        return last_words(Path(self.log))


class Isolation:
    """One run's worker processes: which backends are isolated, and their live workers."""

    def __init__(self, spec: WorkerSpec | None, isolated: frozenset[str], timeout: float = 0.0) -> None:
        if isolated and spec is None:
            raise ValueError("isolated backends need a WorkerSpec to start their workers")
        self.spec = spec
        self.isolated = isolated
        self.timeout = timeout
        self._live: OrderedDict[str, _Worker] = OrderedDict()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._cells = 0
        #: workers started and seconds spent starting them (the cost of isolation)
        self.started = 0
        self.start_s = 0.0

    def covers(self, backend: str | None) -> bool:
        return backend is not None and backend in self.isolated

    def run(self, check: Check, *, label: str) -> "ResultRecord":
        """The record of ``check``, run in its backend's worker; a worker that dies or runs past
        the time limit makes it an error record that says how and where."""
        import time
        from concurrent.futures import TimeoutError as FutureTimeout
        from concurrent.futures.process import BrokenProcessPool

        from attnparity.results.record import ResultRecord

        backend = check.backend or ""
        self._cells += 1
        progress = self._tmp() / f"cell-{self._cells}.json"
        worker = self._live.pop(backend, None)
        if worker is None:
            t0 = time.perf_counter()
            try:
                worker = self._start(backend)
            except BrokenProcessPool:
                return self._error(check, f"{backend}'s isolated worker process died while starting; its output:\n"
                                          f"{self._log_of(backend)}")
            except Exception as exc:  # e.g. the registering conftest fails to import there
                return self._error(check, f"{backend}'s isolated worker process could not start: "
                                          f"{type(exc).__name__}: {exc}")
            finally:
                self.start_s += time.perf_counter() - t0
        self._live[backend] = worker
        try:
            future = worker.pool.submit(worker_run, (check.check, check.item_param), str(progress))
            data = future.result(timeout=self.timeout or None)
        except FutureTimeout:
            self._live.pop(backend, None)
            worker.kill()
            return self._error(check, f"{label} timed out after {self.timeout:g} s (attn_timeout); its isolated worker "
                                      f"process (pid {worker.pid}) was killed, freeing what the call held. "
                                      f"{self._where(progress)}\n{backend}'s remaining cells run in a fresh process.",
                               progress)
        except BrokenProcessPool:
            self._live.pop(backend, None)
            how = describe_exit(worker.exit_code())
            tail = worker.log_tail()
            return self._error(check, f"{backend} crashed its isolated worker process (pid {worker.pid}) in {label}: "
                                      f"{how}. {self._where(progress)}"
                                      + (f"\nthe worker's last output:\n{tail}" if tail else "")
                                      + f"\n{backend}'s remaining cells run in a fresh process.", progress)
        return ResultRecord.from_json(data)

    def close(self) -> None:
        """Stop every worker (end of session)."""
        while self._live:
            _, worker = self._live.popitem()
            worker.pool.shutdown(wait=True, cancel_futures=True)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    # -- helpers ---------------------------------------------------------------------------------
    def _tmp(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="attnparity-isolation-")
        return Path(self._dir.name)

    def _log_of(self, backend: str) -> str:
        return last_words(self._tmp() / f"{backend.replace('/', '_')}.log") or "    (none)"

    def _start(self, backend: str) -> _Worker:
        assert self.spec is not None
        while len(self._live) >= MAX_LIVE:
            _, old = self._live.popitem(last=False)
            old.pool.shutdown(wait=False, cancel_futures=True)
        log = self._tmp() / f"{backend.replace('/', '_')}.log"
        log.write_text("")  # each worker's log starts empty: its tail is its own last words
        self.started += 1
        return _Worker(backend, replace(self.spec, log=str(log)))

    @staticmethod
    def _where(progress: Path) -> str:
        try:
            note = json.loads(progress.read_text())
        except (OSError, ValueError):
            return "It had not started a case of its own (no case noted)."
        return f"It was running {note['check']} on case {note['case']}\n    repro: {note['repro']}"

    @staticmethod
    def _error(check: Check, message: str, progress: Path | None = None) -> "ResultRecord":
        from attnparity.results.record import ResultRecord

        case = repro = None
        if progress is not None:
            try:
                note = json.loads(progress.read_text())
                case, repro = note.get("case_dict"), note.get("repro")
            except (OSError, ValueError):
                pass
        return ResultRecord(check.kind, check.check, check.backend, check.dtype, "error", message=message,
                            case=case, repro=repro)
