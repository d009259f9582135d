"""Tests for wfvae_jax.losses against independent NumPy versions of the reference's formulas.

Reference: PKU-YuanGroup/WF-VAE @ d858bee, causalvideovae/model/losses/perceptual_loss.py,
discriminator.py, utils/distrib_utils.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wfvae_jax.losses import (
    GeneratorOutputs,
    LossConfig,
    NLayerDiscriminator3D,
    adaptive_weight,
    adopt_weight,
    discriminator_loss,
    generator_adversarial_loss,
    generator_loss,
    generator_loss_and_grads,
    hinge_d_loss,
    is_discriminator_step,
    kl_loss,
    reconstruction_loss,
    vanilla_d_loss,
    wavelet_loss,
)

RNG = np.random.default_rng(1234)


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _toy_lpips_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.mean((np.tanh(a) - np.tanh(b)) ** 2, axis=(1, 2, 3))


def _toy_lpips(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(jnp.tanh(a) - jnp.tanh(b)), axis=(1, 2, 3))


# ---------------------------------------------------------------- reconstruction / NLL


def _reference_nll_np(x, y, pw, loss_type, logvar):
    """perceptual_loss.py l.129-144, literally: NCHW frames, broadcast (N,1,1,1) LPIPS."""
    b, t, h, w, c = x.shape
    xf = x.reshape(b * t, h, w, c).transpose(0, 3, 1, 2).astype(np.float64)
    yf = y.reshape(b * t, h, w, c).transpose(0, 3, 1, 2).astype(np.float64)
    rec = np.abs(xf - yf) if loss_type == "l1" else (xf - yf) ** 2
    if pw > 0:
        p = _toy_lpips_np(x.reshape(b * t, h, w, c), y.reshape(b * t, h, w, c))
        rec = rec + pw * p[:, None, None, None]
    nll = rec / np.exp(logvar) + logvar
    return np.sum(nll) / nll.shape[0]


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
@pytest.mark.parametrize("logvar", [0.0, 0.3])
@pytest.mark.parametrize("pw", [0.0, 1.0, 0.5])
def test_reconstruction_matches_reference_reduction(loss_type, logvar, pw):
    x, y = _rand(2, 3, 8, 6, 3), _rand(2, 3, 8, 6, 3)
    got = reconstruction_loss(
        jnp.asarray(x),
        jnp.asarray(y),
        perceptual_weight=pw,
        lpips_fn=_toy_lpips,
        loss_type=loss_type,
        logvar=logvar,
    )
    want = _reference_nll_np(x, y, pw, loss_type, logvar)
    np.testing.assert_allclose(float(got), want, rtol=2e-6)


def test_reconstruction_is_chw_times_mean_l1_plus_lpips():
    x, y = _rand(2, 5, 4, 4, 3), _rand(2, 5, 4, 4, 3)
    got = reconstruction_loss(jnp.asarray(x), jnp.asarray(y), lpips_fn=_toy_lpips)
    frames = _toy_lpips_np(x.reshape(10, 4, 4, 3), y.reshape(10, 4, 4, 3))
    want = 4 * 4 * 3 * (np.mean(np.abs(x - y)) + np.mean(frames))
    np.testing.assert_allclose(float(got), want, rtol=2e-6)


def test_zero_perceptual_weight_skips_lpips():
    def boom(a, b):
        raise AssertionError("lpips_fn must not be called when perceptual_weight == 0")

    x, y = _rand(1, 2, 4, 4, 3), _rand(1, 2, 4, 4, 3)
    got = reconstruction_loss(jnp.asarray(x), jnp.asarray(y), perceptual_weight=0.0, lpips_fn=boom)
    np.testing.assert_allclose(float(got), np.sum(np.abs(x - y)) / 2, rtol=2e-6)


def test_reconstruction_errors():
    x = jnp.zeros((1, 2, 4, 4, 3))
    with pytest.raises(ValueError, match="lpips_fn"):
        reconstruction_loss(x, x)
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(x, x[:, :1], perceptual_weight=0.0)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        reconstruction_loss(x, x, lpips_fn=lambda a, b: jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match="loss_type"):
        reconstruction_loss(x, x, perceptual_weight=0.0, loss_type="huber")


# ---------------------------------------------------------------- KL and WL


def test_kl_equals_gaussian_closed_form():
    mean, logvar = _rand(3, 2, 4, 4, 5), _rand(3, 2, 4, 4, 5, scale=2.0)
    sigma = np.exp(0.5 * logvar.astype(np.float64))
    # KL(N(mu, sigma^2) || N(0, 1)) = -log(sigma) + (sigma^2 + mu^2) / 2 - 1/2, per element.
    per_elem = -np.log(sigma) + (sigma**2 + mean.astype(np.float64) ** 2) / 2 - 0.5
    want = per_elem.reshape(3, -1).sum(axis=1).mean()
    got = kl_loss(jnp.asarray(mean), jnp.asarray(logvar))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_kl_clamps_logvar_like_reference():
    mean = np.zeros((2, 3), np.float32)
    logvar = np.array([[40.0, -50.0, 0.0], [20.0, -30.0, 1.0]], np.float32)
    clamped = np.clip(logvar, -30, 20).astype(np.float64)
    want = (0.5 * (np.exp(clamped) - 1 - clamped)).sum() / 2
    np.testing.assert_allclose(float(kl_loss(jnp.asarray(mean), jnp.asarray(logvar))), want, 1e-6)
    with pytest.raises(ValueError):
        kl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_wavelet_loss_is_sum_abs_over_batch():
    e1, d1 = _rand(2, 3, 8, 8, 24), _rand(2, 3, 8, 8, 24)
    e2, d2 = _rand(2, 2, 4, 4, 24), _rand(2, 2, 4, 4, 24)
    want = np.abs(e1 - d1).sum() / 2 + np.abs(e2 - d2).sum() / 2
    got = wavelet_loss(*map(jnp.asarray, (e1, d1, e2, d2)))
    np.testing.assert_allclose(float(got), want, rtol=2e-6)
    with pytest.raises(ValueError):
        wavelet_loss(jnp.asarray(e1), jnp.asarray(d1[:, :2]), jnp.asarray(e2), jnp.asarray(d2))


# ---------------------------------------------------------------- GAN losses and schedule


def test_hinge_and_vanilla_on_hand_made_logits():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1.
    np.testing.assert_allclose(float(hinge_d_loss(real, fake)), 0.5 * (2.5 / 3 + 1.0), rtol=1e-6)
    np.testing.assert_allclose(float(hinge_d_loss(real + 10, fake - 10)), 0.0, atol=0)
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    want = 0.5 * (softplus(-np.asarray(real)).mean() + softplus(np.asarray(fake)).mean())
    np.testing.assert_allclose(float(vanilla_d_loss(real, fake)), want, rtol=1e-6)
    np.testing.assert_allclose(float(generator_adversarial_loss(fake)), 1.0 / 3.0, rtol=1e-6)


def test_adopt_weight_before_and_after_start():
    assert float(adopt_weight(0.7, 4, threshold=5)) == 0.0
    assert float(adopt_weight(0.7, 5, threshold=5)) == pytest.approx(0.7)
    assert float(adopt_weight(0.7, 3, threshold=5, value=0.25)) == 0.25
    jitted = jax.jit(lambda s: adopt_weight(2.0, s, threshold=10))
    assert [float(jitted(s)) for s in (0, 9, 10, 11)] == [0.0, 0.0, 2.0, 2.0]


def test_step_alternation():
    got = [bool(is_discriminator_step(s, 3)) for s in range(8)]
    assert got == [False, False, False, True, False, True, False, True]


def test_discriminator_loss_schedule_and_value():
    cfg = LossConfig(disc_start=4)
    real, fake = jnp.array([0.2, 1.5]), jnp.array([-0.5, 0.3])
    loss, logs = discriminator_loss(real, fake, global_step=3, config=cfg)
    assert float(loss) == 0.0
    loss, logs = discriminator_loss(real, fake, global_step=4, config=cfg)
    np.testing.assert_allclose(float(loss), 0.5 * (0.4 + 0.9), rtol=1e-6)
    np.testing.assert_allclose(float(logs["logits_fake"]), -0.1, rtol=1e-6)
    # The discriminator gets gradient through its logits on the fakes too.
    g_fake = jax.grad(lambda f: discriminator_loss(real, f, global_step=4, config=cfg)[0])(fake)
    np.testing.assert_allclose(np.asarray(g_fake), [0.25, 0.25])


# ---------------------------------------------------------------- adaptive weight


def test_adaptive_weight_ratio_clamp_and_no_gradient():
    a, b = _rand(3, 3, 4, 5), _rand(3, 3, 4, 5, scale=3.0)
    want = np.linalg.norm(a) / (np.linalg.norm(b) + 1e-6) * 0.5
    got = adaptive_weight(jnp.asarray(a), jnp.asarray(b), disc_weight=0.5)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # Zero adversarial gradient: ratio = |a| / 1e-6 is clamped to max_weight before disc_weight.
    clamped = adaptive_weight(jnp.asarray(a), jnp.zeros_like(b), disc_weight=0.5, max_weight=1e4)
    assert float(clamped) == pytest.approx(0.5e4)
    assert float(adaptive_weight(jnp.zeros_like(a), jnp.asarray(b))) == 0.0
    grad = jax.grad(lambda u: adaptive_weight(u, jnp.asarray(b)))(jnp.asarray(a))
    assert not np.any(np.asarray(grad))


B, T, H, W, C, L, HID = 2, 3, 4, 4, 3, 4, 8


def _toy_setup():
    params = {
        "encoder": {"w": jnp.asarray(_rand(H * W * C, 2 * L, scale=0.2))},
        "decoder": {
            "mid": jnp.asarray(_rand(L, HID, scale=0.5)),
            "conv_out": {"kernel": jnp.asarray(_rand(HID, H * W * C, scale=0.3))},
        },
    }
    x = jnp.asarray(np.tanh(_rand(B, T, H, W, C)))
    noise = jnp.asarray(_rand(B * T, L))
    disc_vec = jnp.asarray(_rand(C))

    def forward(p):
        moments = x.reshape(B * T, -1) @ p["encoder"]["w"]
        mean, logvar = moments[:, :L], moments[:, L:]
        z = mean + jnp.exp(0.5 * logvar) * noise
        h = jnp.tanh(z @ p["decoder"]["mid"])
        y = (h @ p["decoder"]["conv_out"]["kernel"]).reshape(B, T, H, W, C)
        taps = (x[..., :2], 0.5 * y[..., :2], x[:, :, ::2, ::2], y[:, :, ::2, ::2])
        return GeneratorOutputs(y, mean.reshape(B, T, L), logvar.reshape(B, T, L), taps)

    def discriminate(y):
        logits = jnp.einsum("bthwc,c->bthw", jnp.tanh(y), disc_vec)
        return logits, jnp.sum(y)

    return params, x, forward, discriminate


@pytest.mark.parametrize("step", [0, 7])
def test_generator_grads_match_direct_jax_grad(step):
    params, x, forward, discriminate = _toy_setup()
    cfg = LossConfig(disc_start=5, disc_weight=0.5)
    total, logs, grads, disc_aux, _ = jax.jit(
        lambda p: generator_loss_and_grads(
            forward, p, discriminate, x, global_step=step, config=cfg, lpips_fn=_toy_lpips
        )
    )(params)

    def kernel(tree):
        return np.asarray(tree["decoder"]["conv_out"]["kernel"], np.float64)

    def nll_of(p):
        return reconstruction_loss(x, forward(p).reconstruction, lpips_fn=_toy_lpips)

    def g_of(p):
        return -jnp.mean(discriminate(forward(p).reconstruction)[0])

    g_nll, g_adv = kernel(jax.grad(nll_of)(params)), kernel(jax.grad(g_of)(params))
    ratio = np.linalg.norm(g_nll) / (np.linalg.norm(g_adv) + 1e-6)
    want_dw = 0.5 * ratio if step >= 5 else 0.0
    np.testing.assert_allclose(float(logs["d_weight"]), want_dw, rtol=1e-4)
    assert 0.0 < ratio < 1e6  # the toy case must not sit on the clamp

    def total_of(p):
        out = forward(p)
        logits = discriminate(out.reconstruction)[0]
        loss, _ = generator_loss(
            x, out, logits, d_weight=want_dw, global_step=step, config=cfg, lpips_fn=_toy_lpips
        )
        return loss

    want_total, want_grads = jax.value_and_grad(total_of)(params)
    np.testing.assert_allclose(float(total), float(want_total), rtol=1e-5)
    for got_leaf, want_leaf in zip(
        jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(got_leaf), np.asarray(want_leaf), rtol=2e-4, atol=1e-6
        )
    np.testing.assert_allclose(
        float(disc_aux), float(jnp.sum(forward(params).reconstruction)), 1e-5
    )

    out = forward(params)
    terms = {
        "nll_loss": float(nll_of(params)),
        "kl_loss": float(kl_loss(out.mean, out.logvar)),
        "wl_loss": float(wavelet_loss(*out.taps)),
        "g_loss": float(g_of(params)) if step >= 5 else 0.0,
        "disc_factor": 1.0 if step >= 5 else 0.0,
    }
    for name, value in terms.items():
        np.testing.assert_allclose(float(logs[name]), value, rtol=1e-5, err_msg=name)
    want = (
        terms["nll_loss"]
        + 1e-6 * terms["kl_loss"]
        + want_dw * terms["disc_factor"] * terms["g_loss"]
        + 0.1 * terms["wl_loss"]
    )
    np.testing.assert_allclose(float(total), want, rtol=1e-5)


def test_generator_before_start_ignores_discriminator():
    params, x, forward, discriminate = _toy_setup()
    cfg = LossConfig(disc_start=100)
    _, logs, grads, _, _ = generator_loss_and_grads(
        forward, params, discriminate, x, global_step=3, config=cfg, lpips_fn=_toy_lpips
    )

    def no_adv(p):
        out = forward(p)
        return (
            reconstruction_loss(x, out.reconstruction, lpips_fn=_toy_lpips)
            + 1e-6 * kl_loss(out.mean, out.logvar)
            + 0.1 * wavelet_loss(*out.taps)
        )

    want = jax.grad(no_adv)(params)
    for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(
            np.asarray(got_leaf), np.asarray(want_leaf), rtol=2e-4, atol=1e-6
        )
    assert float(logs["g_loss"]) == 0.0 and float(logs["d_weight"]) == 0.0


def test_loss_config_validation():
    with pytest.raises(ValueError):
        LossConfig(disc_loss="wgan")
    with pytest.raises(ValueError):
        LossConfig(loss_type="l3")
    with pytest.raises(ValueError):
        LossConfig(kl_weight=-1.0)


# ---------------------------------------------------------------- discriminator


def _out_len(n: int, stride: int) -> int:
    return (n + 2 - 3) // stride + 1


def _expected_shape(b, t, h, w, n_layers):
    t, h, w = _out_len(t, 2), _out_len(h, 2), _out_len(w, 2)
    for n in range(1, n_layers):
        t, h, w = _out_len(t, 2 if n == 1 else 1), _out_len(h, 2), _out_len(w, 2)
    return (b, t, h, w, 1)


@pytest.mark.parametrize("n_layers", [3, 4])
def test_discriminator_output_shape(n_layers):
    disc = NLayerDiscriminator3D(ndf=8, n_layers=n_layers)
    x = jax.ShapeDtypeStruct((2, 9, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda v: disc.init(jax.random.key(0), v, train=False), x)
    y = jax.eval_shape(lambda v, inp: disc.apply(v, inp, train=False), variables, x)
    assert y.shape == _expected_shape(2, 9, 32, 32, n_layers)
    assert y.shape == ((2, 3, 4, 4, 1) if n_layers == 3 else (2, 3, 2, 2, 1))


def test_discriminator_reference_channels_and_init():
    disc = NLayerDiscriminator3D()  # ndf=64, n_layers=4 as LPIPSWithDiscriminator3D builds it
    x = jnp.zeros((1, 5, 16, 16, 3))
    params = jax.jit(lambda k: disc.init(k, x, train=False))(jax.random.key(3))["params"]
    want_out = [64, 128, 256, 512, 512, 1]
    assert [params[f"conv_{i}"]["kernel"].shape[-1] for i in range(6)] == want_out
    assert all(params[f"conv_{i}"]["kernel"].shape[:3] == (3, 3, 3) for i in range(6))
    assert set(params["conv_0"]) == {"kernel", "bias"} and set(params["conv_5"]) == {
        "kernel",
        "bias",
    }
    assert all("bias" not in params[f"conv_{i}"] for i in range(1, 5))
    kernel = np.asarray(params["conv_3"]["kernel"])
    assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.02, rel=0.01)
    scales = np.concatenate([np.asarray(params[f"norm_{i}"]["scale"]) for i in range(1, 5)])
    assert scales.mean() == pytest.approx(1.0, abs=3e-3) and scales.std() == pytest.approx(
        0.02, rel=0.1
    )
    assert not any(np.any(np.asarray(params[f"norm_{i}"]["bias"])) for i in range(1, 5))
    bound = 1 / np.sqrt(3 * 27)  # PyTorch default bias init of the first conv (fan_in = 3*27)
    bias = np.asarray(params["conv_0"]["bias"])
    assert np.all(np.abs(bias) <= bound) and bias.std() > bound / 4


def _np_conv3d(x, kernel, bias, strides):
    """Cross-correlation, padding 1 on T/H/W, channels-last, like torch Conv3d(padding=1)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    out_shape = [(x.shape[i + 1] - 1) // strides[i] + 1 for i in range(3)]
    out = np.zeros((x.shape[0], *out_shape, kernel.shape[-1]))
    for dt in range(3):
        for dh in range(3):
            for dw in range(3):
                patch = xp[
                    :,
                    dt : dt + strides[0] * (out_shape[0] - 1) + 1 : strides[0],
                    dh : dh + strides[1] * (out_shape[1] - 1) + 1 : strides[1],
                    dw : dw + strides[2] * (out_shape[2] - 1) + 1 : strides[2],
                ]
                out += patch @ kernel[dt, dh, dw]
    return out + (0.0 if bias is None else bias)


def _np_discriminator(x, params, stats, n_layers, train):
    def leaky(v):
        return np.where(v >= 0, v, 0.2 * v)

    def norm(v, i):
        if train:
            mu, var = v.mean(axis=(0, 1, 2, 3)), v.var(axis=(0, 1, 2, 3))
        else:
            mu, var = stats[f"norm_{i}"]["mean"], stats[f"norm_{i}"]["var"]
        p = params[f"norm_{i}"]
        return (v - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = leaky(_np_conv3d(x, p["conv_0"]["kernel"], p["conv_0"]["bias"], (2, 2, 2)))
    for n in range(1, n_layers + 1):
        strides = (2 if n == 1 else 1, 2, 2) if n < n_layers else (1, 1, 1)
        h = leaky(norm(_np_conv3d(h, p[f"conv_{n}"]["kernel"], None, strides), n))
    last = p[f"conv_{n_layers + 1}"]
    return _np_conv3d(h, last["kernel"], last["bias"], (1, 1, 1))


@pytest.mark.parametrize("train", [False, True])
def test_discriminator_matches_numpy_forward(train):
    n_layers = 3
    disc = NLayerDiscriminator3D(ndf=4, n_layers=n_layers, dropout=0.0)
    x = _rand(2, 5, 16, 16, 3)
    variables = disc.init(jax.random.key(1), jnp.asarray(x), train=False)
    # Non-trivial running statistics so eval mode is actually exercised.
    stats = jax.tree.map(
        lambda a: jnp.asarray(np.abs(_rand(*a.shape)) + 0.5), variables["batch_stats"]
    )
    variables = {"params": variables["params"], "batch_stats": stats}
    got, _ = disc.apply(variables, jnp.asarray(x), train=train, mutable=["batch_stats"])
    stats_np = jax.tree.map(np.asarray, stats)
    want = _np_discriminator(x.astype(np.float64), variables["params"], stats_np, n_layers, train)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_batchnorm_stats_update_only_in_train_mode():
    disc = NLayerDiscriminator3D(ndf=4, n_layers=3)
    x = jnp.asarray(_rand(2, 5, 16, 16, 3))
    variables = disc.init(jax.random.key(0), x, train=False)
    before = variables["batch_stats"]

    _, eval_state = disc.apply(variables, x, train=False, mutable=["batch_stats"])
    for a, b in zip(
        jax.tree.leaves(before), jax.tree.leaves(eval_state["batch_stats"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    _, state = disc.apply(
        variables,
        x,
        train=True,
        rngs={"dropout": jax.random.key(5)},
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: mdl.name == "conv_1",
    )
    bn_in = np.asarray(state["intermediates"]["conv_1"]["__call__"][0], np.float64)
    new = state["batch_stats"]["norm_1"]
    # PyTorch momentum 0.1 == Flax decay 0.9; initial running mean 0, var 1.
    np.testing.assert_allclose(
        np.asarray(new["mean"]), 0.1 * bn_in.mean(axis=(0, 1, 2, 3)), 1e-4, 1e-6
    )
    np.testing.assert_allclose(
        np.asarray(new["var"]), 0.9 + 0.1 * bn_in.var(axis=(0, 1, 2, 3)), 1e-4, 1e-6
    )
    for name in ("norm_2", "norm_3"):
        assert not np.allclose(np.asarray(state["batch_stats"][name]["mean"]), 0.0)


def test_discriminator_dropout_is_train_only():
    disc = NLayerDiscriminator3D(ndf=4, n_layers=3)
    x = jnp.asarray(_rand(1, 5, 16, 16, 3))
    variables = disc.init(jax.random.key(0), x, train=False)

    @jax.jit
    def apply(key):
        return disc.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    def run(key):
        return np.asarray(apply(key)[0])

    assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))
    np.testing.assert_array_equal(run(jax.random.key(1)), run(jax.random.key(1)))
    with pytest.raises(ValueError):
        disc.apply(variables, x[0], train=False)
