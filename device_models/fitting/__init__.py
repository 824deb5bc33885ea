"""Fit a pulsed device model to a measured conductance-versus-pulse curve.

The fit minimises, with ``scipy.optimize.least_squares`` (trust-region reflective, box
bounds), the sum of squared differences between each measured reading and the model's
*noise-free* prediction, obtained by replaying the measured pulse sequence pulse by pulse
(``apply_pulses`` with ``key=None`` inside a ``jax.lax.scan``). Each
device/cycle is replayed from its own first reading: its start state is a fitted nuisance
parameter (initialised at the first readings), so one noisy first reading does not bias the
whole sweep. The Jacobian comes from JAX (``jax.jacfwd`` of the residuals with respect to
the fitted parameters), in float64.

**Units and the mapping to weights.** Weight data (``weight`` column) are fitted in normalised
units directly: ``dw_min``, ``up_down``, ``w_max``, ``w_min`` and the model's own parameters.
Conductance data are fitted in siemens through the linear map of the device cards
(``device_models.cards``),

.. math::
    G = g_{min} + \\frac{w - w_{min}}{w_{max} - w_{min}} (g_{max} - g_{min}),
    \\qquad w_{min} = -1,\\ w_{max} = 1 \\text{ (assumed)},

so the fitted bounds are ``g_min``/``g_max`` (siemens, written to the card's ``[physical]``) and
``dw_min`` is a fraction of the half-range :math:`(g_{max} - g_{min})/2`.

**Which parameters are fitted.** Only those the data determine. After the fit, a parameter whose
Jacobian column vanishes (for example a hard bound the replay never reaches), or that lies along
a null direction of the column-normalised Jacobian (condition number above ``1e7``, e.g.
``w_max`` and ``gamma`` of ``linear-step`` when the data never saturate), is frozen at its value
and the fit is repeated; it goes to the card as ``assumed`` with the reason. ``exp-step``'s
``a`` and ``b`` are always frozen (only :math:`\\gamma a` and :math:`A e^{\\gamma b}` are
identifiable); both signs of ``a`` are tried. Without up (or down) pulses ``up_down`` is frozen
at 0. ``piecewise-step`` (the ``auto`` candidate fitted *directly from the data*) starts from the
mean smoothed step per state bin for up and down pulses and refines the tables by the same least
squares; its nodes span the measured range, the table length (3 to 9 nodes, about one per 80
pulses) is the one with the lowest AIC, ``up_down`` is 0 and ``dw_min`` is the mean table entry.

**Statistics reported** (``FitResult``), with :math:`n` readings, :math:`k` free parameters
(model parameters plus one start state per sweep), residuals :math:`r_i` (state units):

- standard errors :math:`\\sqrt{\\mathrm{diag}(\\hat\\sigma^2 (J^T J)^{-1})}` at the optimum,
  :math:`\\hat\\sigma^2 = \\mathrm{RSS}/(n - k)`; they assume independent residuals, so they are
  optimistic when cycle-to-cycle noise (a random walk around the replay) dominates;
- :math:`R^2 = 1 - \\mathrm{RSS}/\\sum_i (y_i - \\bar y)^2`;
  :math:`\\mathrm{AIC} = n \\log(\\mathrm{RSS}/n) + 2k` (``fit_auto`` ranks by it);
- ``residual_std``: the RMS residual (state units);
- cycle-to-cycle and read noise. ``dw_min_std`` (written to the card) and ``read_noise_std``
  are the maximum-likelihood values of a state-space model of the residuals along each sweep:
  an accumulating random walk whose variance per pulse is :math:`\\sigma_{c2c}^2 d_j^2`
  (:math:`d_j` the predicted step, damped by the fitted curve's pull toward the bounds, and
  restarted where the curve sits clipped at a bound) plus white read noise
  :math:`\\sigma_{read}^2` on every reading, evaluated with a Kalman filter in JAX and
  maximised with L-BFGS-B. Two moment estimates are reported beside it:
  ``dw_min_std_all_scatter`` :math:`= \\sqrt{\\sum \\Delta r_j^2 / \\sum d_j^2}` (all
  pulse-to-pulse scatter of the residual steps :math:`\\Delta r_j` counted as cycle-to-cycle
  noise, an upper bound) and ``dw_min_std_lag1`` (the same with :math:`2 m \\sigma_{read}^2`
  removed, :math:`\\sigma_{read}^2 = \\max(0, -\\overline{\\Delta r_j \\Delta r_{j+1}})`),
  which is biased high when the read noise is several steps wide. A slow model misfit looks
  like a random walk to all three estimators.
- with several devices in the file, each device is fitted alone (same model) and the spread of
  its ``dw_min``, ``up_down``, ``w_max``, ``w_min`` (mapped to the pooled fit's weight units)
  gives ``dw_min_dtod`` (std/mean), ``up_down_dtod`` (std), ``w_max_dtod``/``w_min_dtod``
  (std/|mean|), sample std with ``ddof=1``.

**Layout.** ``models`` (the fittable models, a parameter vector as a
model, the replay), ``data`` (a measurement prepared for fitting),
``objective`` (residuals, Jacobian, ``FitProblem``,
``make_problem``), ``solve`` (least squares, freezing),
``noise`` (cycle-to-cycle and read noise),
``estimates`` (statistics and card entries),
``report`` (``FitResult``, its summary and card) and
``api`` (the entry points).

Example:
  >>> from device_models import load_measurement, fit_auto
  >>> m = load_measurement("gong2018_hfo2_rram_pulses.csv")  # doctest: +SKIP
  >>> best = fit_auto(m)[0]  # doctest: +SKIP
  >>> print(best.to_card_toml("hfo2-fitted"))  # doctest: +SKIP

References:
    Gong et al., "Signal and noise extraction from analog memory elements for neuromorphic
    computing", Nat. Commun. 9, 2102 (2018) (separating cycle-to-cycle from read noise);
    Akaike, IEEE Trans. Autom. Control 19, 716 (1974).
"""

from __future__ import annotations

from .api import fit_auto, fit_model, replay_measurement
from .models import AUTO_CANDIDATES, FITTABLE_MODELS
from .objective import FitProblem, make_problem
from .report import FitResult, ParameterEstimate

__all__ = [
    "AUTO_CANDIDATES",
    "FITTABLE_MODELS",
    "FitProblem",
    "FitResult",
    "ParameterEstimate",
    "fit_auto",
    "fit_model",
    "make_problem",
    "replay_measurement",
]
