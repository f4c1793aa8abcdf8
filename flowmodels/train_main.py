"""The pure-PyTorch training entry point, one process or many (``torchrun``)::

    python -m flowmodels.train_main --shards DIR --variant bplf_3x3_svd --checkpoint-dir ckpt \\
        --config params_train.json --hparams '{"levels": 3, "steps": 8, "hidden": 128}' --out result.json

    torchrun --nproc_per_node=4 -m flowmodels.train_main ...same arguments...

Data: ``--shards`` (a shard-set folder, or a shards root with a ``current`` file) or ``--mnist`` (the folder of
the idx files; MNIST has no validation split, so "val" is the last ``--mnist-val`` training images and
"train" the rest, as the run functions do; the ``_svd`` variants get SVD-truncated digits, ``--params``'s
data.svd). ``--params``: the settings file (default the project's params.yaml); ``--config``: overrides of its
``train:`` section as a JSON file or inline JSON; ``--hparams``: overrides of its ``model.hparams``. The model's initial weights are drawn
from the config's seed (``build_seeded_model``), so a rerun with the same arguments trains the same model.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group is initialised here:
gloo on the CPU, nccl on CUDA. ``batch_size`` stays the *global* batch; each rank takes its slice of every
batch (``flowmodels.training``). Rank 0 writes the checkpoints and ``--out``; with ``--state-dir`` every rank
writes ``rank-<r>.json`` (sha256 of its final weights) and ``rank-<r>.pt`` (its final state dict), which is how
the tests check that the ranks end identical.

Exit status: 0 done, 3 training diverged (the message says what to try), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from flowmodels.data import MNIST_VAL_IMAGES, ImageSet, load_mnist_partition, load_shard_split
from flowmodels.training import build_seeded_model, train
from pipelines.params import Params, ParamsError, TrainParams, load_params
from training.checkpoints import state_digest
from training.devices import distributed_context
from training.loop import TrainingDiverged


def _json_arg(text: str | None) -> dict:
    """Inline JSON, or the path of a JSON file."""
    if not text:
        return {}
    stripped = text.strip()
    if stripped.startswith("{"):
        value = json.loads(stripped)
    else:
        value = json.loads(Path(text).read_text())
    if not isinstance(value, dict):
        raise SystemExit(f"expected a JSON object, got {type(value).__name__}: {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flowmodels.train_main", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="shard-set folder (or shards root with a 'current' file)")
    src.add_argument("--mnist", help="folder with MNIST's idx files")
    p.add_argument(
        "--variant", required=True, help="glow, glow_svd, bplf_3x3, bplf_3x3_1x1, bplf_3x3_svd, bplf_3x3_1x1_svd"
    )
    p.add_argument("--split-train", default="train")
    p.add_argument("--split-val", default="val", help="validation split, or 'none'")
    p.add_argument("--sources", default=None, help="comma-separated shard sources (default: all)")
    p.add_argument("--column", default=None, help="pixels | pixels_svd (default: the variant's)")
    p.add_argument("--mnist-val", type=int, default=MNIST_VAL_IMAGES, help="MNIST: last N training images = 'val'")
    p.add_argument("--pad-to", type=int, default=32, help="MNIST: zero-pad 28x28 to this size (default 32)")
    p.add_argument(
        "--unconditional", action="store_true", help="train an unconditional flow (default: emotion-/digit-conditional)"
    )
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--params", default=None, help="settings file (default: the project's params.yaml)")
    p.add_argument("--config", default=None, help="overrides of params' train: section, as JSON (file or inline)")
    p.add_argument("--hparams", default=None, help="overrides of params' model.hparams, as JSON (file or inline)")
    p.add_argument("--out", default=None, help="result JSON (rank 0)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt (it is overwritten)")
    p.add_argument("--progress", action="store_true", help="tqdm progress bar on stderr")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation images")
    p.add_argument("--state-dir", default=None, help="every rank writes rank-<r>.json / rank-<r>.pt here")
    return p.parse_args(argv)


def load_data(args, params: Params) -> tuple[ImageSet, ImageSet | None, str]:
    """(train set, val set or None, the pixel column used)."""
    from flowmodels.variants import pixel_column

    column = args.column or pixel_column(args.variant)
    val_split = None if args.split_val.lower() in ("none", "") else args.split_val
    if args.shards:
        sources = args.sources.split(",") if args.sources else None
        train_set = load_shard_split(args.shards, args.split_train, column=column, sources=sources)
        val_set = load_shard_split(args.shards, val_split, column=column, sources=sources) if val_split else None
    else:

        def mnist(split: str) -> ImageSet:
            try:
                return load_mnist_partition(
                    args.mnist, split, pad_to=args.pad_to, column=column, val_images=args.mnist_val, svd=params.data.svd
                )
            except ValueError as exc:
                raise SystemExit(str(exc)) from exc

        train_set = mnist(args.split_train)
        val_set = mnist(val_split) if val_split else None
    if args.limit_train:
        train_set = train_set.subset(slice(0, args.limit_train), f"{train_set.name}[:{args.limit_train}]")
    if val_set is not None and args.limit_val:
        val_set = val_set.subset(slice(0, args.limit_val), f"{val_set.name}[:{args.limit_val}]")
    return train_set, val_set, column


def init_distributed(config: TrainParams) -> tuple[int, int]:
    """Join the torchrun process group when WORLD_SIZE > 1: nccl on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or torch.distributed.is_initialized():
        return distributed_context()
    use_cuda = torch.cuda.is_available() and config.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return distributed_context()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        config = TrainParams.model_validate({**params.train.model_dump(), **_json_arg(args.config)})
        hparams = params.model.hparams.replace(**_json_arg(args.hparams)).model_dump()
    except (ParamsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, world = init_distributed(config)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
    )
    try:
        train_set, val_set, column = load_data(args, params)
        num_classes = None if args.unconditional else train_set.num_classes
        model = build_seeded_model(config.seed, args.variant, train_set.image_shape, num_classes, **hparams)
        try:
            result = train(
                model,
                train_set,
                val_set,
                config,
                Path(args.checkpoint_dir),
                progress_bar=args.progress,
                resume=not args.no_resume,
            )
        except TrainingDiverged as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
        digest = state_digest(model)
        if args.state_dir:
            state_dir = Path(args.state_dir)
            state_dir.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, state_dir / f"rank-{rank}.pt")
            (state_dir / f"rank-{rank}.json").write_text(
                json.dumps({"rank": rank, "world_size": world, "steps": result.steps, "sha256": digest}) + "\n"
            )
        if rank == 0 and args.out:
            out = {
                **result.as_dict(),
                "model_config": model.config,
                "train_config": config.model_dump(),
                "train_set": train_set.name,
                "train_images": len(train_set),
                "val_set": None if val_set is None else val_set.name,
                "pixel_column": column,
                "state_sha256": digest,
            }
            path = Path(args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(out, indent=2) + "\n")
            os.replace(tmp, path)
        if rank == 0:
            val = f", val {result.val['val_bpd']:.4f}" if result.val.get("val_bpd") is not None else ""
            bpd = f"{result.final['bpd']:.4f}" if result.final.get("bpd") is not None else "-"
            print(
                f"{args.variant}: {result.steps} steps ({result.stopped_by}) on {world} process(es), "
                f"train bits/dim {bpd}{val}, {result.images_per_s:.1f} images/s, checkpoint {result.checkpoint}",
                file=sys.stderr,
            )
        return 0
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
