"""Summarise py-spy raw recordings (`bench/e2e.py --py-spy DIR`): where each kind of process spends its CPU.

    .venv/bin/python bench/py_spy_summary.py DIR [--top 25] [--json]

Files are grouped by the role in their name (gunicorn-child, celery-child, ...; see e2e.Profiler). For each
group it prints the samples recorded, then the functions with the most samples anywhere on the stack
("inclusive": the function and what it called) and at the top of the stack ("self"), as a share of the
group's samples. Lines of a raw recording are `frame;frame;...;frame <count>`, outermost frame first, each
frame `function (path:line)`; py-spy leaves idle threads out unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
ROLE = re.compile(r"^(?P<role>[a-z]+-(?:master|child))-\d+\.txt$")


def frame_name(frame: str) -> str:
    """`function (module path)` without the line number, the path shortened to the package."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("path")
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


def parse_line(line: str) -> tuple[list[str], int] | None:
    line = line.rstrip("\n")
    if not line.strip():
        return None
    stack, _, count = line.rpartition(" ")
    if not stack or not count.isdigit():
        return None
    frames = [frame_name(frame) for frame in stack.split(";") if frame]
    # py-spy starts a stack with the process and thread when asked to; they are not functions.
    frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
    return frames, int(count)


def summarise(paths: list[Path], top: int) -> dict:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        match = ROLE.match(path.name)
        groups[match.group("role") if match else path.stem].append(path)
    summary = {}
    for role, files in sorted(groups.items()):
        total, inclusive, leaf = 0, Counter(), Counter()
        for path in files:
            for line in path.read_text(errors="replace").splitlines():
                parsed = parse_line(line)
                if parsed is None:
                    continue
                frames, count = parsed
                total += count
                if frames:
                    leaf[frames[-1]] += count
                for frame in set(frames):
                    inclusive[frame] += count
        summary[role] = {
            "processes": len(files),
            "samples": total,
            "inclusive": [(name, count, _share(count, total)) for name, count in inclusive.most_common(top)],
            "self": [(name, count, _share(count, total)) for name, count in leaf.most_common(top)],
        }
    return summary


def _share(count: int, total: int) -> float:
    return round(100.0 * count / total, 1) if total else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args(argv)
    summary = summarise(sorted(arguments.directory.glob("*.txt")), arguments.top)
    if arguments.json:
        print(json.dumps(summary, indent=1))
        return 0
    for role, group in summary.items():
        print(f"## {role}: {group['processes']} process(es), {group['samples']} samples")
        for title in ("inclusive", "self"):
            print(f"### {title}")
            for name, count, share in group[title]:
                print(f"{share:5.1f}%  {count:6d}  {name}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
