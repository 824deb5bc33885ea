"""Helpers shared by the tutorial notebooks (kept beside them: the notebooks import it by name).

Each exercise ends with a check cell that computes the expected answer on its own (a model-free
calculation or a second route to the same number) and calls ``check``. The notebooks ship with
one answer filled in, so that the test suite, which runs every notebook, also checks the checks.
"""

from __future__ import annotations

import numpy as np


def check(answer, expected, *, rtol: float = 0.05, atol: float = 0.0, what: str = "your answer") -> None:
    """Say whether ``answer`` matches ``expected`` within ``rtol``/``atol``; raise if it does not.

    Args:
      answer: the learner's value (a number, an array, a string or a bool).
      expected: the value the check cell computed independently.
      rtol: relative tolerance for numbers.
      atol: absolute tolerance for numbers.
      what: how to name the answer in the message.
    """
    if answer is None or answer is ...:
        raise AssertionError(f"{what}: not answered yet (replace the ... in the cell above)")
    if isinstance(expected, str | bool):
        ok = answer == expected
    else:
        ok = bool(np.allclose(np.asarray(answer, float), np.asarray(expected, float), rtol=rtol, atol=atol))
    if not ok:
        raise AssertionError(f"{what} = {answer!r}; expected {expected!r} (rtol {rtol}, atol {atol})")
    print(f"correct: {what} = {answer!r}")
