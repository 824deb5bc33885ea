"""The inside of an epoch: the compiled multi-step call, the epoch's batches, the running
tally of the loss, and the stop that Ctrl-C asks for (``StopOnInterrupt``): the call in
flight finishes, the loop saves where it stopped (inside the epoch) and raises
``TrainingInterrupted``; ``--resume`` continues from that step, bit-identical to a run that
was never interrupted (the step keys follow the global step number, and the resumed calls start
where the uninterrupted run's do)."""

from __future__ import annotations

import functools
import math
import signal
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import energy
from .config import TrainingError
from .report import non_finite_where
from .state import FlatState

__all__ = ["StopOnInterrupt", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; the message says where and how to resume (a KeyboardInterrupt,
    so that a caller's ``except Exception`` does not swallow it)."""


class StopOnInterrupt:
    """While active (main thread only), the first SIGINT asks the loop to stop after the call in
    flight (one line on stderr); a second one interrupts at once (``KeyboardInterrupt``)."""

    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: finishing the step in flight (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnInterrupt:
        # (main thread only; a process told to ignore SIGINT keeps ignoring it)
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:  # (the previous handler may be None: one installed from C)
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)


def compiled_steps(plain_step, flat: FlatState, k_train: jax.Array):
    """``run(raw, x_all, y_all, idx, mask, n, c0, first_step)``: ``n`` training steps in one
    compiled call (a scan), each with the key folded in from its global step number."""

    @functools.partial(jax.jit, donate_argnums=0, static_argnums=5)
    def run_steps(raw, x_all, y_all, idx_epoch, mask_epoch, n, c0, first_step):
        state = flat.unpack(raw)
        idx_k = jax.lax.dynamic_slice_in_dim(idx_epoch, c0, n)
        mask_k = jax.lax.dynamic_slice_in_dim(mask_epoch, c0, n)

        def body(state, inputs):
            idx, mask, step_no = inputs
            return plain_step(state, x_all, y_all, idx, mask, jax.random.fold_in(k_train, step_no))

        if n == 1:  # one step: no scan (compiles as fast as the plain step)
            state, metrics = body(state, (idx_k[0], mask_k[0], first_step))
            return flat.pack(state), jax.tree.map(lambda a: a[None], metrics)
        steps = first_step + jnp.arange(n)
        state, metrics = jax.lax.scan(body, state, (idx_k, mask_k, steps))
        return flat.pack(state), metrics

    return run_steps


def epoch_batches(key: jax.Array, n: int, bs: int) -> tuple[jax.Array, jax.Array]:
    """The epoch's batches as (steps, batch) index and mask arrays; the last batch is padded,
    and padding rows carry no error and fire no pulse."""
    n_steps = math.ceil(n / bs)
    perm = np.asarray(jax.random.permutation(key, n))
    idx_all = np.zeros(n_steps * bs, perm.dtype)
    idx_all[:n] = perm
    mask_all = np.zeros(n_steps * bs, np.float32)
    mask_all[:n] = 1.0
    return jnp.asarray(idx_all.reshape(n_steps, bs)), jnp.asarray(mask_all.reshape(n_steps, bs))


class _Tally:
    """Loss, accuracy and NaN check of the metrics that come back from compiled calls."""

    def __init__(self, epoch: int, hint: str, saved: dict[str, Any] | None = None):
        self.epoch, self.hint = epoch, hint
        self.seen = self.correct = 0
        self.loss_sum = 0.0
        if saved:  # an epoch resumed where an interrupted run stopped
            self.seen, self.correct, self.loss_sum = saved["seen"], saved["correct"], saved["loss_sum"]

    def to_meta(self) -> dict[str, Any]:
        return {"seen": self.seen, "correct": self.correct, "loss_sum": self.loss_sum}

    def add(self, first_step: int, m: dict[str, np.ndarray], flat: FlatState, raw) -> int:
        bad = np.flatnonzero(~np.isfinite(m["loss"]))
        if bad.size:
            raise TrainingError(
                f"epoch {self.epoch + 1}, step {first_step + int(bad[0]) + 1}: the loss is {m['loss'][bad[0]]}"
                f"{non_finite_where(flat.unpack(raw))}; {self.hint}"
            )
        self.loss_sum += float(np.sum(m["loss"] * m["count"]))
        self.correct += int(np.sum(m["correct"]))
        self.seen += int(np.sum(m["count"]))
        return m["loss"].shape[0]


def run_epoch(run_steps, flat, raw, data_dev, epoch, global_step, opts, prices, bar, resume_at: dict | None, stop):
    """One epoch of compiled calls, from step ``resume_at["step_in_epoch"]`` (with that run's
    tally) when an interrupted epoch is resumed; stops after the current call when ``stop`` is
    set. Returns the packed state, the global step, the tally and the steps of the epoch done."""
    x_all, y_all, idx_dev, mask_dev = data_dev
    n_steps, spc = idx_dev.shape[0], opts["spc"]
    start = resume_at["step_in_epoch"] if resume_at else 0
    tally = _Tally(epoch, opts["hint"], resume_at["tally"] if resume_at else None)
    bar.update(start)
    last_postfix = time.perf_counter()
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    c1 = start
    for c0 in range(start, n_steps, spc):  # calls start where the uninterrupted run's do
        c1 = min(c0 + spc, n_steps)
        raw, metrics = run_steps(raw, x_all, y_all, idx_dev, mask_dev, c1 - c0, c0, global_step)
        pending.append((global_step, metrics))
        global_step += c1 - c0
        # metrics come back (and the progress bar moves) about every 10 steps
        if global_step - pending[0][0] >= 10 or c1 == n_steps or stop.requested:
            bar.update(sum(tally.add(first, m, flat, raw) for first, m in jax.device_get(pending)))
            pending = []
            # the postfix (and pricing the ledger for it) at most twice a second
            if opts["progress"] and (time.perf_counter() - last_postfix > 0.5 or c1 == n_steps):
                last_postfix = time.perf_counter()
                ledger = flat.unpack(raw).ledger
                spent = energy.price_report(energy.host_counts(ledger), prices)["total_j"] if prices else 0.0
                bar.set_postfix(
                    loss=f"{tally.loss_sum / tally.seen:.3f}",
                    acc=f"{tally.correct / tally.seen:.3f}",
                    energy=f"{spent:.3g} J",
                )
        if stop.requested:
            break
    jax.block_until_ready(raw)
    return raw, global_step, tally, c1
