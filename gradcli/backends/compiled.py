"""compile: the function under ``torch.compile`` (its default backend),
differentiated by classic autograd — the check that compilation does not
change gradients (``check --backends ...,compile``; only when named).

torch.func's transforms do not run through compiled code, so every quantity
here uses ``torch.autograd``: vjp and gradients one backward pass, Jacobians
one backward pass per output entry (small problems; blocks are gathered from
the full Jacobian). Where compilation is not available (no C++ compiler, an
unsupported platform, code dynamo cannot trace) the backend raises
BackendError with torch's reason, and ``check`` lists it as skipped.
"""

from __future__ import annotations

from ..core import rowform
from ..core.errors import BackendError
from ..core.options import BackendName, Layout
from ..problem.problem import Problem
from .autograd import AutogradBackend
from .base import Computed
from .torchbase import to_numpy, torch_errors


class CompiledBackend(AutogradBackend):
    name = BackendName.COMPILE

    def setup(self, problem: Problem):
        torch, F, x0 = super().setup(problem)
        try:
            compiled = torch.compile(F, dynamic=False)
        except Exception as err:  # torch.compile refuses on this platform
            raise BackendError(f"--backend compile: torch.compile is not available here: {_first_line(err)}") from err

        def run(x):
            try:
                return compiled(x)
            except BackendError:
                raise
            except Exception as err:
                if type(err).__module__.startswith("torch._dynamo") or type(err).__module__.startswith("torch._inductor"):
                    raise BackendError(f"--backend compile: torch.compile failed: {_first_line(err)}") from err
                raise

        return torch, run, x0

    def jacobian(self, problem: Problem, layout: Layout) -> Computed:
        torch, F, x0 = self.setup(problem)
        rows = problem.rows
        with torch_errors(self.name.value):
            output = F(x0)
            full = to_numpy(torch.autograd.functional.jacobian(F, x0, vectorize=False))
        if rows is None or rows.reduced or layout is Layout.FULL:
            return Computed(value=full, output=to_numpy(output))
        blocks = rowform.full_to_blocks(full, rows)
        return Computed(value=rows.from_rows(blocks) if layout is Layout.DIAG else blocks, output=to_numpy(output))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]
