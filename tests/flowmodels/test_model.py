"""Whole-model numerics: invertibility of every variant, total log-determinant against brute force,
sampling, conditioning, checkpoints and the config that rebuilds a model."""

import pytest
import torch
from flow_numerics import brute_force_logdet, perturb_parameters

from flowmodels import VARIANTS, build_model, pixel_column
from flowmodels.distributions import gaussian_log_prob

TINY = dict(levels=2, steps=2, hidden=16)


def _images(n=4, size=16, seed=0):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _trained_looking(variant, num_classes=None, seed=0, size=16, **hp):
    """A tiny model with actnorm initialised and all parameters perturbed off their (near-identity) init."""
    torch.manual_seed(seed)
    model = build_model(variant, (1, size, size), num_classes, **{**TINY, **hp})
    x = _images(8, size, seed)
    y = torch.arange(8) % num_classes if num_classes else None
    model.initialize(x, y)
    perturb_parameters(model, scale=0.05, seed=seed)
    return model


@pytest.mark.parametrize("num_classes", [None, 7])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_decode_encode_round_trip(variant, num_classes):
    model = _trained_looking(variant, num_classes)
    x = torch.rand(5, 1, 16, 16) - 0.5
    y = torch.tensor([0, 3, 6, 1, 2]) if num_classes else None
    latents = model.encode(x, y)
    assert [tuple(z.shape[1:]) for z in latents] == model.flow.latent_shapes
    assert sum(z[0].numel() for z in latents) == 16 * 16  # a bijection: dimensions are preserved
    x_back = model.decode(latents, y)
    assert x_back.dtype == torch.float32
    assert (x_back - x).abs().max() < 1e-4
    # and it is not the identity: the latents differ from a reshuffle of x
    assert not torch.allclose(
        torch.cat([z.flatten(1) for z in latents], 1).sort(1).values, x.flatten(1).sort(1).values, atol=1e-3
    )


@pytest.mark.parametrize("variant,num_classes", [("glow", None), ("bplf_3x3", 3), ("bplf_3x3_1x1", None)])
def test_total_logdet_and_density_against_brute_force(variant, num_classes):
    torch.manual_seed(0)
    model = build_model(variant, (1, 8, 8), num_classes, levels=2, steps=2, hidden=8, coupling_parts=2).double()
    y = torch.tensor([1, 2]) if num_classes else None
    model.initialize(_images(4, 8), None if y is None else torch.tensor([0, 1, 2, 0]))
    perturb_parameters(model, scale=0.1)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) - 0.5
    cond = model.condition(y, 2)
    latents, log_p_splits, logdet = model.flow.transform(x, cond)

    def flat_latents(v, i):
        zs, _, _ = model.flow.transform(v, None if cond is None else cond[i : i + 1])
        return torch.cat([z.flatten(1) for z in zs], 1), None

    brute = torch.stack([brute_force_logdet(lambda v, i=i: flat_latents(v, i), x[i : i + 1])[0] for i in range(2)])
    assert torch.allclose(logdet, brute, atol=1e-6)

    # log p(x) = log p(z_L) + sum of split log-densities + log|det|, each prior a Gaussian
    top_mean, top_log_sd = model.flow.top_prior.mean_log_sd(2, cond)
    expected = gaussian_log_prob(latents[-1], top_mean, top_log_sd) + log_p_splits + brute
    assert torch.allclose(model.log_prob(x, y), expected, atol=1e-6)


def test_bplf_with_more_parts_inverts():
    model = _trained_looking("bplf_3x3", None, coupling_parts=3)
    x = torch.rand(2, 1, 16, 16) - 0.5
    assert (model.decode(model.encode(x)) - x).abs().max() < 1e-4
    with pytest.raises(ValueError):
        build_model("bplf_3x3", (1, 16, 16), **{**TINY, "coupling_parts": 5})  # 4 channels at level 1


def test_a_different_label_gives_a_different_sample():
    model = _trained_looking("bplf_3x3", num_classes=7)
    torch.manual_seed(0)
    anger = model.sample(3, y=0, temperature=0.7)
    torch.manual_seed(0)
    fear = model.sample(3, y=2, temperature=0.7)
    torch.manual_seed(0)
    anger_again = model.sample(3, y=torch.tensor([0, 0, 0]), temperature=0.7)
    assert anger.shape == (3, 1, 16, 16)
    assert torch.equal(anger, anger_again)
    assert (anger - fear).abs().mean() > 1e-3


def test_temperature_zero_gives_the_prior_mode():
    model = _trained_looking("glow")
    a, b = model.sample(2, temperature=0.0), model.sample(2, temperature=0.0)
    assert torch.equal(a, b) and torch.allclose(a[0], a[1])
    assert model.sample(2, temperature=1.0).std() > 0


def test_labels_are_checked():
    uncond, cond = _trained_looking("glow"), _trained_looking("glow", 7)
    x = _images(2)
    with pytest.raises(ValueError):
        uncond.bits_per_dim(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cond.bits_per_dim(x, torch.tensor([0, 7]))
    with pytest.raises(ValueError):
        cond.encode(x)


def test_conditional_model_without_label_gives_the_marginal():
    model = _trained_looking("glow", num_classes=3)
    x = torch.rand(4, 1, 16, 16) - 0.5
    per_class = torch.stack([model.log_prob(x, torch.full((4,), c)) for c in range(3)], 1)
    assert torch.allclose(model.log_prob(x), torch.logsumexp(per_class, 1) - torch.log(torch.tensor(3.0)), atol=1e-4)


def test_checkpoint_restores_identical_bits_per_dim_without_reinitialising(tmp_path):
    model = _trained_looking("bplf_3x3", num_classes=7, seed=3)
    x = _images(4, seed=9)
    y = torch.tensor([0, 1, 5, 6])
    noise = torch.rand(x.shape)
    expected = model.bits_per_dim(x, y, noise=noise)
    torch.save(model.state_dict(), tmp_path / "model.pt")

    state = torch.load(tmp_path / "model.pt", weights_only=True)
    fresh = build_model(**model.config)
    fresh.load_state_dict(state)
    # a different first batch: a flag that did not travel would re-initialise actnorm from it
    assert torch.equal(
        fresh.bits_per_dim(_images(4, seed=1) // 2, y, noise=noise).isfinite(), torch.ones(4, dtype=torch.bool)
    )
    assert torch.equal(fresh.bits_per_dim(x, y, noise=noise), expected)
    assert fresh.pixel_column == model.pixel_column and fresh.config == model.config


def test_variants_differ_in_the_right_places():
    assert pixel_column("glow") == "pixels" and pixel_column("bplf_3x3_1x1_svd") == "pixels_svd"
    plain, svd = build_model("glow", (1, 16, 16), **TINY), build_model("glow_svd", (1, 16, 16), **TINY)
    assert (plain.pixel_column, svd.pixel_column) == ("pixels", "pixels_svd")
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in svd.state_dict().items()}
    b33 = build_model("bplf_3x3", (1, 16, 16), **TINY)
    b31 = build_model("bplf_3x3_1x1", (1, 16, 16), **TINY)
    mid = [m.conv_mid.kernel_size for m in b33.modules() if hasattr(m, "conv_mid")]
    assert set(mid) == {(3, 3)}
    assert {m.conv_mid.kernel_size for m in b31.modules() if hasattr(m, "conv_mid")} == {(1, 1)}


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_model("realnvp", (1, 16, 16))
    with pytest.raises(TypeError):
        build_model("glow", (1, 16, 16), depth=3)
    with pytest.raises(ValueError):
        build_model("glow", (1, 20, 20), levels=3)  # 20 is not a multiple of 8
    with pytest.raises(ValueError):
        build_model("glow", (1, 16, 16), n_bits=6)
    with pytest.raises(ValueError):
        build_model("glow", (1, 16, 16), coupling_parts=3)


def test_float64_and_layout_switch_change_nothing_numerically():
    model = _trained_looking("bplf_3x3", 7)
    x, y = _images(3), torch.tensor([1, 2, 3])
    noise = torch.rand(x.shape)
    a = model.bits_per_dim(x, y, noise=noise)
    for m in model.modules():
        if hasattr(m, "set_channels_last"):
            m.set_channels_last(False)
    assert torch.allclose(model.bits_per_dim(x, y, noise=noise), a, atol=1e-5)
    assert torch.allclose(model.double().bits_per_dim(x, y, noise=noise.double()).float(), a, atol=1e-4)


@pytest.mark.parametrize("variant", ["glow", "bplf_3x3"])
def test_bf16_autocast_keeps_invconv_priors_and_logdets_in_float32(variant):
    """Under bf16 autocast only the conditioners' convolutions run in bf16: every 1x1 convolution output, every
    log-determinant, every prior's parameters and the log-density are float32, and the 1x1 convolutions'
    contribution is exactly the float32 one."""
    from flowmodels.layers.invconv import InvertibleConv1x1
    from flowmodels.layers.split import Split

    model = _trained_looking(variant, 7)
    x = model.dequantize(_images(3), torch.rand(3, 1, 16, 16))
    cond = model.condition(torch.tensor([0, 4, 6]), 3)
    seen: dict[str, list[torch.dtype]] = {"invconv": [], "logdet": [], "prior": []}

    def record_flow(module, inputs, output):
        y, logdet = output
        if isinstance(module, InvertibleConv1x1):
            seen["invconv"].append(y.dtype)
        seen["logdet"].append(logdet.dtype)

    def record_split(module, inputs, output):
        seen["prior"].extend(t.dtype for t in module.mean_log_sd(output[0], inputs[1]))

    hooks = [
        m.register_forward_hook(record_split if isinstance(m, Split) else record_flow)
        for m in model.modules()
        if isinstance(m, Split) or (hasattr(m, "inverse") and m is not model.flow and m is not model)
    ]
    try:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            _, log_p = model.flow(x, cond)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["invconv"] and set(seen["invconv"]) == {torch.float32}
    assert seen["logdet"] and set(seen["logdet"]) == {torch.float32}
    assert seen["prior"] and set(seen["prior"]) == {torch.float32}
    assert log_p.dtype == torch.float32
    with torch.no_grad():
        full = model.flow(x, cond)[1]
    # bf16 conditioners move the density a little, not the precision it is carried in
    assert torch.allclose(log_p.detach(), full, rtol=2e-2)
    invconv = next(m for m in model.modules() if isinstance(m, InvertibleConv1x1))
    h = torch.randn(2, invconv.num_channels, 4, 4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        auto = invconv(h)
    plain = invconv(h)
    assert torch.equal(auto[0], plain[0]) and torch.equal(auto[1], plain[1])


def test_torch_func_jacobian_of_the_flow_matches_autograd():
    """torch.func transforms run through a whole flow (the in-place and Winograd kernels step aside)."""
    torch.manual_seed(0)
    model = build_model("bplf_3x3", (1, 8, 8), None, levels=1, steps=1, hidden=8).double()
    model.initialize(_images(4, 8))
    perturb_parameters(model, scale=0.1)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) - 0.5

    def flat(v):
        return torch.cat([z.flatten(1) for z in model.flow.transform(v)[0]], 1)

    jac = torch.func.jacrev(flat)(x).reshape(64, 64)
    ref = torch.autograd.functional.jacobian(flat, x).reshape(64, 64)
    assert torch.allclose(jac, ref, atol=1e-10)
    per_sample = torch.func.vmap(lambda v: model.log_prob(v[None])[0])(torch.rand(3, 1, 8, 8, dtype=torch.float64))
    assert per_sample.shape == (3,) and torch.isfinite(per_sample).all()
