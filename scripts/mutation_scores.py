"""Per-module mutation scores of the last ``scripts/mutation.sh run`` (the README's table).

    python scripts/mutation_scores.py [build/mutation/mutants]

Reads mutmut's per-file results (``*.py.meta``) with mutmut's own exit-code meanings. The
score is strict: killed / checked, so survivors, mutants no test reached and timeouts all
count against it; mutants not checked yet are left out and shown as pending.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

UNCOUNTED = ("not checked", "skipped")


def module_counts(mutants: Path) -> dict[str, Counter]:
    """``{module path: Counter(status)}`` for every mutated source file."""
    counts = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            module = str(meta.relative_to(mutants)).removesuffix(".meta")
            counts[module] = Counter(status_by_exit_code[code] for code in codes.values())
    return counts


def row(name: str, status: Counter) -> str:
    checked = sum(n for s, n in status.items() if s not in UNCOUNTED)
    killed = status["killed"]
    score = f"{100 * killed / checked:5.1f} %" if checked else "    -  "
    return (
        f"{name:48s} {sum(status.values()):6d} {killed:7d} {status['survived']:9d} "
        f"{status['no tests']:9d} {status['timeout']:8d} {status['not checked']:8d}  {score}"
    )


def main(argv: list[str]) -> None:
    mutants = Path(argv[0] if argv else "build/mutation/mutants")
    counts = module_counts(mutants)
    print(f"{'module':48s} mutants  killed  survived  no tests  timeout  pending  score")
    total: Counter = Counter()
    for name, status in counts.items():
        print(row(name, status))
        total += status
    print(row("total", total))


if __name__ == "__main__":
    main(sys.argv[1:])
