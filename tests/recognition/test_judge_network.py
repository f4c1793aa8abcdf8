"""EmotionJudge: shapes at 48x48 and 64x64, features, config round trip, seeded construction, input scaling, and
the shortcut's "every other pixel, then 1x1" equal to a strided 1x1 convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recognition.network import EmotionJudge, build_judge

WIDTHS = (8, 16, 32, 64)


@pytest.mark.parametrize("side, pooled", [(48, 3), (64, 4)])
def test_logits_features_and_stage_sizes(ck_faces, side, pooled):
    judge = build_judge((1, side, side), 7, WIDTHS, 0.2, seed=0).eval()
    faces = ck_faces.images[:5]
    x = F.interpolate(faces.float(), size=(side, side), mode="bilinear").round().to(torch.uint8)
    sizes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape))) for stage in judge.stages]
    logits = judge(x)
    for h in hooks:
        h.remove()
    assert logits.shape == (5, 7) and torch.isfinite(logits).all()
    assert [s[1:] for s in sizes] == [(w, side // 2 ** (k + 1), side // 2 ** (k + 1)) for k, w in enumerate(WIDTHS)]
    assert sizes[-1][-1] == pooled
    features = judge.features(x)
    assert judge.feature_dim == WIDTHS[-1] and features.shape == (5, WIDTHS[-1])
    # the head reads exactly the features (dropout is the identity in eval mode)
    torch.testing.assert_close(judge.head(features), logits, rtol=0, atol=0)


def test_uint8_and_unit_float_inputs_agree(ck_faces):
    judge = build_judge((1, 48, 48), 7, WIDTHS, 0.2, seed=0).eval()
    x = ck_faces.images[:4]
    torch.testing.assert_close(judge(x), judge(x.float() / 255.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected images"):
        judge(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_config_rebuilds_the_architecture_and_seed_fixes_the_weights(ck_faces):
    judge = build_judge((1, 48, 48), 7, WIDTHS, 0.3, seed=5)
    again = build_judge(**judge.config, seed=5)
    other = build_judge(**judge.config, seed=6)
    assert judge.config == {"image_shape": [1, 48, 48], "num_classes": 7, "widths": list(WIDTHS), "dropout": 0.3}
    assert isinstance(again, EmotionJudge) and again.config == judge.config
    sa, sb, sc = judge.state_dict(), again.state_dict(), other.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    rng = torch.get_rng_state()
    build_judge(**judge.config, seed=7)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is left as it was
    plain = build_judge(**judge.config)
    plain.load_state_dict(judge.state_dict())
    x = ck_faces.images[:3]
    torch.testing.assert_close(plain.eval()(x), judge.eval()(x), rtol=0, atol=0)


def test_too_small_an_image_is_refused():
    with pytest.raises(ValueError, match="too small"):
        build_judge((1, 8, 8), 7, WIDTHS, 0.0)


def test_shortcut_equals_a_strided_pointwise_convolution():
    torch.manual_seed(0)
    judge = build_judge((1, 48, 48), 7, WIDTHS, 0.0, seed=1).eval()
    stage = judge.stages[1]
    conv, bn = stage.shortcut
    for side in (24, 7):  # an even and an odd side (the strided convolution's output is ceil(side / 2))
        x = torch.randn(2, WIDTHS[0], side, side).contiguous(memory_format=torch.channels_last)
        expected = bn(F.conv2d(x.contiguous(), conv.weight.contiguous(), stride=2))
        torch.testing.assert_close(stage.shortcut(x[:, :, ::2, ::2]), expected, rtol=1e-5, atol=1e-6)
