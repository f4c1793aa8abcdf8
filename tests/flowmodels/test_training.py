"""The training loop on real images (CK+48 crops, 16x16) with a tiny flow: exact resume, refusal of another
run's checkpoint, warm-up, budgets, checkpoint cadence, the NaN/inf guard."""

from __future__ import annotations

import math

import pytest
import torch
from training_data import ckplus_set, interleaved_split, one_thread  # noqa: F401 (autouse fixture)

from flowmodels import build_model
from flowmodels.data import ImageSet
from flowmodels.layers.actnorm import ActNorm
from flowmodels.training import build_seeded_model, model_from_checkpoint, train
from pipelines.labels import EMOTION_INDEX
from pipelines.params import TrainParams, load_params
from training import TrainingDiverged, load_checkpoint
from training.schedule import warmup_lr
from training.seeds import batch_indices

TINY = {"levels": 2, "steps": 2, "hidden": 16}
SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def ck(datasets_dir):
    return interleaved_split(ckplus_set(datasets_dir, 16))


def tiny(seed=0, conditional=True, variant="glow"):
    return build_seeded_model(seed, variant, SHAPE, 7 if conditional else None, **TINY)


def config(**changes):
    base = dict(batch_size=32, max_steps=8, warmup_steps=4, checkpoint_every=0, log_every=2, init_batch=64, lr=2e-3)
    return TrainParams(**{**base, **changes})


class Interrupted(Exception):
    pass


def weights_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0 for k in sa)


def test_resume_after_interruption_equals_an_uninterrupted_run(ck, tmp_path):
    train_set, val_set = ck
    # 24 steps of 32 cross an epoch boundary (741 // 32 = 23 steps per epoch); log every 3 and checkpoint every 8
    # so the checkpoint falls inside a log window; validate every 6.
    cfg = config(max_steps=24, checkpoint_every=8, log_every=3, val_every=6)

    straight = tiny()
    full = train(straight, train_set, val_set, cfg, tmp_path / "straight")

    def interrupt(event):
        if event["event"] == "log" and event["step"] >= 21:  # after the checkpoint at 16, before the end
            raise Interrupted

    with pytest.raises(Interrupted):
        train(tiny(), train_set, val_set, cfg, tmp_path / "interrupted", on_progress=interrupt)
    assert load_checkpoint(tmp_path / "interrupted" / "last.pt")["step"] == 16

    resumed_model = tiny(seed=123)  # other initial weights: everything must come from the checkpoint
    resumed = train(resumed_model, train_set, val_set, cfg, tmp_path / "interrupted")

    assert resumed.resumed_from_step == 16 and resumed.initialization == "checkpoint"
    assert resumed.steps == full.steps == 24 and resumed.stopped_by == "max_steps"
    assert weights_diff(straight, resumed_model) <= 1e-5
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == list(range(3, 25, 3))
    for a, b in zip(full.history, resumed.history):
        assert a["bpd"] == pytest.approx(b["bpd"], abs=1e-5) and a["lr"] == b["lr"]
    assert [v["step"] for v in resumed.val_history] == [v["step"] for v in full.val_history] == [6, 12, 18, 24]
    for a, b in zip(full.val_history, resumed.val_history):
        assert a["val_bpd"] == pytest.approx(b["val_bpd"], abs=1e-5)
    assert resumed.val["val_bpd"] == pytest.approx(full.val["val_bpd"], abs=1e-5)
    # a finished run asked again: nothing to do, same answer
    again = train(tiny(seed=7), train_set, val_set, cfg, tmp_path / "interrupted")
    assert again.steps == 24 and again.resumed_from_step == 24 and again.history == resumed.history


def test_resume_refuses_a_checkpoint_of_another_run(ck, tmp_path):
    train_set, val_set = ck
    cfg = config(max_steps=2, log_every=1)
    train(tiny(), train_set, None, cfg, tmp_path)
    with pytest.raises(ValueError, match=r"different run.*train\.lr"):
        train(tiny(), train_set, None, config(max_steps=3, log_every=1, lr=1e-4), tmp_path)
    with pytest.raises(ValueError, match=r"different run.*data\.train\."):
        train(tiny(), train_set.subset(slice(0, 400), "other"), None, cfg, tmp_path)
    with pytest.raises(ValueError, match=r"different run.*model\.hidden"):
        other = build_seeded_model(0, "glow", SHAPE, 7, levels=2, steps=2, hidden=8)
        train(other, train_set, None, cfg, tmp_path)
    # budgets may change: more steps continue the same run
    more = train(tiny(), train_set, None, config(max_steps=4, log_every=1), tmp_path)
    assert more.resumed_from_step == 2 and more.steps == 4
    # resume=False starts over
    fresh = train(tiny(), train_set, None, config(max_steps=3, log_every=1, lr=1e-4), tmp_path, resume=False)
    assert fresh.resumed_from_step is None and fresh.steps == 3


def test_warmup_is_linear_then_constant(ck, tmp_path):
    assert [warmup_lr(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(0, 0.1, 0) == 0.1
    train_set, _ = ck
    result = train(tiny(), train_set, None, config(max_steps=6, warmup_steps=4, log_every=1, lr=1e-3), tmp_path)
    assert [h["lr"] for h in result.history] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    state = load_checkpoint(tmp_path / "last.pt")["trainer"]
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert state["scheduler"] == {"kind": "linear_warmup_constant", "lr": 1e-3, "warmup_steps": 4, "step": 5}


def test_budget_by_steps_epochs_and_seconds(ck, tmp_path):
    train_set, _ = ck
    small = train_set.subset(slice(0, 100), "ck100")  # 3 steps of 32 per epoch
    by_steps = train(tiny(), small, None, config(max_steps=5, max_epochs=10), tmp_path / "steps")
    assert (by_steps.steps, by_steps.stopped_by) == (5, "max_steps")
    by_epochs = train(tiny(), small, None, config(max_steps=100, max_epochs=2), tmp_path / "epochs")
    assert (by_epochs.steps, by_epochs.stopped_by, by_epochs.epochs) == (6, "max_epochs", 2.0)
    by_time = train(tiny(), small, None, config(max_steps=None, max_seconds=0.5), tmp_path / "seconds")
    assert by_time.stopped_by == "max_seconds" and by_time.steps >= 1
    assert 0.5 <= by_time.seconds < 30
    assert by_time.history[-1]["step"] == by_time.steps  # the last step is always logged
    with pytest.raises(ValueError, match="at least one budget"):
        config(max_steps=None)


def test_checkpoint_cadence_and_contents(ck, tmp_path):
    train_set, val_set = ck
    result = train(tiny(), train_set, val_set, config(max_steps=7, checkpoint_every=3), tmp_path / "all")
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == ["last.pt", "step-0000003.pt", "step-0000006.pt", "step-0000007.pt"]
    for name, step in [("step-0000003.pt", 3), ("step-0000006.pt", 6), ("step-0000007.pt", 7), ("last.pt", 7)]:
        state = load_checkpoint(tmp_path / "all" / name)  # torch.load(weights_only=True)
        assert state["step"] == step and state["loop_config"]["checkpoint_every"] == 3
        assert [h["step"] for h in state["loop"]["history"]] == {3: [2], 6: [2, 4, 6], 7: [2, 4, 6, 7]}[step]
    assert result.checkpoint == str(tmp_path / "all" / "last.pt")

    # the restored model: actnorm flags travel, the numbers are those of the trained model
    restored = model_from_checkpoint(result.checkpoint)
    flags = [bool(m.initialized) for m in restored.modules() if isinstance(m, ActNorm)]
    assert flags and all(flags)
    noise = torch.rand((16, *SHAPE), generator=torch.Generator().manual_seed(0))
    x, y = val_set.images[:16], val_set.labels[:16]
    trained = build_seeded_model(0, "glow", SHAPE, 7, **TINY)
    trained.load_state_dict(load_checkpoint(result.checkpoint)["trainer"]["model"])
    with torch.no_grad():
        assert torch.equal(restored.bits_per_dim(x, y, noise=noise), trained.bits_per_dim(x, y, noise=noise))

    train(tiny(), train_set, None, config(max_steps=7, checkpoint_every=2, keep_checkpoints=2), tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["last.pt", "step-0000006.pt", "step-0000007.pt"]


def test_an_occasional_non_finite_step_is_skipped_and_counted(ck, tmp_path):
    """A class whose prior log-std is -1e30 (a collapsed class) makes the loss +inf exactly when a batch holds an
    image of that class. With one such image in the set, the steps whose batch holds it are bad, the others
    train normally (the one-hot label gives that weight column a zero gradient, so the poison stays)."""
    train_set, _ = ck
    fear = EMOTION_INDEX["fear"]
    keep = torch.nonzero(train_set.labels != fear).flatten()[:199]
    one_fear = torch.nonzero(train_set.labels == fear).flatten()[:1]
    index = torch.cat([keep, one_fear])
    data = train_set.subset(index, "ck-one-fear")
    position = len(data) - 1  # the fear image
    cfg = config(max_steps=18, max_bad_steps=3, log_every=3)  # 6 steps per epoch: 3 epochs
    expected = [s + 1 for s in range(18) if position in batch_indices(cfg.seed, s, len(data), cfg.batch_size)]
    assert 1 <= len(expected) <= 3

    model = tiny()
    top = model.flow.top_prior
    channels = top.shape[0]
    with torch.no_grad():
        top.label_shift.linear.weight[channels:, fear] = -1e30  # log-std of class fear: exp(-2 log_sd) = inf
    events = []
    result = train(model, data, None, cfg, tmp_path, on_progress=events.append)

    assert result.skipped_steps == len(expected) and result.skipped_at == expected
    assert [e["step"] for e in events if e["event"] == "skipped"] == expected
    assert result.steps == 18
    assert all(h["bpd"] is None or math.isfinite(h["bpd"]) for h in result.history)
    assert result.final["bpd"] is not None and math.isfinite(result.final["bpd"])
    poisoned = model.flow.top_prior.label_shift.linear.weight[channels:, fear]
    others = [p for n, p in model.named_parameters() if n != "flow.top_prior.label_shift.linear.weight"]
    assert torch.all(poisoned == -1e30)  # never updated: skipped steps do not touch the weights
    assert all(torch.isfinite(p).all() for p in others)
    assert load_checkpoint(tmp_path / "last.pt")["loop"]["skipped_steps"] == len(expected)


def test_a_persistently_non_finite_model_stops_with_advice(ck, tmp_path):
    train_set, _ = ck
    model = tiny()
    with torch.no_grad():
        model.flow.top_prior.params.fill_(float("nan"))  # every log-density NaN
    events = []
    with pytest.raises(TrainingDiverged) as info:
        train(model, train_set, None, config(max_steps=50, max_bad_steps=4), tmp_path, on_progress=events.append)
    message = str(info.value)
    assert "4 consecutive steps" in message and "step 4" in message
    for advice in ("lower learning rate", "longer warm-up", "additive coupling"):
        assert advice in message
    assert [e["step"] for e in events if e["event"] == "skipped"] == [1, 2, 3, 4]


def test_bf16_autocast_trains(ck, tmp_path):
    train_set, _ = ck
    result = train(tiny(variant="bplf_3x3"), train_set, None, config(max_steps=3, bf16=True, log_every=1), tmp_path)
    assert result.steps == 3 and result.skipped_steps == 0 and math.isfinite(result.final["bpd"])


def test_inputs_are_checked(ck, tmp_path):
    train_set, _ = ck
    unlabelled = ImageSet(train_set.images, None, "nolabels", None)
    with pytest.raises(ValueError, match="needs labels"):
        train(tiny(), unlabelled, None, config(), tmp_path)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(tiny(), train_set.subset(slice(0, 10)), None, config(), tmp_path)
    with pytest.raises(ValueError, match="expects images"):
        train(build_model("glow", (1, 32, 32), 7, **TINY), train_set, None, config(), tmp_path)
    # an unconditional model trains on unlabelled images
    assert train(tiny(conditional=False), unlabelled, None, config(max_steps=2), tmp_path / "u").steps == 2


def test_config_from_params_yaml_and_mappings():
    cfg = load_params().train
    assert cfg.optimizer in ("adam", "adamax", "adamw") and cfg.batch_size >= 1
    assert TrainParams.model_validate({"lr": "1e-3", "max_steps": None, "max_epochs": 3}).lr == 1e-3
    with pytest.raises(ValueError, match=r"learning_rate\s+Extra inputs are not permitted"):
        TrainParams.model_validate({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="optimizer"):
        TrainParams.model_validate({"optimizer": "sgd"})
    with pytest.raises(ValueError, match="bf16"):
        TrainParams.model_validate({"bf16": "yes"})
