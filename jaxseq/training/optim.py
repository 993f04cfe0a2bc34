"""The one place optimizers are built: gradient clipping + an Optax optimizer + a schedule."""

import optax

from jaxseq import _checks

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    grad_clip: float = 1.0,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    momentum: float = 0.9,
) -> optax.GradientTransformation:
    """Builds `optax.chain(clip_by_global_norm, [L2 decay], optimizer(schedule))`.

        g ← g · min(1, grad_clip / ‖g‖₂)          when grad_clip > 0 (Pascanu et al. 2013)
        g ← g + weight_decay · θ                   adam, rmsprop, sgd (L2, as PyTorch does)
        θ ← θ − lr_t · optimizer(g)                adamw decays θ itself (decoupled)

    The learning rate lr_t rises linearly from 0 to `learning_rate` over
    `warmup_steps`, then stays there ("constant") or decays to 0 at `total_steps`
    along a half cosine ("cosine") or a straight line ("linear").

    Optimizer settings not named here are Optax's defaults: Adam/AdamW β = (0.9,
    0.999), ε = 1e-8; RMSProp decay 0.9, ε = 1e-8 added to √ν (as PyTorch and Adam do).

    Args:
      name: one of "adam", "adamw", "rmsprop", "sgd".
      learning_rate: peak step size, > 0.
      grad_clip: maximum global gradient norm; 0 disables clipping.
      weight_decay: ≥ 0; decoupled for adamw, an L2 term on the gradient otherwise.
      schedule: one of "constant", "cosine", "linear".
      warmup_steps: ≥ 0 steps of linear warm-up from 0.
      total_steps: the step where "cosine" and "linear" reach 0; required by them.
      momentum: heavy-ball momentum of "sgd" (0 disables); the others ignore it.

    Returns:
      An `optax.GradientTransformation`.

    References:
      Pascanu, Mikolov, Bengio 2013, "On the difficulty of training recurrent
      neural networks"; Loshchilov & Hutter 2019, "Decoupled weight decay
      regularization" (AdamW); Loshchilov & Hutter 2017, "SGDR" (cosine).
    """
    _checks.check_option("name", name, OPTIMIZERS)
    for arg, value in (("grad_clip", grad_clip), ("weight_decay", weight_decay)):
        if not value >= 0:
            raise ValueError(f"{arg} must be >= 0, got {value!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    lr = _schedule(learning_rate, schedule, warmup_steps, total_steps)
    if name == "adam":
        core = optax.adam(lr)
    elif name == "adamw":
        core = optax.adamw(lr, weight_decay=weight_decay)
    elif name == "rmsprop":
        core = optax.rmsprop(lr, eps_in_sqrt=False)
    else:
        core = optax.sgd(lr, momentum=momentum or None)
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    if weight_decay > 0 and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, core)


def _schedule(
    learning_rate: float, schedule: str, warmup_steps: int, total_steps: int | None
) -> float | optax.Schedule:
    """The learning rate as a float (constant, no warm-up) or an Optax schedule."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    _checks.check_option("schedule", schedule, SCHEDULES)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if schedule != "constant":
        if total_steps is None:
            raise ValueError(f"schedule={schedule!r} needs total_steps (the step where lr is 0)")
        _checks.check_positive_int("total_steps", total_steps)
        if total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps must exceed warmup_steps={warmup_steps}, got {total_steps}"
            )
    if schedule == "constant" and warmup_steps == 0:
        return learning_rate
    if schedule == "constant":
        after = optax.constant_schedule(learning_rate)
    elif schedule == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, total_steps - warmup_steps)
    else:
        after = optax.linear_schedule(learning_rate, 0.0, total_steps - warmup_steps)
    if warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])
