"""Training parity with the running PyTorch reference: G and D steps from identical weights.

``tests/data/train_parity/vectors.npz`` was written by the reference's own training step
(PKU-YuanGroup/WF-VAE @ d858bee, ``train_ddp.py``'s loop body: ``WFVAEModel``,
``LPIPSWithDiscriminator3D``, ``torch.optim.AdamW`` with lr 1e-5, weight decay 1e-4, EMA 0.999,
CPU float32) through ``tests/data/train_parity/make_vectors.py``: four steps with
``disc_start=1`` (step 0: generator before ``disc_start``; 1: discriminator; 2: generator with
the adaptive adversarial weight; 3: discriminator) from the tiny parity checkpoint and a seeded
``weights_init`` discriminator (``ndf=8``) on two real clips, with the seeded random VGG16 of
``../shared/README.md`` in LPIPS. Both sides use the same posterior noise and dropout masks
(``wfvae_jax.train.step.replay_draws`` on ours).

Tolerances (float32, matmul precision "highest"): loss terms, the adaptive weight and gradient
norms 1e-5 relative; logit means (averages of O(1) logits that nearly cancel) 1e-5 absolute;
parameters and EMA 1e-6 absolute. One exception is principled, not loosened: Adam's first step
moves an element by ``lr * g / (|g| + eps)``, i.e. by a full ``lr`` whatever ``|g|``'s size, so
where the true gradient is zero and float32 leaves only rounding noise (the attention key
biases, whose gradient is exactly zero because softmax ignores a shift of all its logits, and a
few elements with ``|g|`` four orders below their tensor's RMS) the two implementations step
``+-lr`` by the sign of their noise. Such elements (:func:`noise_floor`) may differ by up to
``2 lr``; they must be under 1e-3 of all.

The fast tests check the loss reductions and weights on the reference's own step-0 tensors and
per-frame LPIPS, AdamW and the EMA on a probe, and the replayed draws. The slow tests run our
LPIPS (VGG16) on those tensors, our discriminator and its AdamW step on the reference's step-1
inputs, and ``generator_update``/``discriminator_update`` end to end for the four steps (each
compiles for minutes on a 2-core CPU).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wfvae_jax.io.convert import params_to_torch_state_dict
from wfvae_jax.losses import (
    GeneratorOutputs,
    LossConfig,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from wfvae_jax.losses import discriminator as disc_lib
from wfvae_jax.metrics import lpips
from wfvae_jax.train.state import OptimConfig, TrainState, make_discriminator, make_optimizer
from wfvae_jax.train.step import (
    StepConfig,
    discriminator_update,
    generator_update,
    replay_draws,
)

DATA = pathlib.Path(__file__).parent / "data" / "train_parity" / "vectors.npz"
LOSS_RTOL, LOGIT_ATOL, PARAM_ATOL = 1e-5, 1e-5, 1e-6
NOISE_TENSOR, NOISE_GLOBAL = 1e-4, 1e-6  # see noise_floor
MAX_NOISE_FRACTION = 1e-3
VGG_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_recipe_backbone() -> dict:
    """The seeded random VGG16 of ../shared/README.md (parity/lpips, seed 1), our layout."""
    rng = np.random.default_rng(1)
    state, index, c_in = {}, 0, 3
    for v in VGG_CONVS:
        if v == "M":
            index += 1
            continue
        w = rng.standard_normal((v, c_in, 3, 3)) * np.sqrt(2.0 / (c_in * 9))
        state[f"features.{index}.weight"] = w.astype(np.float32)
        state[f"features.{index}.bias"] = (rng.standard_normal(v) * 0.01).astype(np.float32)
        index, c_in = index + 2, v
    return lpips.lpips_params("vgg", lpips.backbone_from_torchvision("vgg", state))


def channels_last(a: np.ndarray) -> jnp.ndarray:
    """Reference NCTHW -> our NTHWC."""
    return jnp.asarray(np.transpose(a, (0, 2, 3, 4, 1)))


@pytest.fixture(scope="module")
def vectors():
    d = np.load(DATA)
    return d, json.loads(str(d["meta"]))


@pytest.fixture(scope="module")
def lpips_params():
    return vgg16_recipe_backbone()


def step_config(model_config, meta) -> StepConfig:
    return StepConfig(
        model=model_config,
        loss=LossConfig(**meta["loss"], disc_num_layers=meta["disc_num_layers"]),
        optim=OptimConfig(learning_rate=meta["lr"], weight_decay=meta["weight_decay"]),
        disc_ndf=meta["disc_ndf"],
        ema_decay=meta["ema_decay"],
    )


def masks_of(d, step: int) -> list[jnp.ndarray]:
    n = sum(1 for k in d.files if k.startswith(f"s{step}/mask"))
    return [channels_last(d[f"s{step}/mask{i}"]) for i in range(n)]


def disc_init(d, meta) -> tuple:
    sd = {k.split("/", 1)[1]: d[k] for k in d.files if k.startswith("disc_init/")}
    return disc_lib.from_torch_state_dict(sd, meta["disc_num_layers"])


def reference_update(d, meta, step: int, keys: str) -> dict[str, np.ndarray]:
    """The reference's ``after - before`` of step ``step`` per tensor (float64)."""
    q, scale = d[f"s{step}/q"].astype(np.float64), d[f"s{step}/scale"].astype(np.float64)
    out, offset = {}, 0
    for (key, shape), s in zip(meta[keys], scale, strict=True):
        n = int(np.prod(shape))
        out[key] = -meta["lr"] * s * q[offset : offset + n].reshape(shape)
        offset += n
    assert offset == q.size
    return out


def noise_floor(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Elements whose gradient float32 cannot resolve from zero (Adam may step them either way).

    ``|g| <= 1e-4 * RMS(g of its tensor)`` or ``|g| <= 1e-6 * RMS(all gradients)``.
    """
    total = sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values())
    global_rms = np.sqrt(total / sum(g.size for g in grads.values()))
    out = {}
    for k, g in grads.items():
        rms = np.sqrt(np.mean(np.square(g, dtype=np.float64)))
        out[k] = (np.abs(g) <= NOISE_TENSOR * rms) | (np.abs(g) <= NOISE_GLOBAL * global_rms)
    return out


def check_update(got: dict, want: dict, noise: dict, lr: float) -> dict[str, float]:
    """Asserts ``got`` (ours) within PARAM_ATOL of ``want`` (the reference) off the noise floor."""
    worst, worst_noise, n_noise, n_off, n = 0.0, 0.0, 0, 0, 0
    for k, w in want.items():
        err = np.abs(np.asarray(got[k], np.float64) - w)
        worst = max(worst, float(np.max(err[~noise[k]], initial=0.0)))
        worst_noise = max(worst_noise, float(np.max(err[noise[k]], initial=0.0)))
        n_noise, n = n_noise + int(noise[k].sum()), n + err.size
        n_off += int(np.sum(err > PARAM_ATOL))
    assert worst <= PARAM_ATOL, worst
    assert worst_noise <= 2 * lr * (1 + 1e-3), worst_noise
    assert n_noise <= MAX_NOISE_FRACTION * n, (n_noise, n)
    return {
        "worst": worst,
        "worst_on_noise_floor": worst_noise,
        "on_noise_floor": n_noise,
        "over_atol": n_off,
        "elements": n,
    }


def check_terms(ours: dict, ref: dict, names) -> dict[str, float]:
    """Relative error of each named term (absolute for logits); asserts the tolerances."""
    errs = {}
    for name in names:
        o, r = float(ours[name]), float(ref[name])
        if name.startswith("logits"):
            errs[name] = abs(o - r)
            assert errs[name] <= LOGIT_ATOL, (name, o, r)
        else:
            errs[name] = abs(o - r) / abs(r) if r else abs(o)
            assert errs[name] <= LOSS_RTOL, (name, o, r)
    return errs


GEN_TERMS = ("total_loss", "nll_loss", "rec_loss", "kl_loss", "wl_loss", "d_weight", "g_loss")
DISC_TERMS = ("disc_loss", "logits_real", "logits_fake")


def _step0_outputs(d) -> GeneratorOutputs:
    taps = tuple(channels_last(d[f"s0/{k}"]) for k in ("enc_l1", "dec_l1", "enc_l2", "dec_l2"))
    return GeneratorOutputs(
        channels_last(d["s0/recon"]), channels_last(d["s0/mean"]), channels_last(d["s0/logvar"]),
        taps,
    )  # fmt: skip


def test_generator_loss_terms_given_the_reference_lpips(tiny, vectors):
    """The fast variant of the next test: our loss terms from the reference's step-0 tensors and
    its per-frame LPIPS values (no VGG16 to compile); checks every reduction and weight."""
    d, meta = vectors
    log = meta["steps"][0]
    cfg = step_config(tiny[1], meta)
    per_frame = jnp.asarray(log["lpips"], jnp.float32)
    _, logs = jax.jit(
        lambda video, outputs: generator_loss(
            video,
            outputs,
            jnp.asarray(log["logits"]),
            d_weight=0.0,
            global_step=0,
            config=cfg.loss,
            lpips_fn=lambda x, y: per_frame,
        )
    )(channels_last(d["video"]), _step0_outputs(d))
    print(json.dumps(check_terms(logs, log, GEN_TERMS + ("disc_factor",))))


@pytest.mark.slow
def test_generator_loss_terms_on_reference_tensors(tiny, vectors, lpips_params):
    """Our loss functions on the reference's step-0 forward pass give its logged terms."""
    d, meta = vectors
    log = meta["steps"][0]
    cfg = step_config(tiny[1], meta)
    outputs = _step0_outputs(d)
    module = lpips.LPIPS(net="vgg")
    lpips_fn = jax.jit(lambda x, y: module.apply({"params": lpips_params}, x, y))
    video = channels_last(d["video"])
    _, logs = generator_loss(
        video,
        outputs,
        jnp.asarray(log["logits"]),
        d_weight=0.0,
        global_step=0,
        config=cfg.loss,
        lpips_fn=lpips_fn,
    )
    errs = check_terms(logs, log, GEN_TERMS + ("disc_factor",))
    frames = video.shape[0] * video.shape[1]
    got = lpips_fn(
        video.reshape(frames, 32, 32, 3), outputs.reconstruction.reshape(frames, 32, 32, 3)
    )
    np.testing.assert_allclose(np.asarray(got), log["lpips"], rtol=LOSS_RTOL, atol=1e-7)
    errs["lpips_per_frame"] = float(np.max(np.abs(np.asarray(got) / np.asarray(log["lpips"]) - 1)))
    # The adaptive weight of step 2 from the reference's last-layer gradient norms (Eq. 7).
    post = meta["steps"][2]
    w = adaptive_weight(
        jnp.asarray(post["nll_grad_norm"]), jnp.asarray(post["g_grad_norm"]), disc_weight=0.5
    )
    np.testing.assert_allclose(float(w), post["d_weight"], rtol=LOSS_RTOL)
    errs["d_weight_step2"] = abs(float(w) / post["d_weight"] - 1)
    print(json.dumps(errs))


@pytest.mark.slow
def test_discriminator_step_on_reference_tensors(vectors):
    """Our discriminator, hinge loss and AdamW step on the reference's step-1 inputs."""
    d, meta = vectors
    log = meta["steps"][1]
    cfg = LossConfig(**meta["loss"], disc_num_layers=meta["disc_num_layers"])
    params, stats = disc_init(d, meta)
    disc = make_discriminator(cfg, meta["disc_ndf"], jnp.float32)
    real, fake = channels_last(d["video"]), channels_last(d["s1/recon"])
    key = jax.random.key(0)  # replaced by the masks

    def loss_fn(p, masks):
        with replay_draws(None, masks):
            logits, batch_stats = [], stats
            for x in (real, fake):
                variables = {"params": p, "batch_stats": batch_stats}
                lg, upd = disc.apply(
                    variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
                )
                logits.append(lg)
                batch_stats = upd["batch_stats"]
        return discriminator_loss(*logits, global_step=1, config=cfg)

    (_, logs), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, masks_of(d, 1))
    term_errs = check_terms(logs, log, DISC_TERMS)
    np.testing.assert_allclose(float(optax.tree.norm(grads)), log["grad_norm"], rtol=LOSS_RTOL)
    term_errs["grad_norm"] = abs(float(optax.tree.norm(grads)) / log["grad_norm"] - 1)
    tx = make_optimizer(OptimConfig(learning_rate=meta["lr"], weight_decay=meta["weight_decay"]))
    updates, _ = tx.update(grads, tx.init(params), params)
    after = optax.apply_updates(params, updates)
    got = _disc_torch(after, stats, meta)
    before = _disc_torch(params, stats, meta)
    for k, v in before.items():  # the key mapping round-trips the reference's state dict
        np.testing.assert_array_equal(v, d[f"disc_init/{k}"])
    delta = {k: got[k].astype(np.float64) - before[k] for k in got}
    noise = noise_floor(_disc_torch(grads, stats, meta))
    errs = check_update(delta, reference_update(d, meta, 1, "disc_keys"), noise, meta["lr"])
    print(json.dumps(dict(term_errs, params=errs)))


def test_adamw_and_ema_match_torch_where_float32_resolves_them(vectors):
    """make_optimizer and the step's EMA update vs torch AdamW and the reference's EMA class.

    At the training settings (lr 1e-5) weight decay moves a weight by 1e-9 of itself, under
    float32's resolution, so this probe uses lr 1e-2, weight decay 0.1 and EMA decay 0.9 on
    fixed gradients, one row of them near AdamW's eps.
    """
    d, _ = vectors
    tx = make_optimizer(OptimConfig(learning_rate=1e-2, weight_decay=0.1))
    params = ema = jnp.asarray(d["adamw/p0"])
    opt_state = tx.init(params)
    for i, g in enumerate(d["adamw/grads"]):
        updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = optax.incremental_update(params, ema, step_size=1.0 - 0.9)  # as generator_update
        np.testing.assert_allclose(params, d["adamw/params"][i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(ema, d["adamw/ema"][i], rtol=0, atol=1e-6)


def test_replay_draws_checks_the_masks(vectors):
    """Too few, too many or misshapen masks are errors, not a silent fallback to drawn ones."""
    d, meta = vectors
    cfg = LossConfig(**meta["loss"], disc_num_layers=meta["disc_num_layers"])
    params, stats = disc_init(d, meta)
    disc = make_discriminator(cfg, meta["disc_ndf"], jnp.float32)
    masks = masks_of(d, 0)  # one call's masks

    def run(masks, calls=1):
        with replay_draws(None, masks):
            for _ in range(calls):
                jax.eval_shape(
                    lambda x: disc.apply(
                        {"params": params, "batch_stats": stats},
                        x,
                        train=True,
                        rngs={"dropout": jax.random.key(0)},
                        mutable=["batch_stats"],
                    ),
                    channels_last(d["video"]),
                )

    run(masks)
    with pytest.raises(ValueError, match="more dropout calls"):
        run(masks, calls=2)
    with pytest.raises(ValueError, match="not used"):
        run(masks + masks)
    with pytest.raises(ValueError, match="for dropout input"):
        run(masks[::-1])


def _disc_torch(params, stats, meta) -> dict[str, np.ndarray]:
    sd = disc_lib.to_torch_state_dict(jax.device_get(params), stats, meta["disc_num_layers"])
    return {k: v for k, v in sd.items() if "running" not in k}


def _adam_grad(before, after, b1: float) -> dict:
    """The gradient of the step between two AdamW states: ``(mu' - b1 mu) / (1 - b1)``."""
    mu0, mu1 = optax.tree.get(before, "mu"), optax.tree.get(after, "mu")
    return jax.tree.map(lambda a, b: (np.asarray(b) - b1 * np.asarray(a)) / (1 - b1), mu0, mu1)


@pytest.mark.slow
def test_four_train_steps_match_reference(tiny, vectors, lpips_params):
    """generator_update / discriminator_update against the reference's steps 0-3."""
    d, meta = vectors
    params, model_config, _ = tiny
    cfg = step_config(model_config, meta)
    disc_params, stats = disc_init(d, meta)
    tx = make_optimizer(cfg.optim)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(0)),  # unused: every draw is replayed
        params=params,
        ema_params=jax.tree.map(jnp.array, params),
        opt_state=tx.init(params),
        disc_params=disc_params,
        disc_batch_stats=stats,
        disc_opt_state=tx.init(disc_params),
    )

    def replayed(update):
        def step(state, video, lpips_params, eps, masks):
            with replay_draws(eps, masks):
                return update(state, video, lpips_params, cfg=cfg)

        return jax.jit(step)

    steps = {"G": replayed(generator_update), "D": replayed(discriminator_update)}
    video = channels_last(d["video"])
    b1 = cfg.optim.b1
    report, ema_ref = {}, None
    gen_noise: dict = {}
    for s, log in enumerate(meta["steps"]):
        before = jax.device_get(state)
        state, metrics = steps[log["kind"]](
            state, video, lpips_params, channels_last(d[f"s{s}/eps"]), masks_of(d, s)
        )
        after = jax.device_get(state)
        metrics = {k.split("/", 1)[1]: v for k, v in metrics.items()}
        if log["kind"] == "G":
            errs = check_terms(metrics, log, GEN_TERMS + ("disc_factor",))
            grads = params_to_torch_state_dict(_adam_grad(before.opt_state, after.opt_state, b1))
            got = params_to_torch_state_dict(after.params)
            start = params_to_torch_state_dict(before.params)
            moments = (after.opt_state, params_to_torch_state_dict)
            keys = "gen_keys"
        else:
            metrics["grad_norm"] = metrics["disc_grad_norm"]
            errs = check_terms(metrics, log, DISC_TERMS)
            grads = _disc_torch(
                _adam_grad(before.disc_opt_state, after.disc_opt_state, b1), stats, meta
            )
            got = _disc_torch(after.disc_params, stats, meta)
            start = _disc_torch(before.disc_params, stats, meta)
            moments = (after.disc_opt_state, lambda t: _disc_torch(t, stats, meta))
            keys = "disc_keys"
        errs["grad_norm"] = abs(float(metrics["grad_norm"]) / log["grad_norm"] - 1)
        assert errs["grad_norm"] <= LOSS_RTOL, errs
        noise = noise_floor(grads)
        if log["kind"] == "G":  # elements stepped by noise at step 0 carry that into step 2
            noise = {k: v | gen_noise.get(k, False) for k, v in noise.items()}
            gen_noise = noise
        delta = {k: got[k].astype(np.float64) - start[k] for k in got}
        errs["params"] = check_update(
            delta, reference_update(d, meta, s, keys), noise, cfg.optim.learning_rate
        )
        # Steps 2 and 3 start from states that already differ by the noise-floor steps of 0 and
        # 1 (a conv weight stepped +-lr changes the reconstructions), so their moments agree
        # less closely than the first steps' (measured: 1.3e-5 at steps 0-1, 1.9e-4 at step 2).
        errs["moments"] = _check_moments(moments, log["moments"], noise, 1e-4 if s < 2 else 1e-3)
        if log["kind"] == "G":
            ema_ref, errs["ema"] = _check_ema(d, meta, s, after.ema_params, ema_ref or params)
        report[s] = errs
    print(json.dumps(report, indent=1))


def _check_moments(moments, ref: dict, noise: dict, rtol: float) -> float:
    """Per-tensor norms of AdamW's two moments vs the reference's (tensors above noise)."""
    opt_state, to_torch = moments
    mu = to_torch(optax.tree.get(opt_state, "mu"))
    nu = to_torch(optax.tree.get(opt_state, "nu"))
    worst = 0.0
    for k, (m_ref, v_ref) in ref.items():
        if noise[k].mean() > 0.5:  # a tensor whose gradient is all rounding noise
            continue
        for ours, want in ((mu[k], m_ref), (nu[k], v_ref)):
            worst = max(worst, abs(float(np.linalg.norm(ours.astype(np.float64))) / want - 1))
    assert worst <= rtol, worst
    return worst


def _check_ema(d, meta, step, ema_params, ema_ref):
    """The first ``ema_head`` elements of every EMA tensor vs the reference's (bit-exact) ones.

    ``ema_ref``: the reference EMA's head elements before this update, or (first update) the
    initial parameters pytree. Returns the updated heads and the worst absolute error.
    """
    head = meta["ema_head"]
    ours = params_to_torch_state_dict(jax.device_get(ema_params))
    if not isinstance(next(iter(ema_ref.values())), np.ndarray):  # initial params pytree
        start = params_to_torch_state_dict(jax.device_get(ema_ref))
        ema_ref = {k: start[k].ravel()[:head].copy() for k, _ in meta["gen_keys"]}
    ulps, offset, worst = d[f"s{step}/ema_ulps"], 0, 0.0
    new = {}
    for key, _ in meta["gen_keys"]:
        b = ema_ref[key]
        bits = b.view(np.int32).astype(np.int64) + ulps[offset : offset + b.size]
        new[key] = bits.astype(np.int32).view(np.float32)
        offset += b.size
        worst = max(worst, float(np.max(np.abs(ours[key].ravel()[:head] - new[key]))))
    assert worst <= PARAM_ATOL, worst
    return new, worst
