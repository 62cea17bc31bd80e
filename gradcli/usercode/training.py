"""Training mode, honestly: which modules of the user's model behave
differently in training mode, and how gradcli runs them so that every
backend differentiates the same function.

- **Batch statistics** (``BatchNorm*`` in training mode): each sample is
  normalised with the batch's mean and variance, so samples interact. The
  full Jacobian is that of the training-mode function; per-sample blocks
  would be wrong and are refused. Their running statistics would also be
  updated in place by every call, which torch.func refuses to transform:
  gradcli turns the update off while it runs the model (the output does not
  read the running statistics in training mode, so the function is the same)
  and restores every buffer afterwards.
- **Randomness** (``Dropout*`` in training mode): every call draws a mask.
  gradcli draws it after ``torch.manual_seed(seed)`` at every call (and
  batches with ``vmap(randomness="same")``), so every evaluation and every
  backend sees one and the same mask.
- **Other buffer updates**: any module whose buffers one forward pass
  changes is named (torch.func cannot transform an in-place update of a
  captured buffer); buffers are restored after every call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Modes:
    """What one forward pass revealed. Each entry is ``"name (Class)"``.

    ``coupling``: modules whose batch statistics make samples interact;
    ``random``: modules drawing a random mask; ``updaters``: modules whose
    buffers a forward pass changed (besides running statistics).
    """

    coupling: tuple[str, ...] = ()
    random: tuple[str, ...] = ()
    updaters: tuple[str, ...] = ()

    def notes(self, seed: int) -> tuple[str, ...]:
        notes = []
        if self.coupling:
            notes.append(f"the Jacobian of the TRAINING-mode function: {', '.join(self.coupling)} normalise(s) with "
                         "the batch's statistics, so samples interact (call .eval() on the model in your file for "
                         "the inference-mode function); running statistics are left as they were")
        if self.random:
            notes.append(f"{', '.join(self.random)} in training mode: the result is for ONE dropout mask, drawn after "
                         f"torch.manual_seed({seed}) at every evaluation, the same in every backend (--seed picks "
                         "another mask; .eval() turns dropout off)")
        if self.updaters:
            notes.append(f"{', '.join(self.updaters)} update(s) buffers in forward; gradcli restores them after every "
                         "call, so each evaluation sees the same state")
        return tuple(notes)


def label(name: str, module) -> str:
    return f"{name or 'the model'} ({type(module).__name__})"


def inspect_modes(module, run):
    """Classify ``module``'s submodules; ``run()`` performs one forward pass
    (no_grad), used to see which buffers change. Buffers are restored.
    Returns ``(modes, run's output)``."""
    import torch

    coupling, random = [], []
    for name, sub in module.named_modules():
        if not sub.training:
            continue
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            coupling.append(label(name, sub))
        elif isinstance(sub, torch.nn.modules.dropout._DropoutNd) and sub.p > 0:
            random.append(label(name, sub))
    before = {name: b.detach().clone() for name, b in module.named_buffers()}
    try:
        with torch.no_grad(), running_stats_off(module):
            out = run()
        changed = [name for name, b in module.named_buffers()
                   if name in before and (b.shape != before[name].shape or not torch.equal(b, before[name]))]
    finally:
        restore(module, before)
    owners = dict(module.named_modules())
    updaters = sorted({label(n.rpartition(".")[0], owners[n.rpartition(".")[0]]) for n in changed})
    return Modes(tuple(coupling), tuple(random), tuple(updaters)), out


def restore(module, saved) -> None:
    import torch

    with torch.no_grad():
        for name, b in module.named_buffers():
            if name in saved and b.shape == saved[name].shape:
                b.copy_(saved[name])


@contextmanager
def running_stats_off(module):
    """Batch norm in training mode without the in-place running-statistics
    update (what ``torch.func.replace_all_batch_norm_modules_`` does, undone
    on exit): the output is unchanged, torch.func can transform it."""
    import torch

    switched = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                and m.training and m.track_running_stats]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True


@contextmanager
def pure_call(module, modes: Modes | None, seed: int):
    """Run the user's code as a pure function: one random mask per ``seed``
    (the caller's random state is left untouched), no running-statistics
    update, and buffers that the code updates restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        # The CPU generator itself: torch.manual_seed also queues a lazy CUDA seeding,
        # recording the whole call stack (traceback.format_stack) at every call.
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():  # --device cuda: the tensors are there already
            torch.cuda.manual_seed_all(seed)
        if module is None:
            yield
            return
        saved = {name: b.detach().clone() for name, b in module.named_buffers()} if modes and modes.updaters else None
        try:
            with running_stats_off(module):
                yield
        finally:
            if saved:
                restore(module, saved)


def interaction_message(modes: Modes | None, detail: str = "") -> str:
    """Why per-sample blocks are refused, naming the module and the fix."""
    if modes and modes.coupling:
        who = (f"through {', '.join(modes.coupling)} in training mode (each sample is normalised with the batch's "
               "statistics)")
        fix = ("call .eval() on the model in your file for per-sample blocks, or use --layout full for the "
               "training-mode Jacobian")
    else:  # the code itself mixes samples (a shift or a sum along the batch): no mode to switch off
        who, fix = "in your model", ("use --layout full for the whole Jacobian, with its cross-sample blocks (if a "
                                     "module mixes samples only in training mode, call .eval() on it in your file)")
    return f"--layout blocks: samples interact {who}{detail}, so per-sample blocks would be wrong; {fix}"
