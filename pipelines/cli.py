"""The ``emoflow`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.params import ParamsError, emoflow_home, load_params


def _data_params(args):
    params = load_params(args.params).with_overrides(raw_root=getattr(args, "raw_root", None))
    return params, params.data


def _sources(arg: str | None, default) -> list[str]:
    if not arg:
        return list(default)
    return [s.strip() for s in arg.split(",") if s.strip()]


def cmd_prepare(args) -> int:
    from pipelines.prepare import prepare
    from pipelines.progress import SourceProgressBars

    _, data = _data_params(args)
    sources = _sources(args.sources, data.sources)
    home = emoflow_home()
    bars = SourceProgressBars()
    try:
        shard_set = prepare(data, home, sources, Path(args.out) if args.out else None, on_progress=bars)
    finally:
        bars.close()
    summary = shard_summary(shard_set.manifest)
    if args.summary_out:
        Path(args.summary_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_out).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        state = "re-used (nothing rewritten)" if shard_set.reused else "written"
        print(f"EmotionSet {shard_set.version} {state}: {shard_set.path}")
        print(_summary_text(summary))
    return 0


def shard_summary(manifest: dict) -> dict:
    """The manifest's headline figures (the keys `emoflow shards summary --json` promises)."""
    return {
        "version": manifest["version"],
        "image_size": list(manifest["image_size"]),
        "rows": manifest["rows"],
        "by_source": manifest["by_source"],
        "by_label": manifest["by_label"],
        "by_split": manifest["by_split"],
        "quarantined": manifest["quarantined"],
    }


def _summary_text(summary: dict) -> str:
    quarantined = sum(sum(r.values()) for r in summary["quarantined"].values())
    lines = [
        f"  rows {summary['rows']}  quarantined {quarantined}  image size {summary['image_size'][0]}x{summary['image_size'][1]}",
        "  by source: " + ", ".join(f"{k} {v}" for k, v in summary["by_source"].items()),
        "  by split:  " + ", ".join(f"{k} {v}" for k, v in summary["by_split"].items()),
        "  by label:  " + ", ".join(f"{k} {v}" for k, v in summary["by_label"].items()),
    ]
    for source, reasons in summary["quarantined"].items():
        if reasons:
            lines.append(f"  quarantined {source}: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    return "\n".join(lines)


def cmd_shards_summary(args) -> int:
    from pipelines.shards import resolve_shard_set

    version_dir = resolve_shard_set(Path(args.dir))
    manifest = json.loads((version_dir / "manifest.json").read_text())
    summary = shard_summary(manifest)
    print(
        json.dumps(summary, indent=2)
        if args.json
        else f"EmotionSet {summary['version']}: {version_dir}\n" + _summary_text(summary)
    )
    return 0


def cmd_shards_validate(args) -> int:
    from pipelines.shards import resolve_shard_set
    from pipelines.validation import validate_shard_set

    version_dir = resolve_shard_set(Path(args.dir))
    manifest = json.loads((version_dir / "manifest.json").read_text())
    outcomes = validate_shard_set(version_dir, manifest)
    report = {name: {"success": o.success, "stats": o.stats, "failures": o.failures} for name, o in outcomes.items()}
    print(json.dumps(report, indent=2))
    return 0 if all(o.success for o in outcomes.values()) else 1


def shard_audit_report(version_dir: Path) -> dict:
    """The manifest's ``audit`` section; for a shard set built before the audit, the audit of its rows as they
    are (``recomputed: true``; blank and too-large images were not screened then, so those counts are 0)."""
    import pyarrow.parquet as pq

    manifest = json.loads((version_dir / "manifest.json").read_text())
    if "audit" in manifest:
        return {"version": manifest["version"], "recomputed": False, **manifest["audit"]}
    from collections import Counter

    from pipelines.audit.shard_audit import audit_shard_set
    from pipelines.params import AuditParams

    reasons = pq.read_table(version_dir / "quarantine.parquet", columns=["reason"]).column("reason").to_pylist()
    report = audit_shard_set(version_dir, AuditParams()).report(Counter(), Counter(reasons))
    return {"version": manifest["version"], "recomputed": True, **report}


def cmd_shards_audit(args) -> int:
    from pipelines.shards import resolve_shard_set

    version_dir = resolve_shard_set(Path(args.dir))
    report = shard_audit_report(version_dir)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"EmotionSet {report['version']} audit: {version_dir}")
    from pipelines.audit.shard_audit import REPORT_COUNTS

    for key in REPORT_COUNTS:
        print(f"  {key.replace('_', ' ')}: {report[key]}")
    print(f"  settings: near copies within {report['near_distance']} bits, worst cell <= {report['max_cell_error']}")
    print("  quarantined by reason: " + ", ".join(f"{k} {v}" for k, v in report["quarantined_by_reason"].items()))
    if (version_dir / "audit_duplicates.png").exists():
        print(f"  example groups: {version_dir / 'audit_duplicates.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emoflow", description="Facial-expression data and flow models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the versioned EmotionSet shards from the raw datasets")
    p.add_argument("--params", default=None, help="params file (default: the project's params.yaml)")
    p.add_argument(
        "--raw-root", default=None, help="folder holding one folder per source (default: params data.raw_root)"
    )
    p.add_argument("--sources", default=None, help="comma-separated sources (default: those enabled in params)")
    p.add_argument("--out", default=None, help="shards root (default: $EMOFLOW_HOME/shards)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--summary-out", default=None, help="also write the summary JSON to this file (DVC's metrics)")
    p.set_defaults(func=cmd_prepare)

    shards = sub.add_parser("shards", help="inspect shard sets").add_subparsers(dest="shards_command", required=True)
    s = shards.add_parser("summary", help="print a shard set's manifest figures")
    s.add_argument("dir", help="a shard set folder, or a shards root (its 'current' version)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_shards_summary)
    v = shards.add_parser("validate", help="run the Great Expectations suites on a shard set")
    v.add_argument("dir")
    v.set_defaults(func=cmd_shards_validate)
    a = shards.add_parser("audit", help="duplicates, leakage across splits, blank and too-large images")
    a.add_argument("dir", help="a shard set folder, or a shards root (its 'current' version)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_shards_audit)

    # Commands from layers above this one (training, MLflow, Dagster runs) register themselves through the
    # ``emoflow.commands`` entry point group, so this module never imports them.
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="emoflow.commands"), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamsError, FileNotFoundError) as error:
        print(f"emoflow: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
