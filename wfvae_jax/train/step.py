"""Jitted generator and discriminator train steps: pure functions ``(state, batch) -> state``.

Source: the reference ``train_ddp.py`` loop (l.423-502) with the objectives of
``wfvae_jax.losses`` (``LPIPSWithDiscriminator3D``). One global step is EITHER a generator step
or a discriminator step (:func:`wfvae_jax.losses.is_discriminator_step`: odd steps from
``disc_start`` on train the discriminator); both advance ``state.step``.

Randomness: step ``s`` uses ``fold_in(state.rng, s)`` for the posterior sample and the
discriminator's dropout, so a resumed run draws what an uninterrupted one would. Steps traced
inside :func:`replay_draws` use given draws instead (another implementation's, for parity).

Two ways to spread a step over a mesh (``parallelism``):
- ``"gspmd"`` (default): ``jax.jit`` with explicit ``in/out_shardings``; the batch is split over
  all devices and the state is replicated or FSDP-sharded (:mod:`.mesh`). The program computes
  the loss of the GLOBAL batch, so the result does not depend on the device count; the
  discriminator's BatchNorm sees global batch statistics (SyncBatchNorm) and the adaptive weight
  uses global gradients.
- ``"shard_map"``: the reference's DDP semantics with explicit collectives. Each device runs the
  step on its own slice with a replicated state, BatchNorm statistics and the adaptive weight are
  per device (as on each PyTorch rank), and ``lax.pmean`` averages the gradients (DDP's
  all-reduce), the logged losses and the BatchNorm running statistics. Every device draws the
  same random numbers, as every reference rank does (all are seeded identically).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.core.model import WFVAE
from wfvae_jax.inference.api import DTYPES, parse_dtype
from wfvae_jax.inference.api import reconstruct as api_reconstruct
from wfvae_jax.inference.sharding import BATCH_AXES, replicated
from wfvae_jax.lc import LCVAE, LCSettings
from wfvae_jax.losses import (
    GeneratorOutputs,
    LossConfig,
    discriminator_loss,
    generator_loss_and_grads,
)
from wfvae_jax.train import mesh as mesh_lib
from wfvae_jax.train.state import (
    OptimConfig,
    TrainState,
    create_train_state,
    make_discriminator,
    make_optimizer,
)

Metrics = dict[str, jax.Array]
COMPUTE_DTYPES = tuple(DTYPES)  # the names wfvae_jax.inference.api.parse_dtype reads
PARALLELISMS = ("gspmd", "shard_map")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything that shapes the compiled train steps (hashable: steps are cached on it).

    Attributes:
      model: the WF-VAE architecture.
      loss: loss weights and schedule.
      optim: AdamW settings of both optimizers.
      disc_ndf: discriminator width (64 in the reference).
      ema_decay: EMA decay ``d``: ``ema = d * ema + (1 - d) * params`` after each generator step.
      compute_dtype: ``"float32"`` or ``"bfloat16"``. bfloat16 runs the convolutions of the
        generator and discriminator in bf16; parameters, optimizer state, EMA, the losses and
        LPIPS stay float32.
      lpips_net: LPIPS backbone of the perceptual loss (``"vgg"`` as the reference's taming LPIPS).
      lc: LC-VAE latent compression in the forward pass (``None``: plain WF-VAE).
    """

    model: WFVAEConfig
    loss: LossConfig
    optim: OptimConfig = OptimConfig()
    disc_ndf: int = 64
    ema_decay: float = 0.999
    compute_dtype: str = "float32"
    lpips_net: str = "vgg"
    lc: LCSettings | None = None

    def __post_init__(self) -> None:
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {self.compute_dtype!r}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.disc_ndf < 1:
            raise ValueError(f"disc_ndf must be >= 1, got {self.disc_ndf}")

    @property
    def dtype(self) -> Any:
        return parse_dtype(self.compute_dtype)

    def build_model(self, dtype: Any = None) -> WFVAE:
        """The generator module: WF-VAE, or LC-VAE when ``lc`` is set (same parameters)."""
        dtype = self.dtype if dtype is None else dtype
        return WFVAE(self.model, dtype) if self.lc is None else LCVAE(self.model, dtype, lc=self.lc)

    @property
    def uses_lpips(self) -> bool:
        return self.loss.perceptual_weight > 0


def _keys(state: TrainState, n: int) -> list[jax.Array]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    return list(jax.random.split(key, n))


def _lpips_fn(cfg: StepConfig, lpips_params: Any) -> Callable | None:
    if not cfg.uses_lpips:
        return None
    if lpips_params is None:
        raise ValueError("perceptual_weight > 0 needs LPIPS parameters (see load_lpips)")
    from wfvae_jax.metrics.lpips import LPIPS

    module = LPIPS(net=cfg.lpips_net)
    return lambda x, y: module.apply({"params": lpips_params}, x, y)


def generator_update(
    state: TrainState,
    video: jax.Array,
    lpips_params: Any = None,
    *,
    cfg: StepConfig,
    axis_name: Any = None,
) -> tuple[TrainState, Metrics]:
    """One generator step (reference ``optimizer_idx == 0``), then the EMA update.

    Args:
      state: the current state.
      video: ``(B, T, H, W, 3)`` float32 in [-1, 1], ``T = 1 + 4k``, H and W multiples of 8.
      lpips_params: LPIPS parameters (``load_lpips``), or ``None`` when ``perceptual_weight == 0``.
      cfg: static step configuration.
      axis_name: inside ``shard_map``, the mesh axes to average gradients over; ``None`` in jit.
    Returns:
      ``(new_state, metrics)``; metrics are float32 scalars named ``train/<reference log key>``
      plus ``train/grad_norm`` (global norm of the averaged gradient, before clipping),
      ``train/param_norm`` and ``train/latent_std`` (std of the posterior mean).
    """
    model = cfg.build_model()
    disc = make_discriminator(cfg.loss, cfg.disc_ndf, cfg.dtype)
    k_sample, k_drop = _keys(state, 2)
    use_wl = cfg.loss.wavelet_weight > 0

    def forward(params):
        out = model.apply(
            {"params": params}, video, sample_posterior=True, rngs={"sample": k_sample}
        )
        taps = (out.enc_w2, out.dec_w2, out.enc_w3, out.dec_w3) if use_wl else None
        mean = out.posterior.mean
        outputs = GeneratorOutputs(out.sample, mean, out.posterior.logvar, taps)
        return outputs, jnp.std(mean.astype(jnp.float32))

    def discriminate(reconstruction):
        variables = {"params": state.disc_params, "batch_stats": state.disc_batch_stats}
        logits, updates = disc.apply(
            variables, reconstruction, train=True, rngs={"dropout": k_drop}, mutable=["batch_stats"]
        )
        return logits, updates["batch_stats"]

    _, logs, grads, batch_stats, latent_std = generator_loss_and_grads(
        forward,
        state.params,
        discriminate,
        video,
        global_step=state.step,
        config=cfg.loss,
        lpips_fn=_lpips_fn(cfg, lpips_params),
        has_aux=True,
    )
    logs = dict(logs, latent_std=latent_std)
    if axis_name is not None:
        grads, logs, batch_stats = jax.lax.pmean((grads, logs, batch_stats), axis_name)
    tx = make_optimizer(cfg.optim)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = optax.incremental_update(params, state.ema_params, step_size=1.0 - cfg.ema_decay)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        ema_params=ema_params,
        opt_state=opt_state,
        disc_batch_stats=batch_stats,
    )
    metrics = {f"train/{k}": jnp.asarray(v, jnp.float32) for k, v in logs.items()}
    metrics["train/grad_norm"] = optax.tree.norm(grads)
    metrics["train/param_norm"] = optax.tree.norm(params)
    return new_state, metrics


def discriminator_update(
    state: TrainState,
    video: jax.Array,
    lpips_params: Any = None,
    *,
    cfg: StepConfig,
    axis_name: Any = None,
) -> tuple[TrainState, Metrics]:
    """One discriminator step (reference ``optimizer_idx == 1``); the generator is untouched.

    The reconstruction comes from a fresh generator forward pass with a posterior sample (the
    reference runs ``model(inputs)`` in both kinds of step) and is detached. The discriminator
    sees the real and the reconstructed batch in two separate calls (each with its own batch
    statistics and dropout mask, as the reference). ``lpips_params`` is unused (same signature
    as :func:`generator_update`).
    Returns:
      ``(new_state, metrics)`` with ``train/disc_loss``, ``train/logits_real``,
      ``train/logits_fake`` and ``train/disc_grad_norm``.
    """
    del lpips_params
    model = cfg.build_model()
    disc = make_discriminator(cfg.loss, cfg.disc_ndf, cfg.dtype)
    k_sample, k_real, k_fake = _keys(state, 3)
    out = model.apply(
        {"params": state.params}, video, sample_posterior=True, rngs={"sample": k_sample}
    )
    fake = jax.lax.stop_gradient(out.sample)

    def loss_fn(disc_params):
        stats = state.disc_batch_stats
        logits = []
        for x, key in ((video, k_real), (fake, k_fake)):
            variables = {"params": disc_params, "batch_stats": stats}
            lg, upd = disc.apply(
                variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
            )
            logits.append(lg)
            stats = upd["batch_stats"]
        loss, logs = discriminator_loss(*logits, global_step=state.step, config=cfg.loss)
        return loss, (logs, stats)

    (_, (logs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.disc_params)
    if axis_name is not None:
        grads, logs, batch_stats = jax.lax.pmean((grads, logs, batch_stats), axis_name)
    tx = make_optimizer(cfg.optim)
    updates, opt_state = tx.update(grads, state.disc_opt_state, state.disc_params)
    new_state = state.replace(
        step=state.step + 1,
        disc_params=optax.apply_updates(state.disc_params, updates),
        disc_opt_state=opt_state,
        disc_batch_stats=batch_stats,
    )
    metrics = {f"train/{k}": jnp.asarray(v, jnp.float32) for k, v in logs.items()}
    metrics["train/disc_grad_norm"] = optax.tree.norm(grads)
    return new_state, metrics


@contextlib.contextmanager
def replay_draws(
    posterior_noise: jax.Array | None = None, dropout_keep: Sequence[jax.Array] = ()
) -> Iterator[None]:
    """Steps traced inside this context use the given random draws instead of ``state.rng``'s.

    This is how a step is run on another implementation's draws: the parity test against the
    reference (``tests/test_train_parity.py``) and ``benchmarks/train_vs_reference.py`` feed both
    sides the same posterior noise and discriminator dropout masks. It acts at trace time
    (through ``flax.linen.intercept_methods``), so trace the step inside the context with the
    draws as arguments of the traced function (a ``jax.jit`` traced on its first call inside
    the context keeps them as inputs; later calls of that compiled function replay whatever
    arrays they are given).

    Args:
      posterior_noise: ``eps`` of the posterior sample ``z = mean + std * eps`` (reference
        ``DiagonalGaussianDistribution.sample``), the latent's shape ``(B, t, h, w, latent_dim)``,
        float32; ``None`` keeps the drawn noise.
      dropout_keep: boolean keep-masks of the discriminator's dropout layers (rate ``p``: kept
        elements are scaled by ``1 / (1 - p)`` as ``torch.nn.Dropout`` does), one per dropout
        call in call order, each of its input's shape ``(B, T', H', W', C')``. A generator step
        calls the discriminator once, a discriminator step twice (real, then reconstruction),
        each call running its ``disc_num_layers`` dropouts. Empty: the drawn masks are kept.
    Raises:
      ValueError: at trace time, if a mask's shape differs from its dropout input's, or when the
        context closes with masks left unused (the counts did not match).
    """
    masks = list(dropout_keep)
    replay_masks = bool(masks)
    posteriors: list[Any] = []

    def interceptor(next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        if replay_masks and isinstance(module, nn.Dropout) and method == "__call__":
            deterministic = nn.merge_param(
                "deterministic", module.deterministic, kwargs.get("deterministic")
            )
            if deterministic or module.rate == 0.0:
                return next_fun(*args, **kwargs)
            if not masks:
                raise ValueError("replay_draws: more dropout calls than dropout_keep masks")
            x, keep = args[0], masks.pop(0)
            if keep.shape != x.shape:
                raise ValueError(f"replay_draws: mask {keep.shape} for dropout input {x.shape}")
            return jnp.where(keep, x / (1.0 - module.rate), jnp.zeros_like(x))
        if posterior_noise is not None and isinstance(module, WFVAE):
            if method == "encode":
                out = next_fun(*args, **kwargs)
                posteriors.append(out[0])
                return out
            if method == "process_latent" and posteriors:
                post = posteriors.pop()
                if posterior_noise.shape != post.mean.shape:
                    raise ValueError(
                        f"replay_draws: noise {posterior_noise.shape} for latent {post.mean.shape}"
                    )
                z = post.mean + post.std * posterior_noise.astype(post.mean.dtype)
                return next_fun(z)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield
    if masks:
        raise ValueError(f"replay_draws: {len(masks)} dropout masks were not used")


class TrainSteps(NamedTuple):
    """Compiled functions for one (StepConfig, mesh, parallelism).

    ``init(rng_key_data) -> TrainState`` (created directly in ``state_sharding``),
    ``generator(state, video, lpips_params)`` and ``discriminator(state, video, lpips_params)``
    (both donate ``state``), ``reconstruct(params, video) -> video`` (posterior mode, float32,
    for evaluation), and the shardings to place inputs with.
    """

    init: Callable
    generator: Callable
    discriminator: Callable
    reconstruct: Callable
    state_sharding: Any
    batch_sharding: NamedSharding
    replicated: NamedSharding


def abstract_state(cfg: StepConfig) -> TrainState:
    """Shapes and dtypes of a :class:`TrainState` for ``cfg`` (nothing is computed)."""
    return jax.eval_shape(
        lambda: create_train_state(
            cfg.model, cfg.loss, cfg.optim, disc_ndf=cfg.disc_ndf, rng=jax.random.key(0)
        )
    )


@functools.lru_cache(maxsize=8)
def build_train_steps(cfg: StepConfig, mesh: Mesh, parallelism: str = "gspmd") -> TrainSteps:
    """Builds (and caches, so repeated runs reuse compilations) the jitted steps for ``mesh``.

    Raises:
      ValueError: unknown ``parallelism``, or ``"shard_map"`` with an FSDP mesh (its state is
        replicated by design).
    """
    if parallelism not in PARALLELISMS:
        raise ValueError(f"parallelism must be one of {PARALLELISMS}, got {parallelism!r}")
    repl = replicated(mesh)
    batch_sh = mesh_lib.batch_sharding(mesh)
    if parallelism == "gspmd":
        state_sh = mesh_lib.state_shardings(mesh, abstract_state(cfg))
    else:
        if mesh.shape["fsdp"] > 1:
            raise ValueError("parallelism='shard_map' replicates the state; use mesh.fsdp=1")
        state_sh = jax.tree.map(lambda _: repl, abstract_state(cfg))

    def wrap(update):
        body = functools.partial(update, cfg=cfg)
        if parallelism == "shard_map":
            # check_vma=False keeps autodiff per device: with it on, JAX would already psum the
            # gradient of the replicated parameters (and of the adaptive weight's last-layer
            # gradients) behind our back; here the one reduction is the explicit pmean.
            body = jax.shard_map(
                functools.partial(update, cfg=cfg, axis_name=BATCH_AXES),
                mesh=mesh,
                in_specs=(P(), P(BATCH_AXES), P()),
                out_specs=(P(), P()),
                check_vma=False,
            )
        return jax.jit(
            body,
            in_shardings=(state_sh, batch_sh, repl),
            out_shardings=(state_sh, repl),
            donate_argnums=0,
        )

    def init(rng):
        return create_train_state(cfg.model, cfg.loss, cfg.optim, disc_ndf=cfg.disc_ndf, rng=rng)

    def reconstruct(params, video):  # the one reconstruction of every tool (float32)
        return api_reconstruct(params, video, cfg.model, lc=cfg.lc)

    return TrainSteps(
        init=jax.jit(init, out_shardings=state_sh),
        generator=wrap(generator_update),
        discriminator=wrap(discriminator_update),
        reconstruct=jax.jit(reconstruct, out_shardings=repl),
        state_sharding=state_sh,
        batch_sharding=batch_sh,
        replicated=repl,
    )
