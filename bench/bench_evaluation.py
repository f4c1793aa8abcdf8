"""Benchmark: ``flowmodels.evaluation.evaluate`` of one flow, stage by stage, before (the code at git HEAD, from
a worktree) and after (this checkout), back to back on the same model and images; prints a table, the speedup
and whether the numbers agree.

    git worktree add --detach /tmp/eval_head HEAD     # "before" (never check out in the main tree)
    # what `emoflow run` evaluates after preparing JAFFE, CK+48 and the FER2013 train zip (its own splits):
    python bench/bench_evaluation.py --sources jaffe ckplus fer2013 --own-splits
    # a FER2013-sized test split: 3,700 faces drawn from FER2013's train zip, the rest as the training split
    python bench/bench_evaluation.py --test-images 3700
    python bench/bench_evaluation.py --variant glow --test-images 400 --reference-images 2000   # quicker
    python bench/bench_evaluation.py --synthetic       # uint8 noise of the same size, no shard build
    python bench/bench_evaluation.py --gains           # what each change gives, on a few hundred faces

The model: ``build_model(variant, (1, 48, 48), 7, **params.yaml model.hparams)`` (levels 3, steps 8, hidden 128),
actnorm initialised on a batch, then every parameter perturbed by N(0, 0.05^2) (a fresh conditional flow
ignores its label: its label shifts start at zero, and every class would tie). The images: a fixed-seed draw of
``--test-images`` faces as the test split and the rest (or ``--reference-images`` of them) as the training split
that the transfer strip's class means come from (what ``runs.flows.evaluate_flow`` passes). Settings: params.yaml
``evaluate`` of the code that runs (HEAD's defaults for "before"), ``--tsne-points``/``--transfer-per-class``
override both sides.

Each evaluation runs in a fresh process pinned to ``--cores`` CPUs with as many torch threads and
``OMP_WAIT_POLICY=PASSIVE`` (the machine is shared: see bench/README.md). Stage times come from the
``progress`` callback (the time of each stage's last report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Passive OpenMP waiting on the shared machine (bench/README.md): set before anything loads torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
STAGE_ORDER = ("bits/dim", "samples", "classification", "t-SNE", "transfer", "curve")


def pin(cores: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


# --- the measured child ---------------------------------------------------------------------------------------
def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    pin(spec["cores"])
    sys.path.insert(0, spec["code"])
    import numpy as np
    import torch

    torch.set_num_threads(spec["cores"])
    import flowmodels.evaluation as evaluation
    from flowmodels import build_model
    from flowmodels.data import ImageSet

    config = dict(spec["config"])
    model = build_model(config.pop("variant"), tuple(config.pop("image_shape")), config.pop("num_classes"), **config)
    model.load_state_dict(torch.load(spec["state"]))
    model.eval()
    data = torch.load(spec["data"])
    column = model.pixel_column
    test = ImageSet(data[f"test_{column}"], data["test_labels"], "bench/test", tuple(data["class_names"]))
    train = ImageSet(data[f"train_{column}"], data["train_labels"], "bench/train", tuple(data["class_names"]))

    captured = {}
    if hasattr(evaluation, "classify"):  # "before" returns no predictions: record them from its classify()
        original = evaluation.classify

        def recording(*args, **kwargs):
            out = original(*args, **kwargs)
            captured.setdefault("predicted", out[0])
            return out

        evaluation.classify = recording
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        marks[stage] = time.perf_counter() - started

    import inspect

    accepted = inspect.signature(evaluation.evaluate).parameters
    kwargs = {k: v for k, v in evaluate_settings(spec["overrides"]).items() if k in accepted}
    report = evaluation.evaluate(model, test, reference_set=train, progress=progress, **kwargs)
    total = time.perf_counter() - started
    predicted = getattr(report, "predicted", None)
    if predicted is None:
        predicted = captured.get("predicted")
    stages, previous = {}, 0.0
    for stage, end in sorted(marks.items(), key=lambda kv: kv[1]):
        stages[stage] = end - previous
        previous = end
    result = {
        "total_s": total,
        "stages_s": stages,
        "metrics": report.metrics,
        "predicted": None if predicted is None else np.asarray(predicted).tolist(),
        "figures": sorted(report.figures),
        "kwargs": kwargs,
    }
    Path(spec["out"]).write_text(json.dumps(result))


# --- --gains: each change on its own ----------------------------------------------------------------------------
def _median_rates(fns: dict, n_images: int, repeats: int) -> dict[str, float]:
    """Images per second of each function, interleaved ``repeats`` times (machine noise hits all alike)."""
    import statistics

    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: n_images / statistics.median(v) for k, v in times.items()}


def gains(args) -> None:
    """What each change gives, measured in this process on faces (``--gain-images`` test faces, and
    ``--reference-images`` (default 3000) training faces for the transfer's class means)."""
    import torch

    from flowmodels import build_model
    from flowmodels.data import ImageSet

    pin(args.cores)
    torch.set_num_threads(args.cores)
    print("command: python " + " ".join(sys.argv))
    print(f"{args.cores} cores, torch {torch.__version__}, load average {load_average()}")
    args.test_images, args.reference_images = args.gain_images, args.reference_images or 3000
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        data, described = load_faces(args, Path(tmp))
        print(f"data: {described}")
        for variant in args.variant:
            config, state = build_state(variant, data, Path(tmp))
            config = dict(config)
            shape, classes = tuple(config.pop("image_shape")), config.pop("num_classes")
            model = build_model(config.pop("variant"), shape, classes, **config)
            model.load_state_dict(torch.load(state))
            model.eval()
            column = model.pixel_column
            test = ImageSet(data[f"test_{column}"], data["test_labels"], "test", None)
            train = ImageSet(data[f"train_{column}"], data["train_labels"], "train", None)
            print(f"\n{variant}: images/s (median of {args.repeats} interleaved repeats), load {load_average()}")
            _variant_gains(model, test, train, args)


def _variant_gains(model, images, reference, args) -> None:
    import numpy as np
    import torch

    from flowmodels.classifier import bayes_log_posterior
    from flowmodels.evaluation import flat_latents, reference_latent_means
    from flowmodels.scoring import classify_and_encode, density_scores, inference_convolutions, noisy_batches
    from scoring.embedding import tsne_embedding

    n = len(images)

    def direct(fn):
        def run():
            with inference_convolutions(model):
                fn()

        return run

    def show(title: str, rates: dict[str, float]) -> None:
        print(f"  {title}:")
        base = next(iter(rates.values()))
        for name, rate in rates.items():
            print(f"    {name:44s} {rate:7.2f} images/s  ({rate / base:.2f}x)")

    def old_classify():
        for b in range(0, n, 128):
            with torch.inference_mode():
                bayes_log_posterior(model, images.images[b : b + 128])

    def new_classify():
        classify_and_encode(model, images, 128)

    candidates = {
        "7 passes of 128 (HEAD)": old_classify,
        "one call of 18 images x 7 labels": new_classify,
        "7 passes of 128, direct conv": direct(old_classify),
        "one call of 18 x 7, direct conv": direct(new_classify),
    }
    show("Bayes classification (every image under all 7 labels)", _median_rates(candidates, n, args.repeats))

    def old_bits():
        with torch.inference_mode():
            for _, x, y, u in noisy_batches(images, 128, 0, "cpu", True):
                model.bits_per_dim(x, y, noise=u, convention="standard")
                model.bits_per_dim(x, y, noise=u, convention="bplf")
                model.bits_per_dim(x, None, noise=u, convention="standard")

    candidates = {
        "standard, bplf, marginal calls (HEAD)": old_bits,
        "density_scores (one 7-label pass)": lambda: density_scores(model, images, 128),
        "density_scores, direct conv": direct(lambda: density_scores(model, images, 128)),
    }
    show("bits/dim, both conventions and the label marginal", _median_rates(candidates, n, args.repeats))

    sample = reference.subset(torch.arange(min(1000, len(reference))))
    latents = {}

    def encode():
        latents["z"] = flat_latents(model, sample.images, sample.labels, 128)

    candidates = {"encode (HEAD)": encode, "encode, direct conv": direct(encode)}
    show(f"one encoding pass ({len(sample)} faces)", _median_rates(candidates, len(sample), 1))

    print(f"  t-SNE (PCA to 50 dims, Barnes-Hut) of these latents, load {load_average()}:")
    for points in (1000, 500):
        t = time.perf_counter()
        tsne_embedding(latents["z"][:points], 0)
        print(f"    {points:5d} points: {time.perf_counter() - t:6.1f} s")

    with inference_convolutions(model):
        full = reference_latent_means(model, reference, 7, None, 0, 128)
        print(f"  transfer directions z_avg[c] - z_avg[other] from k faces a class vs from all {len(reference)}:")
        for per_class in (100, 300):
            capped = reference_latent_means(model, reference, 7, per_class, 0, 128)
            cosines = []
            for c in range(7):
                a = torch.cat([d.flatten() for d in full.direction(c)])
                b = torch.cat([d.flatten() for d in capped.direction(c)])
                cosines.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
            print(f"    k = {per_class}: cosine per class {np.round(cosines, 3).tolist()}")


# --- the parent -----------------------------------------------------------------------------------------------
def load_faces(args, folder: Path) -> tuple[dict, str]:
    """Test and training images (both pixel columns) with labels: the shard set's own test and train splits
    (``--own-splits``: what ``emoflow run`` evaluates on), else a fixed-seed draw of ``--test-images`` train-split
    faces as the test set and the rest (or ``--reference-images`` of them) as the training set."""
    import numpy as np
    import torch

    from pipelines.labels import EMOTIONS

    g = torch.Generator().manual_seed(0)
    if args.synthetic:
        n = args.test_images + (args.reference_images or 22659)
        pixels = torch.randint(0, 256, (n, 1, 48, 48), dtype=torch.uint8, generator=g)
        labels = torch.multinomial(torch.tensor([4.0, 0.5, 4.1, 7.2, 4.8, 3.2, 5.0]), n, True, generator=g)
        splits = {"train": ({"pixels": pixels, "pixels_svd": pixels}, labels)}
        source = f"synthetic uint8 noise, {n} images"
    else:
        from flowmodels.data import load_shard_split

        shards = Path(args.shards) if args.shards else prepare_sources(args, folder)
        splits = {}
        for name in ("train", "test") if args.own_splits else ("train",):
            columns = {column: load_shard_split(shards, name, column) for column in ("pixels", "pixels_svd")}
            splits[name] = ({c: s.images for c, s in columns.items()}, columns["pixels"].labels)
        source = f"{shards}"
    if args.own_splits:
        (test_columns, test_labels), (train_columns, train_labels) = splits["test"], splits["train"]
        how = "its test and train splits"
    else:
        columns, labels = splits["train"]
        order = torch.randperm(len(labels), generator=g)
        test, rest = order[: args.test_images].sort().values, order[args.test_images :]
        train = (rest[: args.reference_images] if args.reference_images else rest).sort().values
        test_columns, train_columns = (
            {c: p[test] for c, p in columns.items()},
            {c: p[train] for c, p in columns.items()},
        )
        test_labels, train_labels = labels[test], labels[train]
        how = f"a fixed-seed draw from its train split ({len(labels)} faces)"
    data = {"class_names": list(EMOTIONS), "test_labels": test_labels, "train_labels": train_labels}
    for column in ("pixels", "pixels_svd"):
        data[f"test_{column}"], data[f"train_{column}"] = test_columns[column].clone(), train_columns[column].clone()
    counts = np.bincount(test_labels.numpy(), minlength=7).tolist()
    return data, (
        f"{source}, {how}: {len(test_labels)} test faces (per class {counts}), {len(train_labels)} training faces"
    )


def prepare_sources(args, folder: Path) -> Path:
    """Shards of ``--sources`` (JAFFE, CK+48 and the FER2013 train zip, linked from ``--datasets``)."""
    from pipelines.params import load_params
    from pipelines.prepare import prepare

    datasets, raw = Path(args.datasets), folder / "raw"
    raw.mkdir(parents=True)
    links = {"jaffe": ("jaffe", datasets / "jaffe"), "ckplus": ("ckplus", datasets / "ckplus48")}
    links["fer2013"] = ("fer2013/fer2013-train.zip", datasets / "fer2013" / "fer2013-train.zip")
    for source in args.sources:
        target, origin = links[source]
        (raw / target).parent.mkdir(parents=True, exist_ok=True)
        (raw / target).symlink_to(origin)
    data = load_params().data.replace(raw_root=str(raw), sources=tuple(args.sources))
    print(f"preparing shards of {', '.join(args.sources)} ...", flush=True)
    return prepare(data, folder / "home").path


def build_state(variant: str, data: dict, folder: Path) -> tuple[dict, Path]:
    import torch

    from flowmodels import build_model
    from pipelines.params import load_params

    hparams = load_params().model.hparams.model_dump()
    torch.manual_seed(0)
    model = build_model(variant, (1, 48, 48), 7, **hparams)
    column = model.pixel_column
    model.initialize(data[f"train_{column}"][:256], data["train_labels"][:256])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    path = folder / f"{variant}.pt"
    torch.save(model.state_dict(), path)
    return model.config, path


def run_worker(code: str, config: dict, state: Path, data_path: Path, args, folder: Path) -> dict:
    out = folder / f"result_{time.monotonic_ns()}.json"
    spec = {
        "code": code,
        "config": config,
        "state": str(state),
        "data": str(data_path),
        "cores": args.cores,
        "overrides": {"tsne_points": args.tsne_points, "transfer_reference_per_class": args.transfer_per_class},
        "out": str(out),
    }
    spec_path = folder / f"spec_{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": code}
    subprocess.run([sys.executable, __file__, "--worker", str(spec_path)], check=True, env=env, cwd=code)
    return json.loads(out.read_text())


def evaluate_settings(overrides: dict) -> dict:
    """``evaluate``'s settings from the params.yaml of the code that runs (so "before" runs with HEAD's
    defaults), with the command line's overrides."""
    from pipelines.params import load_params

    e = load_params().evaluate
    settings = {
        "temperatures": list(e.temperatures),
        "samples_per_class": e.samples_per_class,
        "seed": e.seed,
        "batch_size": e.batch_size,
        "tsne_points": e.tsne_points,
        "transfer_reference_per_class": getattr(e, "transfer_reference_per_class", None),
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def compare(before: dict, after: dict) -> list[str]:
    lines = []
    for key in ("test_bpd", "test_bpd_bplf", "test_bpd_marginal", "accuracy", "balanced_accuracy"):
        if key in before["metrics"] or key in after["metrics"]:
            a, b = before["metrics"].get(key), after["metrics"].get(key)
            rel = abs(a - b) / abs(a) if a and b is not None else float("nan")
            lines.append(f"  {key:18s} before {a:.6f}  after {b:.6f}  relative difference {rel:.1e}")
    if before["predicted"] is not None and after["predicted"] is not None:
        differ = sum(x != y for x, y in zip(before["predicted"], after["predicted"]))
        lines.append(f"  predictions: {differ} of {len(after['predicted'])} differ")
    return lines


def table(variant: str, before: dict | None, after: dict) -> None:
    print(f"\n{variant}: seconds per stage")
    print("| stage | before (HEAD) | after | speedup |\n|---|---:|---:|---:|")
    for stage in STAGE_ORDER:
        if stage not in after["stages_s"]:
            continue
        a = after["stages_s"][stage]
        if before is None:
            print(f"| {stage} | | {a:.1f} | |")
            continue
        b = before["stages_s"].get(stage, float("nan"))
        print(f"| {stage} | {b:.1f} | {a:.1f} | {b / max(a, 1e-9):.1f}x |")
    if before is None:
        print(f"| **total** | | **{after['total_s']:.1f}** | |")
    else:
        b, a = before["total_s"], after["total_s"]
        print(f"| **total** | **{b:.1f}** | **{a:.1f}** | **{b / a:.2f}x** |")
        print("numbers:")
        print("\n".join(compare(before, after)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", default=["bplf_3x3_svd", "glow"])
    p.add_argument("--shards", help="a shard-set version folder (default: FER2013's train zip, prepared)")
    p.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    p.add_argument("--synthetic", action="store_true", help="uint8 noise instead of faces")
    p.add_argument("--sources", nargs="+", default=["fer2013"], choices=("jaffe", "ckplus", "fer2013"))
    p.add_argument("--own-splits", action="store_true", help="the shard set's test and train splits as they are")
    p.add_argument("--test-images", type=int, default=3700)
    p.add_argument("--reference-images", type=int, default=None, help="training images (default: all the rest)")
    p.add_argument("--tsne-points", type=int, default=None, help="default: params evaluate.tsne_points")
    p.add_argument("--transfer-per-class", type=int, default=None, help="default: params (0: every image)")
    p.add_argument("--head", default="/tmp/eval_head", help="a worktree of git HEAD: the 'before' code")
    p.add_argument("--only", choices=("before", "after"), help="run one side only")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--gains", action="store_true", help="time each change on its own, in this process")
    p.add_argument("--gain-images", type=int, default=252, help="images per --gains measurement")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per --gains measurement")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, str(PROJECT_ROOT))
    if args.gains:
        gains(args)
        return
    if args.only != "after" and not (Path(args.head) / "flowmodels" / "evaluation.py").exists():
        sys.exit(f"no 'before' code at {args.head}: git worktree add --detach {args.head} HEAD")
    import torch

    print("command: python " + " ".join(sys.argv))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, pinned to {args.cores}")
    print(f"torch {torch.__version__}; load average at start {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        folder = Path(tmp)
        data, described = load_faces(args, folder)
        data_path = folder / "faces.pt"
        torch.save(data, data_path)
        print(f"data: {described}")
        for variant in args.variant:
            config, state = build_state(variant, data, folder)
            print(
                f"\nmodel: {variant}, conditional (7 classes), {json.dumps({k: config[k] for k in ('levels', 'steps', 'hidden')})}"
            )
            before = None
            if args.only != "after":
                print(f"before (HEAD at {args.head}) ... load {load_average()}", flush=True)
                before = run_worker(args.head, config, state, data_path, args, folder)
                print(f"  {before['total_s']:.1f} s with {before['kwargs']}", flush=True)
            if args.only == "before":
                print(json.dumps(before["stages_s"], indent=1))
                continue
            print(f"after (this checkout) ... load {load_average()}", flush=True)
            after = run_worker(str(PROJECT_ROOT), config, state, data_path, args, folder)
            print(f"  {after['total_s']:.1f} s with {after['kwargs']}; load average now {load_average()}", flush=True)
            table(variant, before, after)


if __name__ == "__main__":
    main()
