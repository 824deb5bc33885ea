"""The training half of ``analogsim assess``: short runs of the update rules that answer a
device's usual troubles, and a recommendation with its reasons.

The variants (``VARIANTS``) are plain analog SGD; SGD read against each device's symmetry
point (``reference="symmetry-point"``: an asymmetric device drifts to its symmetry point under
random up/down pulses, so a weight measured from there does not drift); chopped TTv2 (Rasch
et al., arXiv 2303.04721, 2023: the gradient goes to a fast array whose device bias the
choppers average out, and is transferred to the weights); and mixed precision (Nandakumar et
al., Front. Neurosci. 14, 406, 2020: the update is accumulated digitally and written as whole
device steps, which helps a device with few states). Each is ``analogsim.train`` of a
``TrainConfig`` on the built-in ``digits`` set (an MLP, a few epochs).

The variants differ in update rule or reference, which are structural (their training states
are different pytrees), so ``analogsim.parallel``'s sweep, which stacks variants of one
structure, cannot batch them: they run one after another on one loaded dataset. Short runs
understate the transfer rules (chopped TTv2 learns more slowly at first); the report says so.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

from device_models.units import si

from .assess import Assessment
from .data import Dataset, load_dataset
from .training import TrainConfig, TrainingError, train

__all__ = ["VARIANTS", "diagnose_training", "recommend"]

# (label, algorithm, reference)
VARIANTS = (
    ("sgd", "sgd", "zero"),
    ("sgd, symmetry-point reference", "sgd", "symmetry-point"),
    ("chopped-ttv2", "chopped-ttv2", "zero"),
    ("mixed-precision", "mixed-precision", "zero"),
)
# a symmetry point further than this fraction of the range from mid-range: reram-es-gong2018's
# sits 11% below it and 2 epochs of digits gave SGD 0.217, SGD against the symmetry point 0.425
# (analogsim assess reram-es-gong2018 --epochs 2, this machine's CPU)
OFF_CENTRE = 0.1
FEW_STATES = 100  # fewer states than this at the operating pulse
ASYMMETRIC = 0.2  # |asymmetry| above this at mid-range


def _flags(algorithm: str, reference: str) -> str:
    return f"--algorithm {algorithm}" + (f" --reference {reference}" if reference != "zero" else "")


def diagnose_training(
    device: str | Path,
    *,
    epochs: int = 3,
    hidden: tuple[int, ...] = (64,),
    lr: float = 0.1,
    seed: int = 0,
    variants=VARIANTS,
    dataset: Dataset | None = None,
) -> list[dict[str, Any]]:
    """Train each of ``variants`` on card ``device`` (built-in name or TOML path) and report.

    Returns:
      One dict per variant: ``label``, ``algorithm``, ``reference``, ``flags`` (for
      ``analogsim train``), ``test_accuracy`` (last epoch), ``epoch_test_accuracy``,
      ``seconds`` (wall clock, compilation included), ``warnings`` (the distinct warnings of
      the run, each once, without the layer's name), ``error`` (None, or why the run stopped:
      its accuracy is then NaN).

    Raises:
      ConfigError: a setting that ``TrainConfig.validate`` refuses (e.g. a bad card).
    """
    data = dataset if dataset is not None else load_dataset("digits")
    rows = []
    for label, algorithm, reference in variants:
        config = TrainConfig(
            dataset="digits", device=str(device), algorithm=algorithm, reference=reference,
            epochs=epochs, hidden=tuple(hidden), lr=lr, seed=seed,
        )  # fmt: skip
        t0 = time.perf_counter()
        error = None
        with warnings.catch_warnings(record=True) as caught:  # one line each in the report, not per layer
            warnings.simplefilter("always")
            try:
                result = train(config, progress=False, dataset=data)
            except TrainingError as err:  # e.g. a non-finite loss: the variant failed, the others go on
                result, error = {"test_accuracy": math.nan, "epoch_test_accuracy": []}, str(err)
        rows.append(
            {
                "label": label,
                "algorithm": algorithm,
                "reference": reference,
                "flags": _flags(algorithm, reference),
                "test_accuracy": float(result["test_accuracy"]),
                "epoch_test_accuracy": [float(a) for a in result["epoch_test_accuracy"]],
                "seconds": time.perf_counter() - t0,
                "warnings": sorted({str(w.message).split(": ", 1)[-1] for w in caught}),
                "error": error,
            }
        )
    return rows


def _where(a: Assessment, g: float) -> str:
    w = a.weight(g)
    if a.kind == "card" and a.unit == "S":
        return f"w = {w:.2f}"
    return f"w = {g:.2f}" if a.unit == "1" else f"G = {si(g, 'S')}"


def _metric_reasons(a: Assessment) -> tuple[list[str], str]:
    """Reasons read from the figures, and the flags they suggest."""
    f = a.figures
    reasons, flags = [], "--algorithm sgd"
    frac = f["symmetry_fraction"]
    if frac is not None and abs(frac - 0.5) > OFF_CENTRE:
        reasons.append(
            f"the symmetry point sits at {_where(a, f['symmetry_point'])} ({100 * frac:.0f}% of the range, "
            "not mid-range): random up/down pulses pull every weight there, so plain SGD drifts to it"
        )
        flags = "--reference symmetry-point (or --algorithm chopped-ttv2)"
    if f["asymmetry"] is not None and abs(f["asymmetry"]) > ASYMMETRIC:
        bigger = "up" if f["asymmetry"] > 0 else "down"
        reasons.append(f"{bigger} steps are larger at mid-range (asymmetry {f['asymmetry']:+.2f})")
    if f["states"] is not None and f["states"] < FEW_STATES:
        reasons.append(
            f"only {f['states']:.0f} states at the operating pulse: small gradients are lost to the step size; "
            "mixed precision accumulates them digitally"
        )
        if flags == "--algorithm sgd":
            flags = "--algorithm mixed-precision"
    for name in ("up", "down"):
        norm = f[f"a_{name}_norm"]
        if norm is not None and 0 < norm < 0.25:
            reasons.append(f"the {name} branch is strongly nonlinear (NeuroSim A/Pmax {norm:.2f})")
    return reasons, flags


def recommend(a: Assessment, training: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A recommendation with its reasons, from the figures and (if given) the training runs.

    Returns:
      ``{"use": flags for analogsim train, "reasons": [str], "basis": "figures" | "training"}``.
    """
    reasons, flags = _metric_reasons(a)
    if not training:
        if not reasons:
            reasons.append("symmetric steps around mid-range and enough states: plain analog SGD should do")
        return {"use": flags, "reasons": reasons, "basis": "figures"}
    finished = [r for r in training if not math.isnan(r["test_accuracy"])]
    if not finished:
        reasons.append("every training run failed: " + "; ".join(f"{r['label']}: {r['error']}" for r in training))
        return {"use": flags, "reasons": reasons, "basis": "figures"}
    best = max(finished, key=lambda r: r["test_accuracy"])
    sgd = next((r for r in training if r["algorithm"] == "sgd" and r["reference"] == "zero"), None)
    epochs = len(best["epoch_test_accuracy"])
    reasons += [f"{r['label']} stopped: {r['error']}" for r in training if r.get("error")]
    reasons.append(f"{best['label']} reached the best test accuracy, {best['test_accuracy']:.3f}, in {epochs} epochs")
    if sgd is not None and sgd is not best and best["test_accuracy"] - sgd["test_accuracy"] > 0.05:
        reasons.append(f"plain SGD reached only {sgd['test_accuracy']:.3f}")
    slow = [r for r in training if r["algorithm"] == "chopped-ttv2" and r is not best]
    if slow and not math.isnan(slow[0]["test_accuracy"]):
        reasons.append("short runs understate chopped TTv2, which learns more slowly at first")
    return {"use": best["flags"], "reasons": reasons, "basis": "training"}
