"""Every figure the docs quote, regenerated from the documented commands and checked.

The figures of README.md and docs/ carry markers, HTML comments that rendered Markdown
does not show:

* a figure in prose or in a hand-written table: `<!-- fig:SET/KEY -->0.8468` (the number
  right after the marker, bold allowed: `<!-- fig:SET/KEY -->**0.840**`) is value KEY of
  figure set SET;
* a generated table: a line `<!-- figures:SET/TABLE -->`, the table, a line
  `<!-- /figures -->`; SET's renderer TABLE writes the table from SET's values.

The sets, their documented commands, how their values are read and how their tables are
rendered are registered in `figure_sets.py` and `figure_sets_security.py` (readers and
tables: `figure_tables.py`; markers, comparison and rewriting: `figure_markers.py`).

    python benchmarks/figures.py --list [SET ...]     # sets, commands, run time, docs using them
    python benchmarks/figures.py --run SET ...         # run the commands, store the values
    python benchmarks/figures.py --check               # compare every marked figure
    python benchmarks/figures.py --write [SET ...]     # rewrite the marked figures

SET may be a glob (`'poisoning-pretrained-*'`). `--run` runs a set's commands in the
repository root, outputs in `--work` (default `runs/figures/<set>/`, not committed); a
command whose output exists is skipped, so an interrupted `--run` continues where it
stopped. It then reads the values and writes `benchmarks/results/<set>.json` (the values,
the commands, the commit, the date, each command's seconds) and copies the set's small
raw outputs (each at most 64 KB, e.g. poisoning.py's JSON) into `benchmarks/results/<set>/`.
Commit those files: `--check` and `--write` read them, and the next run is compared with
them by `git diff`.

`--check` prints every figure that differs (doc, line, figure, doc value, measured value)
and the sets with no measurement yet, and exits 1 when a figure differs or a marker is
wrong (unknown set, key or table; a marker without a number). A figure differs when
|doc - measured| > max(0.0005, half a unit of the doc's last digit): a figure written
64.7 stands for 64.65 to 64.75. Times, speed and memory ratios (the keys a set marks as
timings) differ when off by more than 30 % and never fail the check; neither do the figures of
archived sets, which the docs keep as measured by an earlier version. `--write` rewrites
the marked figures and tables of every measured set but the archived ones (or of the sets
named), keeping each figure's decimals, sign and thousands separators.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figure_markers import Difference, check, parse, rewrite  # noqa: E402
from figure_sets import SETS, FigureSet, Values, command_log, command_seconds  # noqa: E402

log = logging.getLogger("figures")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "figures"
KEEP_LIMIT = 64 * 1024

# ---------------------------------------------------------------------- measurements


def load_store(name: str, results: Path = RESULTS) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def measured_values(
    name: str, sets: Mapping[str, FigureSet] = SETS, results: Path = RESULTS
) -> Values | None:
    """A set's values: stored by `--run`, or derived from the sets it needs; None if any
    of them has not been measured."""
    figure_set = sets[name]
    if figure_set.derive is None:
        store = load_store(name, results)
        return None if store is None else store["values"]
    parts = {need: measured_values(need, sets, results) for need in figure_set.needs}
    if any(v is None for v in parts.values()):
        return None
    return figure_set.derive(parts)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- run


def _shown(path: Path) -> str:
    """A path as the commands and the stored results name it: relative to the repository."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path.resolve())


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" with local changes" if git("status", "--porcelain", "-uno") else "")


def _run_command(name: str, index: int, text: str, work: Path) -> float:
    """Run one command, its output into its log; the seconds it took."""
    logfile = command_log(work, index)
    part = logfile.with_name(logfile.name + ".part")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log.info("%s: command %d: %s", name, index, text)
    t0 = time.perf_counter()
    with part.open("w", encoding="utf-8") as out:
        done = subprocess.run(
            ["bash", "-c", text], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"figure set {name}: command {index} exited with {done.returncode}: {text}\n"
            f"its output: {_shown(part)}"
        )
    part.replace(logfile)
    return time.perf_counter() - t0


def run_set(s: FigureSet, work_root: Path = WORK, results: Path = RESULTS) -> Values:
    """Run a set's commands (skipping those whose output exists), store its values."""
    work = work_root / s.name
    work.mkdir(parents=True, exist_ok=True)
    seconds = command_seconds(work)
    texts = []
    for index, command in enumerate(s.commands, start=1):
        text = command.text.replace("{work}", _shown(work))
        texts.append(text)
        creates = command.creates and ROOT / command.creates.replace("{work}", _shown(work))
        if creates and creates.exists():
            log.info("%s: command %d done before (%s exists)", s.name, index, _shown(creates))
            continue
        if command.clears:
            shutil.rmtree(ROOT / command.clears.replace("{work}", _shown(work)), ignore_errors=True)
        seconds[str(index)] = round(_run_command(s.name, index, text, work), 1)
        (work / "seconds.json").write_text(json.dumps(seconds, indent=1), encoding="utf-8")
    assert s.read is not None, f"figure set {s.name} has no reader"
    values = s.read(work)
    _store(s, work, texts, seconds, values, results)
    return values


def _store(
    s: FigureSet, work: Path, texts: list[str], seconds: dict, values: Values, results: Path
) -> None:
    results.mkdir(parents=True, exist_ok=True)
    store = {
        "set": s.name,
        "about": s.about,
        "commands": texts,
        "commit": _commit(),
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": seconds,
        "values": dict(sorted(values.items())),
    }
    path = results / f"{s.name}.json"
    path.write_text(json.dumps(store, indent=1) + "\n", encoding="utf-8")
    kept = [p for pattern in s.keep for p in sorted(work.glob(pattern)) if p.is_file()]
    for source in kept:
        if source.stat().st_size > KEEP_LIMIT:
            log.warning("%s: %s not kept (over %d KB)", s.name, source, KEEP_LIMIT // 1024)
            continue
        target = results / s.name / source.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    log.info("%s: %d values in %s", s.name, len(values), _shown(path))


# ---------------------------------------------------------------------- command line


def doc_texts(paths: Sequence[Path] | None = None) -> dict[str, str]:
    """README.md and every Markdown file under docs/ (or `paths`), by repository path."""
    paths = paths or [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {_shown(p): p.read_text(encoding="utf-8") for p in paths}


def select(patterns: Sequence[str]) -> list[str]:
    """The set names matching `patterns` (names or globs); an unmatched pattern is an error."""
    names: list[str] = []
    for pattern in patterns:
        found = [n for n in SETS if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise SystemExit(f"no figure set matches {pattern!r} (see --list)")
        names += [n for n in found if n not in names]
    return names


def _usage(docs: Mapping[str, str]) -> dict[str, dict[str, int]]:
    used: dict[str, dict[str, int]] = {}
    for doc, text in docs.items():
        figures, blocks = parse(text, doc)
        for item in [*figures, *blocks]:
            per_doc = used.setdefault(item.set, {})
            per_doc[doc] = per_doc.get(doc, 0) + 1
    return used


def list_sets(names: Sequence[str], docs: Mapping[str, str], results: Path) -> None:
    used = _usage(docs)
    for name in names:
        s = SETS[name]
        store = load_store(name, results)
        state = f"measured {store['measured']} at {store['commit']}" if store else "not measured"
        if s.derive is not None:
            state = "derived from " + ", ".join(s.needs)
        cost = "" if s.derive else f" about {s.minutes:g} min on 2 CPU cores ({s.estimate});"
        print(f"{name}:{cost} {state}")
        print(f"  {s.about}" + (f"\n  archived: {s.archived}" if s.archived else ""))
        docs_using = ", ".join(f"{d} ({n})" for d, n in sorted(used.get(name, {}).items()))
        print(f"  used by: {docs_using or 'no doc yet'}")
        for command in s.commands:
            print(f"  $ {command.text.replace('{work}', _shown(WORK / name))}")


def report(diffs: Sequence[Difference], unmeasured: Mapping[str, set[str]]) -> int:
    """Print the check's findings; 1 if a figure differs or a marker is wrong."""
    titles = {
        "error": "Wrong markers",
        "figure": "Figures that differ from the measurements",
        "timing": "Timings off by more than 30 % (not failing)",
        "archived": "Archived figures that today's commands do not give (not failing)",
    }
    for kind, title in titles.items():
        found = [d for d in diffs if d.kind == kind]
        if found:
            print(f"{title}: {len(found)}")
        for d in found:
            print(f"  {d.doc}:{d.line}: {d.figure}: doc {d.doc_text or '-'}, measured {d.measured}")
    for name, docs in sorted(unmeasured.items()):
        print(f"not measured yet: {name} (used by {', '.join(sorted(docs))})")
    failing = [d for d in diffs if d.kind in ("error", "figure")]
    print(f"{len(failing)} figure(s) differ or markers are wrong" if failing else "check passed")
    return 1 if failing else 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="the sets, their commands and docs")
    mode.add_argument("--run", action="store_true", help="run the sets' commands, store values")
    mode.add_argument("--check", action="store_true", help="compare the docs' figures")
    mode.add_argument("--write", action="store_true", help="rewrite the docs' figures")
    p.add_argument("sets", nargs="*", help="set names or globs (default: all)")
    p.add_argument("--work", type=Path, default=WORK, help="work folder of --run")
    p.add_argument("--results", type=Path, default=RESULTS, help="stored measurements")
    p.add_argument("--docs", type=Path, nargs="+", help="Markdown files (default: all docs)")
    return p.parse_args(argv)


def _with_needs(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for part in [*SETS[name].needs, name]:
            if part not in out:
                out.append(part)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _arguments(argv)
    docs = doc_texts(args.docs)
    cache: dict[str, Values | None] = {}

    def values_of(name: str) -> Values | None:
        if name not in cache:
            cache[name] = measured_values(name, SETS, args.results)
        return cache[name]

    if args.list:
        list_sets(select(args.sets or ["*"]), docs, args.results)
    elif args.run:
        if not args.sets:
            raise SystemExit("--run needs the sets to run (see --list for their run times)")
        for name in _with_needs(select(args.sets)):
            if SETS[name].commands:
                try:
                    run_set(SETS[name], args.work, args.results)
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 1
    elif args.check:
        return report(*check(docs, values_of, SETS))
    else:
        names = select(args.sets) if args.sets else [n for n in SETS if not SETS[n].archived]
        for doc, text in docs.items():
            new, changed = rewrite(text, doc, values_of, names, SETS)
            if changed:
                (ROOT / doc).write_text(new, encoding="utf-8")
                print(f"{doc}: {changed} line(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
