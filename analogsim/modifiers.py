"""Hardware-aware training: weight modifiers applied to the forward read of a training step.

A modifier perturbs the weights that the *forward* read of a training step sees, with a fresh
draw per mini-batch (per call of the layer in a step); the backward read and the pulsed update
see the stored weights unchanged, and outside a training step (evaluation, inference) nothing is
modified. The network so learns weights that tolerate the perturbation, as in aihwkit's
``WeightModifierParameter`` (``aihwkit/simulator/parameters/inference.py``, C++
``rpu_weight_modifier.cpp``), whose semantics these follow. With ``omega`` the largest
``|w|`` of the layer (``rel_to_actual_wmax``, the default) or ``assumed_wmax``:

- ``add_normal``: :math:`w + \\sigma\\,\\omega\\,\\xi`;
- ``mult_normal``: :math:`w\\,(1 + \\sigma\\,\\omega\\,\\xi)` (aihwkit scales by ``omega`` too);
- ``discretize``: :math:`\\omega\\,\\mathrm{round}(w / (\\omega r))\\,r` (``res`` = r);
- ``discretize_add_normal``: discretize, then ``add_normal``;
- ``drop_connect``: each weight set to 0 with probability ``pdrop`` (no rescaling);
- ``poly`` (PCM-like programming noise): :math:`w + \\omega\\,\\sigma\\,(c_0 + c_1 a + c_2 a^2)\\,\\xi`,
  :math:`a = |w|/\\omega`, with aihwkit's default coefficients
  ``(0.26348/25, 0.0768, -0.001877*25)``: the programming-noise polynomial of Nandakumar et al.
  (2019) in units of ``g_max = 25 uS`` (``analogsim.inference_noise.PCM_PROG_COEFF_US``).

``pdrop > 0`` applies drop connect on top of any kind (aihwkit does the same).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from .tile import _bwd as _tile_bwd
from .tile import analog_matmul

__all__ = ["MODIFIER_KINDS", "WeightModifier", "modified_matmul", "modify_weights", "parse_modifier"]

MODIFIER_KINDS = ("add_normal", "mult_normal", "discretize", "discretize_add_normal", "drop_connect", "poly")
# aihwkit's default Poly coefficients: the PCM programming noise (uS) divided by powers of g_max = 25 uS
POLY_COEFFS = (0.26348 / 25.0, 0.0768, -0.001877 * 25.0)


@dataclasses.dataclass(frozen=True)
class WeightModifier:
    """A training-time weight modifier (static, hashable).

    Attributes:
      kind: one of ``MODIFIER_KINDS``.
      std_dev: relative noise level sigma (add_normal, mult_normal, discretize_add_normal, poly).
      res: discretisation step as a fraction of omega (discretize, discretize_add_normal).
      pdrop: drop-connect probability in [0, 1).
      coeffs: polynomial coefficients of ``poly``.
      rel_to_actual_wmax: omega is the layer's largest ``|w|`` (True) or ``assumed_wmax``.
      assumed_wmax: omega when ``rel_to_actual_wmax`` is False.
    """

    kind: str = "add_normal"
    std_dev: float = 0.0
    res: float = 0.1
    pdrop: float = 0.0
    coeffs: tuple[float, ...] = POLY_COEFFS
    rel_to_actual_wmax: bool = True
    assumed_wmax: float = 1.0

    def __post_init__(self):
        if self.kind not in MODIFIER_KINDS:
            raise ValueError(
                f"WeightModifier.kind: value {self.kind!r} is not allowed; allowed: {', '.join(MODIFIER_KINDS)}"
            )
        for name in ("std_dev", "res", "assumed_wmax"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"WeightModifier.{name}: value {v!r} is not allowed; must be finite and >= 0")
        if not (isinstance(self.pdrop, int | float) and 0 <= self.pdrop < 1):
            raise ValueError(f"WeightModifier.pdrop: value {self.pdrop!r} is not allowed; must be in [0, 1)")
        if self.kind == "drop_connect" and self.pdrop == 0 and self.std_dev > 0:
            object.__setattr__(self, "pdrop", float(self.std_dev))  # "drop_connect:0.1" names pdrop
            object.__setattr__(self, "std_dev", 0.0)
        object.__setattr__(self, "coeffs", tuple(float(c) for c in self.coeffs))

    @property
    def active(self) -> bool:
        """Whether the modifier changes anything."""
        if self.kind in ("discretize", "discretize_add_normal") and self.res > 0:
            return True
        return self.std_dev > 0 or self.pdrop > 0


_FLAG_FIELDS = {"discretize": ("res",), "discretize_add_normal": ("res", "std_dev"), "drop_connect": ("pdrop",)}


def parse_modifier(text: str) -> WeightModifier | None:
    """``"add_normal:0.05"`` -> ``WeightModifier("add_normal", std_dev=0.05)``; ``""``/``"none"`` -> None.

    The number is ``std_dev``, except for ``discretize`` (``res``) and ``drop_connect`` (``pdrop``);
    ``discretize_add_normal:RES:STD`` takes both.
    """
    text = text.strip()
    if text in ("", "none"):
        return None
    kind, *nums = text.split(":")
    try:
        vals = [float(n) for n in nums]
    except ValueError:
        raise ValueError(
            f"--weight-modifier: value {text!r} is not allowed; use KIND:NUMBER, e.g. add_normal:0.05 "
            f"(kinds: {', '.join(MODIFIER_KINDS)})"
        ) from None
    if kind not in MODIFIER_KINDS:
        raise ValueError(
            f"--weight-modifier: kind {kind!r} is not allowed; allowed: {', '.join(MODIFIER_KINDS)} (or none)"
        )
    fields = _FLAG_FIELDS.get(kind, ("std_dev",))  # what the numbers after KIND: are
    if len(vals) != len(fields):
        raise ValueError(
            f"--weight-modifier: value {text!r} is not allowed; {kind} takes "
            f"{'RES:STD' if len(fields) == 2 else 'one number'}"
        )
    try:
        return WeightModifier(kind, **dict(zip(fields, vals, strict=True)))
    except ValueError as e:  # name the flag the user wrote
        raise ValueError(f"--weight-modifier: value {text!r} is not allowed ({e})") from None


def _discretize(w: jax.Array, omega: jax.Array, res: float) -> jax.Array:
    return omega * jnp.round(w / omega / res) * res if res > 0 else w


def modify_weights(mod: WeightModifier, w: jax.Array, *, key: jax.Array) -> jax.Array:
    """The weights one forward read of a training step sees under ``mod`` (a fresh draw per ``key``)."""
    omega = jnp.max(jnp.abs(w)) if mod.rel_to_actual_wmax else jnp.asarray(mod.assumed_wmax, w.dtype)
    omega = jax.lax.stop_gradient(jnp.where(omega > 0, omega, 1.0))
    k_noise, k_drop = jax.random.split(key)
    xi = jax.random.normal(k_noise, w.shape, w.dtype) if mod.std_dev > 0 else 0.0
    if mod.kind == "add_normal":
        w = w + mod.std_dev * omega * xi
    elif mod.kind == "mult_normal":
        w = w * (1.0 + mod.std_dev * omega * xi)
    elif mod.kind == "discretize":
        w = _discretize(w, omega, mod.res)
    elif mod.kind == "discretize_add_normal":
        w = _discretize(w, omega, mod.res) + mod.std_dev * omega * xi
    elif mod.kind == "poly":
        a = jnp.abs(w) / omega
        sig = sum(c * a**i for i, c in enumerate(mod.coeffs))
        w = w + omega * mod.std_dev * sig * xi
    if mod.pdrop > 0:
        w = jnp.where(jax.random.uniform(k_drop, w.shape) < mod.pdrop, 0.0, w)
    return w


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def modified_matmul(w, w_read, x, key, forward_io, backward_io):
    """``analog_matmul`` whose forward read sees ``w_read`` and whose backward read sees ``w``."""
    return analog_matmul(w_read, x, key, forward_io, backward_io)


def _fwd(w, w_read, x, key, forward_io, backward_io):
    return analog_matmul(w_read, x, key, forward_io, backward_io), (w, x, key)


def _bwd(forward_io, backward_io, residuals, cotangents):
    dw, dx, _ = _tile_bwd(forward_io, backward_io, residuals, cotangents)
    return dw, jnp.zeros_like(dw), dx, None


modified_matmul.defvjp(_fwd, _bwd)
