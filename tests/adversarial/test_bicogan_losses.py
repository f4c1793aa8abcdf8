"""BiCoGAN's objective against its formulas on hand-made logits, and the EFL weight's schedule."""

from __future__ import annotations

import math

import pytest
import torch

from adversarial.bicogan import (
    EflSchedule,
    bicogan_value,
    discriminator_loss,
    efl_weight,
    extrinsic_factor_loss,
    generator_encoder_loss,
)

REAL = [2.0, -1.0, 0.5]  # D's logits on (x, E(x)) tuples
FAKE = [0.5, -3.0, 1.5]  # ... on (G(z~), z~) tuples


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


@pytest.mark.parametrize(
    ("epoch", "alpha", "rho", "phi"),
    [(0, 1.0, 0.25, 10.0), (1, 1.0, 0.25, 10.0), (2.5, 0.5, 0.4, 10.0), (7, 1.0, 0.25, 10.0), (0.3, 2.0, 1.0, 5.0)],
)
def test_efl_weight_follows_the_formula(epoch, alpha, rho, phi):
    expected = min(alpha * math.exp(rho * epoch), phi)
    assert efl_weight(epoch, alpha, rho, phi) == pytest.approx(expected, rel=1e-12)
    assert EflSchedule(alpha, rho, phi)(epoch) == efl_weight(epoch, alpha, rho, phi)


def test_efl_weight_starts_at_alpha_and_stops_at_the_cap():
    assert efl_weight(0, 1.0, 0.25, 10.0) == 1.0
    assert efl_weight(1, 1.0, 0.25, 10.0) == pytest.approx(math.e**0.25)
    cap_epoch = math.log(10.0) / 0.25  # 9.21 epochs
    assert efl_weight(cap_epoch - 0.01, 1.0, 0.25, 10.0) < 10.0
    assert efl_weight(cap_epoch + 0.01, 1.0, 0.25, 10.0) == 10.0
    assert efl_weight(1e6, 1.0, 0.25, 10.0) == 10.0  # no overflow far past the cap
    assert efl_weight(50, 3.0, 0.0, 10.0) == 3.0  # rho 0: a constant weight
    assert efl_weight(4, 0.0, 0.25, 10.0) == 0.0  # alpha 0: no EFL
    weights = [efl_weight(t, 0.5, 0.3, 4.0) for t in range(20)]
    assert weights == sorted(weights) and weights[-1] == 4.0
    with pytest.raises(ValueError):
        efl_weight(1, -1.0, 0.25, 10.0)


def test_discriminator_loss_is_minus_the_log_likelihood_of_telling_real_from_generated():
    expected = -mean(math.log(sigmoid(r)) for r in REAL) - mean(math.log(1 - sigmoid(f)) for f in FAKE)
    assert float(discriminator_loss(torch.tensor(REAL), torch.tensor(FAKE))) == pytest.approx(expected, rel=1e-6)


def test_generator_encoder_loss_in_both_forms():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    minimax = mean(math.log(sigmoid(r)) for r in REAL) + mean(math.log(1 - sigmoid(f)) for f in FAKE)
    swapped = -mean(math.log(1 - sigmoid(r)) for r in REAL) - mean(math.log(sigmoid(f)) for f in FAKE)
    assert float(generator_encoder_loss(real, fake, "minimax")) == pytest.approx(minimax, rel=1e-6)
    assert float(generator_encoder_loss(real, fake, "minimax")) == pytest.approx(-float(discriminator_loss(real, fake)))
    assert float(generator_encoder_loss(real, fake, "non_saturating")) == pytest.approx(swapped, rel=1e-6)
    with pytest.raises(ValueError, match="form"):
        generator_encoder_loss(real, fake, "wasserstein")


def test_the_non_saturating_form_keeps_its_gradient_where_d_wins():
    """With D sure that a generated tuple is fake (logit -10), minimax's gradient for G vanishes; the swapped form's
    does not: why it is the default."""
    grads = {}
    for form in ("minimax", "non_saturating"):
        fake = torch.tensor([-10.0], requires_grad=True)
        generator_encoder_loss(torch.tensor([0.0]), fake, form).backward()
        grads[form] = float(fake.grad)
    assert abs(grads["minimax"]) == pytest.approx(sigmoid(-10.0), rel=1e-5)
    assert abs(grads["non_saturating"]) == pytest.approx(1 - sigmoid(-10.0), rel=1e-5)
    assert grads["minimax"] < 0 and grads["non_saturating"] < 0  # both: raising D's logit on the fake lowers G's loss


def test_extrinsic_factor_loss_is_the_cross_entropy_of_the_encoded_label():
    logits = [[2.0, 0.0, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]]
    labels = [0, 1, 2]
    expected = mean(-(row[k] - math.log(sum(math.exp(v) for v in row))) for row, k in zip(logits, labels, strict=True))
    assert float(extrinsic_factor_loss(torch.tensor(logits), torch.tensor(labels))) == pytest.approx(expected, rel=1e-6)


def test_the_value_of_the_objective():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    logits, labels = torch.tensor([[3.0, -1.0], [0.0, 2.0]]), torch.tensor([0, 0])
    efl = mean(-(row[0] - math.log(sum(math.exp(v) for v in row))) for row in ([3.0, -1.0], [0.0, 2.0]))
    expected = mean(math.log(sigmoid(r)) for r in REAL) + 2.5 * efl + mean(math.log(1 - sigmoid(f)) for f in FAKE)
    assert float(bicogan_value(real, fake, logits, labels, 2.5)) == pytest.approx(expected, rel=1e-6)


def test_extreme_logits_stay_finite():
    big = torch.tensor([1000.0, -1000.0])
    for value in (
        discriminator_loss(big, big),
        generator_encoder_loss(big, big, "minimax"),
        generator_encoder_loss(big, big, "non_saturating"),
        extrinsic_factor_loss(torch.tensor([[1000.0, -1000.0]]), torch.tensor([1])),
    ):
        assert math.isfinite(float(value))
    assert float(discriminator_loss(torch.tensor([1000.0]), torch.tensor([-1000.0]))) == 0.0
    assert float(discriminator_loss(torch.tensor([-1000.0]), torch.tensor([0.0]))) == pytest.approx(1000 + math.log(2))
