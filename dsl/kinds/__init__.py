"""The norm kinds: what a kind is (``Kind``) and the registered ones (``NAMES``).

A kind is the norm's own mathematics, in two files of this folder named after
it (its spec word, ``norm = NAME``):

* ``NAME.py`` holds ``KIND``, a ``Kind``: its default eps, whether it computes a
  row mean (its statistics are then mean and rstd, else rstd alone: the
  outputs, the ABI and the saved statistics follow), the settings it refuses,
  and the words the docstrings and kernel comments print.
* ``NAME.jinja`` holds its math as named Jinja macros, which the shared
  templates call by name and nowhere else (``dsl/templates/kernel_macros.jinja`` and
  ``backward_macros.jinja`` for the kernels, ``reference.py.jinja`` for the PyTorch reference):

  ``statistics_single(f)``    forward, a row in one tile: rstd (and mean) of s, the
                              fp32 tile (0 in padding columns unless EVEN_N)
  ``statistics_multi(f, readback, hint)``  forward, wide rows: the same, over column
                              blocks (each a ``m.stats_pass`` call block, passed the hint:
                              the eviction policy of these passes' loads)
  ``x_hat(f, rounded)``       x_hat from s and the statistics (rounded: casting none,
                              each step in the input dtype)
  ``backward_terms_single(f)`` the backward's row terms from g = dy * w and x_hat
  ``backward_terms_multi(f, hint)``  the same over column blocks (``m.backward_pass``,
                              passed the hint)
  ``backward_dx(f)``          dx from g, x_hat, the row terms and rstd
  ``reference_statistics(f)`` and ``reference_x_hat(f, rounded)``: the same in PyTorch
                              (its autograd is the CPU backward)

The shared templates own everything else: loads and stores, the residual add,
the weight (with its offset) and bias (``affine``), the casting modes'
rounding of the output, quantization, the loops and the partial sums of dw and
db. Adding a kind: these two files and its name in ``NAMES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

# The registered kinds, in the order messages list them.
NAMES = ("rms", "layer")


@dataclass(frozen=True)
class Refusal:
    """A setting the kind does not allow: when ``applies(spec)``, the checker reports
    ``message`` and ``hint`` at the setting ``key``."""

    key: str
    applies: Callable[[object], bool]
    message: str
    hint: str


@dataclass(frozen=True)
class Kind:
    name: str  # its spec word: norm = NAME
    noun: str  # in messages: "an RMS norm"
    default_eps: float
    has_mean: bool  # it computes a row mean: its statistics are mean and rstd, else rstd alone
    formula: str  # the normalized value of {v}, for docstrings: "{v} / sqrt(mean({v}^2) + eps)"
    eps_added_to: str  # the op's docstring: eps is added to the ... before the square root
    first_pass_sums: str  # what the multi-pass forward's first pass accumulates (a kernel comment)
    statistics_passes: int  # column loops of statistics_multi (rms: 1; layer: 2, mean then variance)
    refusals: tuple[Refusal, ...] = ()

    @property
    def template(self) -> str:
        """Its macros, as the shared templates import them."""
        return f"kinds/{self.name}.jinja"


KINDS: dict[str, Kind] = {name: importlib.import_module(f"{__name__}.{name}").KIND for name in NAMES}
