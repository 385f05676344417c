"""Run the README's Tour top to bottom, as written, in the current folder.

    python tools/tour.py            # every line as written (the full settings: about an hour)
    python tools/tour.py --small    # CI: adds each line's [CI: ...] settings, skips [CI: skip]
    python tools/tour.py --from 16  # resume at line 16 (after a failure)

``RUN_ID`` in a line is the last stored run's id (``harness runs``). A line that fails stops
the Tour with its command, exit code and error; each line's time is printed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CI_NOTE = re.compile(r"\[CI:\s*([^\]]*)\]")


@dataclass
class TourLine:
    """One command of the Tour and what CI does with it."""

    command: str
    ci_args: str = ""
    """Settings added with ``--small`` (fewer epochs, a smaller benchmark)."""
    ci_skip: str = ""
    """Why ``--small`` skips the line ('' when it runs)."""


def tour_lines(readme: str) -> list[TourLine]:
    """The commands of the README's Tour block, with their ``[CI: ...]`` notes."""
    section = readme[readme.index("## Tour") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    block = block[: block.index("```")]
    lines = []
    for raw in block.splitlines():
        if not raw.strip():
            continue
        command, _, comment = raw.partition("  #")
        note = CI_NOTE.search(comment)
        text = note.group(1).strip() if note else ""
        if text.startswith("skip"):
            lines.append(TourLine(command.strip(), ci_skip=text[4:].strip(" ,") or "skip"))
        else:
            lines.append(TourLine(command.strip(), ci_args=text))
    return lines


def last_run_id() -> str:
    """The id of the most recently stored run (the last line of ``harness runs``)."""
    done = subprocess.run(
        [sys.executable, "-m", "harness", "runs"], capture_output=True, text=True, check=True
    )
    lines = [line for line in done.stdout.splitlines() if line and not line.startswith("no ")]
    if not lines:
        raise SystemExit("tour: a line needs RUN_ID but no run is stored yet")
    return lines[-1].split()[0]


def argv_of(line: TourLine, small: bool) -> list[str]:
    """The command's arguments (``RUN_ID`` filled in, the CI settings added with ``small``)."""
    words = shlex.split(line.command)
    if words[0] != "harness":
        raise SystemExit(f"tour: not a harness command: {line.command}")
    if "RUN_ID" in line.command:
        run_id = last_run_id()
        words = [w.replace("RUN_ID", run_id) for w in words]
    extra = shlex.split(line.ci_args) if small else []
    return [sys.executable, "-m", "harness", *words[1:], *extra]


def main(argv: list[str]) -> int:
    small = "--small" in argv
    first = int(argv[argv.index("--from") + 1]) if "--from" in argv else 1
    lines = tour_lines(README.read_text())
    start = time.monotonic()
    for number, line in enumerate(lines, 1):
        if number < first:
            continue
        if small and line.ci_skip:
            print(f"tour {number}/{len(lines)}: skipped ({line.ci_skip}): {line.command}")
            continue
        if "..." in line.command:
            print(f"tour {number}/{len(lines)}: skipped (a template): {line.command}")
            continue
        began = time.monotonic()
        done = subprocess.run(argv_of(line, small), capture_output=True, text=True)
        took = time.monotonic() - began
        if done.returncode != 0:
            print(
                f"tour {number}/{len(lines)}: FAILED (exit {done.returncode}, {took:.0f} s): "
                f"{line.command}\n{done.stderr[-3000:]}"
            )
            return 1
        print(f"tour {number}/{len(lines)}: ok ({took:.0f} s): {line.command}", flush=True)
    print(f"tour: all {len(lines)} lines in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
