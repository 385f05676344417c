"""Write ``requirements.lock``: exact versions of the installed dependency closure.

Run from the environment behind the README's numbers::

    python tools/write_lock.py            # writes requirements.lock
    pip install -r requirements.lock && pip install --no-deps -e .

The closure starts from the distribution's requirements (plus the ``test`` extra) and
follows each installed package's own requirements, so unrelated packages in the same
environment are left out.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "audio-tuning-harness"
EXTRAS = ("test",)


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """``{canonical name: version}`` of every installed package ``root`` needs."""
    env = default_environment()
    pins: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        dist = distribution(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(
                req.marker.evaluate({**env, "extra": e}) for e in (*wanted, "")
            ):
                continue
            key = canonicalize_name(req.name)
            if key in pins:
                continue
            try:
                pins[key] = distribution(req.name).version
            except PackageNotFoundError:
                continue  # an optional requirement not installed here
            todo.append((req.name, tuple(req.extras)))
    return pins


def conflicts(pins: dict[str, str]) -> list[str]:
    """Requirements of pinned packages that another pin does not satisfy (e.g. torch's
    ``setuptools>=77.0.3`` against a pinned setuptools 65.5.0, which ``pip install -r``
    refuses): the lock must install on a fresh venv. The requirements are read from the
    installed packages whose version is the pinned one (all of them when writing the lock)."""
    env = default_environment()
    found = []
    for name in sorted(pins):
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if dist.version != pins[name]:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            key = canonicalize_name(req.name)
            if key not in pins or (req.marker and not req.marker.evaluate({**env, "extra": ""})):
                continue
            if not req.specifier.contains(pins[key], prereleases=True):
                found.append(f"{name}=={pins[name]} needs {req} but the lock pins {pins[key]}")
    return found


def main(out: str = "requirements.lock") -> None:
    pins = closure(ROOT, EXTRAS)
    problems = conflicts(pins)
    if problems:
        sys.exit(
            "the installed environment is inconsistent, no lock written:\n  "
            + "\n  ".join(problems)
        )
    header = [
        f"# Exact environment behind the README's numbers (python {sys.version.split()[0]}).",
        "# Written by tools/write_lock.py; install with:",
        "#   pip install -r requirements.lock && pip install --no-deps -e .",
    ]
    lines = [f"{name}=={pins[name]}" for name in sorted(pins)]
    Path(out).write_text("\n".join(header + lines) + "\n")
    print(f"wrote {len(lines)} pins to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
