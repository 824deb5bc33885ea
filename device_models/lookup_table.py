"""Lookup-table device: each pulse's change is drawn from measured jump statistics by state.

A measured table gives, for a grid of states :math:`w_k` (columns, ``nodes``) and cumulative
probabilities :math:`P_j` (rows, ``cdf``), the change :math:`T_{jk}` of one pulse in units of
``dw_min``: the :math:`P_j`-quantile of the measured jumps from state :math:`w_k`. A pulse at
state ``w`` draws :math:`u \\sim U(0, 1)` and takes the change by bilinear interpolation of the
table at :math:`(u, w)` (inverse-CDF sampling at the interpolated state), times the
cross-point's step scale :math:`s_\\pm` (``dw_min`` with its device-to-device variation):

.. math::
    \\Delta w_\\pm = s_\\pm\\, T^\\pm(u, w)\\,(1 + \\sigma_{c2c}\\xi).

The measured scatter is the cycle-to-cycle noise, so a card of measured tables sets
``dw_min_std = 0``; with the default one-value tables (all 1) the model is a constant-step
device. The noise-free step (``step_up``/``step_down``) is the table's mean change at ``w``,
:math:`\\int_0^1 \\Delta(P, w)\\,dP` (exact for the piecewise-linear quantile function the
sampler uses), kept >= 0 in the pulse's direction; its variance (``LookupTable.step_variance``) is the table's, so the
``expected`` update rung sees the same noise.

Tables are stored flattened, row-major (``len(cdf)`` rows by ``len(nodes)`` columns), as tuples
of floats: card-settable, hashable, and still pytree leaves (differentiable).

References:
    van de Burgt et al., Nat. Electron. 1, 386 (2018); Fuller et al., Science 364, 570 (2019)
    (ENODe devices); Sandia CrossSim lookup-table device (BSD 3-Clause), whose measured tables
    are condensed into the ``enode-lut`` card.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, expected_step, register_model

__all__ = ["LookupTable"]


def _interp_index(grid: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Left index ``k`` and weight ``t`` of ``x`` on an increasing ``grid`` (clamped to its ends)."""
    n = grid.shape[0]
    k = jnp.clip(jnp.searchsorted(grid, x, side="right") - 1, 0, n - 2)
    lo, hi = grid[k], grid[k + 1]
    span = hi - lo
    t = jnp.where(span > 0, (x - lo) / jnp.where(span > 0, span, 1.0), 0.0)
    return k, jnp.clip(t, 0.0, 1.0)


@register_model
@dataclasses.dataclass(frozen=True)
class LookupTable(AbstractPulsedModel):
    """Measured jump statistics by state (see the module docstring).

    Args:
      pulsed: common parameters; ``dw_min`` is the unit of the tables (choose the mean up step
        at mid-range: it also sets the update's pulse probabilities).
      cdf: cumulative probabilities of the table rows, increasing from 0 to 1.
      nodes: states (weight units) of the table columns, increasing.
      table_up: changes of a potentiating pulse in units of ``dw_min``, flattened
        (len(cdf) x len(nodes)).
      table_down: changes of a depressing pulse (signed, mostly negative), same layout.
    """

    name: ClassVar[str] = "lookup-table"
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "cdf": ParameterRule(lambda v: 0.0 <= v <= 1.0, "in [0, 1], increasing from 0 to 1", table=True),
        "nodes": ParameterRule(math.isfinite, "finite, increasing", table=True),
        "table_up": ParameterRule(math.isfinite, "finite (len(cdf) x len(nodes) values, row-major)", table=True),
        "table_down": ParameterRule(math.isfinite, "finite (len(cdf) x len(nodes) values, row-major)", table=True),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    cdf: tuple[float, ...] | jax.Array = (0.0, 1.0)
    nodes: tuple[float, ...] | jax.Array = (-0.6, 0.6)
    table_up: tuple[float, ...] | jax.Array = (1.0, 1.0, 1.0, 1.0)
    table_down: tuple[float, ...] | jax.Array = (-1.0, -1.0, -1.0, -1.0)

    def __post_init__(self):
        # Checked where the numbers are concrete (cards, user code); skipped under tracing.
        fields = (self.cdf, self.nodes, self.table_up, self.table_down)
        if all(isinstance(v, tuple) and all(isinstance(x, int | float) for x in v) for v in fields):
            p, n = len(self.cdf), len(self.nodes)
            if p < 2 or n < 2:
                raise ValueError(f"lookup-table: cdf and nodes need >= 2 points each, got {p} and {n}")
            if (
                abs(self.cdf[0]) > 1e-9
                or abs(self.cdf[-1] - 1.0) > 1e-9
                or any(b <= a for a, b in zip(self.cdf, self.cdf[1:], strict=False))
            ):
                raise ValueError(
                    f"lookup-table: field 'cdf': must increase strictly from 0 to 1, got {self.cdf[:3]}...{self.cdf[-2:]}"
                )
            if any(b <= a for a, b in zip(self.nodes, self.nodes[1:], strict=False)):
                raise ValueError("lookup-table: field 'nodes': must increase strictly")
            for field in ("table_up", "table_down"):
                if len(getattr(self, field)) != p * n:
                    raise ValueError(
                        f"lookup-table: field {field!r}: {len(getattr(self, field))} values, "
                        f"needs len(cdf) x len(nodes) = {p} x {n} = {p * n}"
                    )

    def _grids(self, dtype):
        cdf = jnp.asarray(self.cdf, dtype)
        nodes = jnp.asarray(self.nodes, dtype)
        p, n = cdf.shape[0], nodes.shape[0]
        up = jnp.asarray(self.table_up, dtype).reshape(p, n)
        down = jnp.asarray(self.table_down, dtype).reshape(p, n)
        return cdf, nodes, up, down

    def _moments(self, table, cdf, nodes, w):
        r"""Mean and second moment of the change sampled at ``w``: exact for the sampler, whose
        quantile function is the column interpolated at ``w`` and linear in ``u`` between rows.

        With the column :math:`c = (1-t)\,T_{:,k} + t\,T_{:,k+1}`, the mean is linear and the
        second moment quadratic in ``t``; their coefficients are per-node sums over the (small)
        table, so each weight costs one grid search and a few gathers from vectors of len(nodes)
        instead of a gather of a whole table column.
        """
        k, t = _interp_index(nodes, w)
        dp = jnp.diff(cdf)[:, None]  # (rows - 1, 1)
        a, b = table[:-1], table[1:]  # row r and r + 1 of every column, (rows - 1, nodes)
        mean_node = jnp.sum(0.5 * (a + b) * dp, axis=0)  # (nodes,)
        second_node = jnp.sum((a * a + a * b + b * b) / 3.0 * dp, axis=0)
        # the cross term of neighbouring columns j, j + 1: E over u of c_j(u) c_{j+1}(u)
        a0, b0, a1, b1 = a[:, :-1], b[:, :-1], a[:, 1:], b[:, 1:]
        cross_node = jnp.sum((2 * a0 * a1 + a0 * b1 + b0 * a1 + 2 * b0 * b1) / 6.0 * dp, axis=0)  # (nodes - 1,)
        mean = mean_node[k] * (1 - t) + mean_node[k + 1] * t
        second = second_node[k] * (1 - t) ** 2 + 2 * cross_node[k] * t * (1 - t) + second_node[k + 1] * t**2
        return mean, second

    def _gain(self, cp: CrossPoints, up: bool, dtype):
        return (cp.scale_up if up else cp.scale_down).astype(dtype)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        cdf, nodes, up, _ = self._grids(jnp.promote_types(w.dtype, jnp.float32))
        mean, _ = self._moments(up, cdf, nodes, w.astype(cdf.dtype))
        return jnp.maximum(self._gain(cp, True, cdf.dtype) * mean, 0.0).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        cdf, nodes, _, down = self._grids(jnp.promote_types(w.dtype, jnp.float32))
        mean, _ = self._moments(down, cdf, nodes, w.astype(cdf.dtype))
        return jnp.maximum(-self._gain(cp, False, cdf.dtype) * mean, 0.0).astype(w.dtype)

    def step_variance(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        cdf, nodes, t_up, t_down = self._grids(jnp.promote_types(w.dtype, jnp.float32))
        mean, second = self._moments(t_up if up else t_down, cdf, nodes, w.astype(cdf.dtype))
        gain = self._gain(cp, up, cdf.dtype)
        # Var[T (1 + s xi)] = E[T^2] (1 + s^2) - E[T]^2
        var = second * (1.0 + cp.dw_min_std.astype(cdf.dtype) ** 2) - mean**2
        return (gain**2 * jnp.maximum(var, 0.0)).astype(w.dtype)

    def sample_step(self, cp: CrossPoints, w: jax.Array, pulses: jax.Array, *, key: jax.Array | None) -> jax.Array:
        if key is None:
            return expected_step(self, cp, w, pulses)
        dtype = jnp.promote_types(w.dtype, jnp.float32)
        cdf, nodes, t_up, t_down = self._grids(dtype)
        u = jax.random.uniform(jax.random.fold_in(key, 0), w.shape, dtype)
        j, s = _interp_index(cdf, u)
        k, t = _interp_index(nodes, w.astype(dtype))

        def bilinear(table):
            return (
                table[j, k] * (1 - s) * (1 - t)
                + table[j + 1, k] * s * (1 - t)
                + table[j, k + 1] * (1 - s) * t
                + table[j + 1, k + 1] * s * t
            )

        up = self._gain(cp, True, dtype) * bilinear(t_up)
        down = self._gain(cp, False, dtype) * bilinear(t_down)
        noise = 1.0 + cp.dw_min_std.astype(dtype) * jax.random.normal(jax.random.fold_in(key, 1), w.shape, dtype)
        return (jnp.where(pulses > 0, up, jnp.where(pulses < 0, down, 0.0)) * noise).astype(w.dtype)
