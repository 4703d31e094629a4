"""Every attnparity option, defined once: flag, ini key, type, default and help are the fields of
``Options``; ``Options.resolve`` reads them once (command line over ini over default) and validates
them once, so a bad value is a usage error naming the flag before anything runs.

Rule lines (``attn_tolerance``, ``attn_pipeline_ssim``) share one grammar, ``<selector>...
key=value...``, parsed by ``RuleGrammar.parse``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from attnparity.backends.base import DTYPE_NAMES, dtype_name
from attnparity.machine import DEVICE_KINDS

PERF_MODES = ("quick", "full")
SUMMARY_MODES = ("short", "full")
ISOLATE_MODES = ("auto", "all", "none")


class OptionError(ValueError):
    """A bad option value; the message names the flag and what would be accepted."""


# -- rule lines ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One line of a rule option: its selectors (globs or "*") and its key=value numbers."""

    line: str
    selectors: tuple[str, ...]
    values: Mapping[str, float]

    def matches(self, *subject: str) -> bool:
        import fnmatch

        return all(fnmatch.fnmatchcase(s, sel) for s, sel in zip(subject, self.selectors))


@dataclass(frozen=True)
class RuleGrammar:
    option: str  # ini name, for messages
    selectors: tuple[str, ...]  # how each selector is shown in the usage line: "<backend-glob>", "<dtype|*>"
    keys: Mapping[str, tuple[float, float]]  # key -> inclusive (low, high)
    dtype_selector: int | None = None  # index of the selector that must be a dtype or "*"

    @property
    def usage(self) -> str:
        return " ".join([*self.selectors, *(f"{k}=<number>" for k in self.keys)])

    def parse(self, lines: Iterable[str]) -> tuple[Rule, ...]:
        rules = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            n = len(self.selectors)
            where = f"{self.option} rule {line!r}"
            if len(parts) <= n:
                raise OptionError(f"{where}: expected '{self.usage}'")
            selectors = tuple(parts[:n])
            if self.dtype_selector is not None:
                sel = selectors[self.dtype_selector]
                if sel != "*" and dtype_name(sel) not in DTYPE_NAMES:
                    raise OptionError(f"{where}: dtype must be one of {', '.join(DTYPE_NAMES)} or *")
                selectors = (*selectors[: self.dtype_selector], "*" if sel == "*" else dtype_name(sel),
                             *selectors[self.dtype_selector + 1:])
            values: dict[str, float] = {}
            for item in parts[n:]:
                key, _, text = item.partition("=")
                try:
                    value = float(text)
                except ValueError:
                    value = math.nan
                low, high = self.keys.get(key, (math.nan, math.nan))
                if not low <= value <= high:
                    allowed = ", ".join(f"{k}=<{lo:g}..{hi:g}>" for k, (lo, hi) in self.keys.items())
                    raise OptionError(f"{where}: {item!r} is not one of {allowed}")
                values[key] = value
            rules.append(Rule(line, selectors, values))
        return tuple(rules)


TOLERANCE_RULES = RuleGrammar("attn_tolerance", ("<backend-glob>", "<dtype|*>"),
                              {"k": (0.0, math.inf), "floor": (0.0, math.inf), "floor_mean": (0.0, math.inf)},
                              dtype_selector=1)
PIPELINE_SSIM_RULES = RuleGrammar("attn_pipeline_ssim", ("<dtype|*>",),
                                  {"ref": (0.0, 1.0), "golden": (0.0, 1.0)}, dtype_selector=0)


# -- the options -----------------------------------------------------------------------------------
def _opt(help: str, default: Any = None, kind: str = "string", **extra: Any) -> Any:
    """A field of Options; ``kind`` says how the raw CLI / ini value is read."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": help, "kind": kind, **extra})
    return field(default=default, metadata={"help": help, "kind": kind, **extra})


@dataclass(frozen=True)
class Options:
    """The run's options, resolved and validated. Field ``x`` is ini key ``attn_x`` and flag ``--attn-x``."""

    backends: str | None = _opt("backends to put in the matrix: 'all', a comma list, globs ('sdpa-*', 'diffusers:*')")
    dtypes: tuple[str, ...] = _opt("dtypes of the matrix, comma list of fp32,fp16,bf16", ("fp32", "fp16", "bf16"), "dtypes")
    device: str = _opt("device to run on: 'cuda' when one is present, else 'cpu'", "auto", "device")
    examples: int = _opt("hypothesis examples per parity item (the user's hypothesis profile wins when loaded; with --attn-compare, the baseline's count unless given)", 30, "int", low=1)
    seed: int | None = _opt("hypothesis seed for the suite's draws; without it attnparity picks one (printed in the header, kept in results.json), derandomizes under CI, or with --attn-compare reuses the baseline's", None, "int")
    tolerance: tuple[Rule, ...] = _opt("tolerance overrides, one per line: '<backend-glob> <dtype|*> k=<k> floor=<floor> [floor_mean=<n>]'",
                                       (), "rules", grammar=TOLERANCE_RULES)
    artifacts: Path = _opt("directory for failure artifacts (images, diff maps)", Path(".attnparity/artifacts"), "rootpath")
    timeout: float = _opt("seconds one cell may run before it fails as timed out (0: no limit)", 0.0, "float", low=0.0)
    isolate: str = _opt("which backends run in a worker process of their own, so a crash, a hang or broken process state stays in their cells: 'auto' (backends not built into attnparity, i.e. entry points and register_backend; on CUDA every backend), 'all' or 'none'", "auto", "choice", choices=ISOLATE_MODES)
    report: Path | None = _opt("directory to write results.json and a self-contained index.html into", None, "path")
    compare: Path | None = _opt("results.json of an earlier run: fail this run where a cell got worse (the upgrade gate)", None, "path")
    known: tuple[str, ...] = _opt("known-findings ledgers (TOML, repeatable; ini: one per line) added to attnparity's built-in one; 'none' turns the built-in one off", (), "paths")
    compare_ratio: float = _opt("gate: an error ratio may grow by this factor before it counts as worse", 2.0, "float", low=1.0)
    compare_ssim: float = _opt("gate: an SSIM may drop by this much before it counts as worse", 0.01, "float", low=0.0)
    compare_slowdown: float = _opt("gate: a timing on the same device may grow by this fraction (0.25 = 25%), relative to the reference kernel timed in the same item (absolute ms where there is none)", 0.25, "float", low=0.0)
    pipeline: tuple[str, ...] = _opt("a local diffusers checkpoint directory to add to the pipeline checks (repeatable; ini: one per line)", (), "lines")
    golden_dir: Path | None = _opt("where golden images are read and written (default <rootdir>/golden; built-in pipelines fall back to the goldens shipped with attnparity)", None, "rootpath")
    golden_update: bool = _opt("write the golden images of the pipelines that run (made with fp64 reference attention); never done otherwise", False, "bool")
    compile: bool = _opt("pipeline items also run with the denoiser (unet / transformer) compiled by torch.compile (fullgraph, inductor, its own SDPA): a 'sdpa+compile' cell judged by SSIM against the eager fp64-attention image and the golden, and a perf item with compile's speed-up in images/s over eager, compile time apart. On CPU only pixart in fp32 (a compile takes minutes there)", False, "bool")
    pipeline_ssim: tuple[Rule, ...] = _opt("pipeline SSIM thresholds, one per line: '<dtype|*> ref=<ssim> golden=<ssim>'",
                                           (), "rules", grammar=PIPELINE_SSIM_RULES)
    perf: str = _opt("perf shape set: 'quick' (a few real diffusion shapes; fewer tokens on CPU) or 'full' (every catalogued shape; meant for GPUs, hours on a small CPU)", "quick", "choice", choices=PERF_MODES)
    perf_baseline: Path | None = _opt("results.json of an earlier run: a perf cell slower than it beyond --attn-perf-margin and --attn-perf-noise fails (same device only; relative to the reference kernel timed in the same item)", None, "path")
    perf_margin: float = _opt("slowdown allowed against --attn-perf-baseline, as a fraction (0.25 = 25%; the same default as --attn-compare-slowdown, so both gates call the same cells slower)", 0.25, "float", low=0.0)
    perf_noise: float = _opt("both timing gates: a time counts as slower only beyond this many times its measured noise too (the standard error of the time relative to the reference kernel; the cv for an absolute time)", 3.0, "float", low=0.0)
    perf_busy_slowdown: float = _opt("both timing gates: when either run timed a cell beside other work (other processes used over 25% of the CPU meanwhile; for records without that measure, a load-average note), a time that moved beyond the allowance but by no more than this fraction (1.0: up to 2x slower, or 2x faster) is inconclusive, listed apart and never failing; beyond it, still worse (or better)", 1.0, "float", low=0.0)
    perf_threads: int = _opt("CPU op-level perf items: torch threads while timing (0: leave the session's count: torch's default of one per core, or each pytest-xdist worker's share; pipeline timings always use one, as pipelines run single-threaded). One by default: on a shared CPU a multi-threaded kernel stalls whenever another process takes one of its cores, by a factor its reference does not share, so even ratios swing; the label says the count and timings compare only under one label", 1, "int", low=0)
    summary: str = _opt("terminal summary: 'short' (failures first, only rows that ran, unavailable backends one line per reason; fits a screen) or 'full' (every row, skips included)", "short", "choice", choices=SUMMARY_MODES)

    @classmethod
    def resolve(cls, cli: Callable[[str], Any], ini: Callable[[str], Any], *, rootdir: Path,
                invocation_dir: Path, ini_dir: Path | None = None) -> "Options":
        """Read every option: ``cli(ini_name)`` (None when not given) over ``ini(ini_name)`` (None or
        "" when not set) over the default. Paths given on the command line are taken from the
        invocation directory, as --junitxml does; paths in the ini file from its directory
        (``ini_dir``), as pytest's own "paths" ini values; artifacts and golden dirs from the rootdir."""
        values = {}
        for spec in OPTIONS:
            raw = cli(spec.ini)
            from_ini = raw is None or (spec.kind in ("lines", "rules", "paths") and not raw)
            if from_ini:
                raw = ini(spec.ini)
            base = (ini_dir or invocation_dir) if from_ini else invocation_dir
            values[spec.attr] = spec.read(raw, rootdir=rootdir, invocation_dir=base, from_ini=from_ini)
        return cls(**values)


@dataclass(frozen=True)
class OptionSpec:
    """How one Options field is named, typed and read."""

    attr: str
    help: str
    default: Any
    kind: str
    extra: Mapping[str, Any]

    @property
    def ini(self) -> str:
        return "attn_" + self.attr

    name = ini  # the ini key, as docs/options.md calls it

    @property
    def flag(self) -> str:
        return "--attn-" + self.attr.replace("_", "-")

    def read(self, raw: Any, *, rootdir: Path, invocation_dir: Path, from_ini: bool = False) -> Any:
        """The value of ``raw`` (text, lines or None); ``from_ini`` names the ini key in errors."""
        if raw is None or raw == "":
            if self.default is None or self.kind not in ("path", "rootpath"):
                return self.default
            raw = self.default  # a default path is taken from the same base as a given one
        where = f"ini key {self.ini}" if from_ini else self.flag
        kind = self.kind
        if kind in ("int", "float"):
            try:
                value = int(raw) if kind == "int" else float(raw)
            except (TypeError, ValueError):
                raise OptionError(f"{where}={raw!r}: not a{'n integer' if kind == 'int' else ' number'}") from None
            low = self.extra.get("low")
            if low is not None and not value >= low:
                raise OptionError(f"{where}={raw}: must be >= {low:g}")
            return value
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise OptionError(f"{where}={raw!r}: expected true or false")
        if kind == "lines":
            return tuple(str(line).strip() for line in _lines(raw) if str(line).strip())
        if kind == "paths":  # paths, or the word "none"
            return tuple(line if line == "none" else str(_absolute(line, invocation_dir))
                         for line in (str(x).strip() for x in _lines(raw)) if line)
        if kind == "rules":
            return self.extra["grammar"].parse(_lines(raw))
        if kind == "dtypes":
            names = [dtype_name(p.strip()) for p in str(raw).split(",") if p.strip()]
            unknown = [n for n in names if n not in DTYPE_NAMES]
            if unknown or not names:
                raise OptionError(f"{where}={raw}: unknown {unknown or 'empty'}; known: {', '.join(DTYPE_NAMES)}")
            return tuple(dict.fromkeys(names))
        if kind == "device":
            text = str(raw).strip()
            if text != "auto" and text.split(":")[0] not in DEVICE_KINDS:
                raise OptionError(f"{where}={text}: expected auto, cpu, cuda or cuda:N")
            return text
        if kind == "choice":
            if raw not in self.extra["choices"]:
                raise OptionError(f"{where}={raw}: expected one of {', '.join(self.extra['choices'])}")
            return raw
        if kind in ("path", "rootpath"):
            path = Path(str(raw)).expanduser()
            base = invocation_dir if kind == "path" else rootdir
            return path if path.is_absolute() else (base / path).resolve() if kind == "path" else base / path
        return str(raw)


def _absolute(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _lines(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return raw.splitlines()
    return [str(x) for x in raw]


OPTIONS: tuple[OptionSpec, ...] = tuple(
    OptionSpec(f.name, f.metadata["help"], f.default if f.default is not MISSING else f.default_factory(),  # type: ignore[misc]
               f.metadata["kind"], {k: v for k, v in f.metadata.items() if k not in ("help", "kind")})
    for f in fields(Options))
