"""Files a device call's protocol queue results under ``benchmarks/results/protocol/NAME/``.

    python benchmarks/collect_call.py /work/.device/1/w.tgz cifar10n-worst-graphs23

The call ran ``benchmarks/protocol_queue.sh $OUT/w …`` and packed ``$OUT/w`` as ``w.tgz``
(benchmarks/jobs/README.md). This copies its parts (``part_*.json`` and every ``part_*.log``,
the logs of jobs cut at the deadline too), its ``merged*.json`` and its saved teachers
(``teachers/*.json``, committed; ``teachers/*.npz``, git-ignored, kept for KD-Crowd jobs over
them later with ``protocol.py --teacher-outputs``) and the probabilities ``--save-proba`` wrote
(``proba/*.npz``, committed) into the folder, and prints one line per job: its runs and test
accuracies, marked cut where its log lacks protocol.py's closing line (the deadline stopped it
after some runs: a part is written after every run), or that it left no part. It refuses a folder that exists, so
an earlier call's files are never overwritten. Then add the folder to §7g's ``--merge`` command.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collect(archive: Path, dest: Path) -> list[str]:
    """Copy the call's files from ``archive`` (a ``.tgz`` of the queue's folder, or the folder)
    into ``dest``; return one summary line per job."""
    if dest.exists():
        raise SystemExit(f"{dest} exists: name a new folder for this call")
    with tempfile.TemporaryDirectory() as tmp:
        if archive.is_dir():
            src = archive
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(tops) != 1:
                raise SystemExit(f"{archive}: expected one folder inside (the queue's), found {[p.name for p in tops]}")
            src = tops[0]
        logs = sorted(src.glob("part_*.log"), key=lambda p: int(re.sub(r"\D", "", p.stem)))
        if not logs:
            raise SystemExit(f"{archive}: no part_*.log (not a protocol_queue.sh folder)")
        dest.mkdir(parents=True)
        for f in [*src.glob("part_*.json"), *logs, *src.glob("merged*.json")]:
            shutil.copy2(f, dest / f.name)
        for sub, suffixes in (("teachers", (".json", ".npz")), ("proba", (".npz",))):
            files = [f for f in (src / sub).glob("*") if f.suffix in suffixes] if (src / sub).is_dir() else []
            if files:
                (dest / sub).mkdir()
                for f in files:
                    shutil.copy2(f, dest / sub / f.name)
        lines = []
        for log in logs:
            part = log.with_suffix(".json")
            if not part.exists():
                lines.append(f"{log.stem}: no part (cut at the deadline or failed; see {log.name})")
                continue
            runs = json.loads(part.read_text())["runs"]
            finished = any(line.startswith('{"out": ') for line in log.read_text(errors="replace").splitlines())
            lines.append(f"{log.stem}: " + ", ".join(f"{r['label']} seed {r['seed']} {100 * r['test_accuracy']:.2f}" for r in runs)
                         + ("" if finished else f" (cut after these runs: {log.name} lacks protocol.py's closing line)"))
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archive", type=Path, help="the call's w.tgz (or the unpacked queue folder)")
    ap.add_argument("name", help="the new folder under --results, e.g. cifar10n-worst-graphs23")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "protocol")
    args = ap.parse_args(argv)
    for line in collect(args.archive, args.results / args.name):
        print(line)
    print(f"filed under {args.results / args.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
