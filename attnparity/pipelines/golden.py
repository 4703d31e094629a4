"""The golden store: ``<golden dir>/<pipeline>/<device-class>/<dtype>.png`` with ``<dtype>.json``
(its manifest), made with fp64 reference attention. Written only when asked
(``--attn-golden-update``), never otherwise.

Where goldens are looked up:

1. ``attn_golden_dir`` (``--attn-golden-dir``; default ``<rootdir>/golden``). Updates are always
   written here.
2. For the built-in pipelines only, when (1) has none and no ``attn_golden_dir`` was named: the
   goldens shipped with attnparity (``shipped_golden_dir``): inside the installed package
   (``attnparity/golden``, where the wheel puts this repository's top-level golden/), or golden/
   beside the package in a source checkout or editable install. So ``pytest --attn-backends=all``
   finds the committed goldens from any directory, however attnparity was installed. The record
   says which file was used.

The manifest says how and by what the image was made (seed, steps, size, config hash, torch /
diffusers / transformers versions, device, attnparity version, user and host, time). A golden made
by other versions or from another config is still compared, and the difference is reported with
the verdict, so an upgrade that moves the image is named as such.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .ssim import load_png, save_png, ssim, to_uint8

_PACKAGE = Path(__file__).resolve().parents[1]


def shipped_golden_dir() -> Path | None:
    """The goldens that came with attnparity: in the package (a wheel install) or beside it (a
    checkout or editable install, where golden/ stays at the repository's top level)."""
    for candidate in (_PACKAGE / "golden", _PACKAGE.parent / "golden"):
        if candidate.is_dir():
            return candidate
    return None

#: record.extra key of a pipeline cell whose golden half was skipped (no golden for its device
#: class yet): {"device_class", "expected" (the path), "command" (the one that writes them all)}
MISSING_KEY = "golden_missing"

#: Versions whose change may move an image; a golden made with others is reported.
TRACKED = ("torch", "diffusers", "transformers")



@dataclass(frozen=True)
class GoldenPaths:
    image: Path
    manifest: Path

    @classmethod
    def under(cls, root: Path, pipeline: str, device_cls: str, dtype: str) -> "GoldenPaths":
        base = Path(root) / pipeline / device_cls
        return cls(base / f"{dtype}.png", base / f"{dtype}.json")


def find(golden_dir: Path, pipeline: str, device_cls: str, dtype: str, shipped: bool) -> GoldenPaths | None:
    """The golden to compare against, or None when there is none. ``shipped``: fall back to the
    goldens shipped with attnparity (built-in pipelines, no golden dir named by the user)."""
    roots = [Path(golden_dir)]
    ship = shipped_golden_dir() if shipped else None
    if ship is not None and ship.resolve() != Path(golden_dir).resolve():
        roots.append(ship)
    for root in roots:
        paths = GoldenPaths.under(root, pipeline, device_cls, dtype)
        if paths.image.is_file():
            return paths
    return None


def write(golden_dir: Path, pipeline: str, device_cls: str, dtype: str, image: np.ndarray,
          manifest: dict[str, Any]) -> GoldenPaths:
    """Store ``image`` (the reference-attention image) and its manifest; returns where."""
    from attnparity.machine import versions

    paths = GoldenPaths.under(golden_dir, pipeline, device_cls, dtype)
    found = versions()
    data = {
        **manifest,
        "dtype": dtype,
        "device_class": device_cls,
        "attention": "fp64 reference (attnparity.check.reference.reference_forward, cast back)",
        "versions": {name: found[name] for name in (*TRACKED, "attnparity") if name in found},
        "made_by": {"tool": "attnparity --attn-golden-update", "user": _user(), "host": platform.node(),
                    "python": platform.python_version()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    save_png(image, paths.image)
    tmp = paths.manifest.with_name(paths.manifest.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(paths.manifest)
    return paths


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


@dataclass
class GoldenComparison:
    paths: GoldenPaths
    score: float
    expected: np.ndarray
    actual: np.ndarray
    diff_map: Any
    manifest: dict[str, Any] = field(default_factory=dict)
    #: human notes: golden made by other versions, another config
    notes: list[str] = field(default_factory=list)


def compare(paths: GoldenPaths, image: np.ndarray, config_hash: str) -> GoldenComparison:
    """SSIM of ``image`` (float [0, 1]) against the golden PNG, both as the 8-bit PNG would hold them."""
    from attnparity.machine import versions

    expected = load_png(paths.image)
    actual = to_uint8(image)
    if expected.shape != actual.shape:
        raise ValueError(f"golden {paths.image} is {expected.shape[1]}x{expected.shape[0]}, the pipeline made "
                         f"{actual.shape[1]}x{actual.shape[0]}; regenerate the golden with --attn-golden-update")
    result = ssim(actual, expected)
    manifest: dict[str, Any] = {}
    notes: list[str] = []
    if paths.manifest.is_file():
        try:
            manifest = json.loads(paths.manifest.read_text())
        except json.JSONDecodeError as exc:
            notes.append(f"manifest {paths.manifest} is not JSON ({exc})")
    else:
        notes.append(f"golden has no manifest ({paths.manifest} missing)")
    if manifest:
        now = versions()
        made = manifest.get("versions", {})
        moved = [f"{name} {made.get(name, '?')} (now {now.get(name, 'absent')})" for name in TRACKED
                 if made.get(name) != now.get(name)]
        if moved:
            notes.append("golden made by other versions: " + ", ".join(moved))
        if manifest.get("config_hash") not in (None, config_hash):
            notes.append(f"golden made from another pipeline config (hash {manifest.get('config_hash')}, now {config_hash})")
    return GoldenComparison(paths, result.score, expected, actual, result, manifest, notes)
