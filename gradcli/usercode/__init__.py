"""Your code as FUNCTION: ``PATH.py:NAME``, TorchScript ``.pt`` and ``torch.export``
``.pt2`` files loaded and called as a catalogue-like Function.

- ``function``: loading (your file's own folder and sibling modules, stdout kept
  clean, torch modes restored), UserFunction and UserBound.
- ``signature``: how -x, -t and --arg reach your callable.
- ``outputs``: ``--select``, the tensor to differentiate in a tuple, dict, dataclass or ModelOutput.
- ``weights``: ``--weights`` loaded into your module, strictly (read by :mod:`gradcli.io.checkpoints`).
- ``submodules``: ``--wrt act:MODULE``, a submodule's output as the argument; the submodules' shapes.
- ``precision``: your code's working precision, for the tolerances that decide a refusal.
- ``pt2_guard``: a ``.pt2`` inspected before loading: nothing is ever unpickled.
- ``training``: modules in training mode, run the same way by every backend.
- ``independence``: do the samples of a batch interact (per-sample blocks)?
- ``activations``: the activation bytes of one forward pass, measured.

Imports from :mod:`gradcli.core`, :mod:`gradcli.io` and :mod:`gradcli.catalogue` (the
Function interface); torch only inside the functions that run your code.
"""
