"""Options of the torch_eager backend (the FP32 reference): only the common ones."""

from __future__ import annotations

from ..options import CommonOptions


class TorchEagerOptions(CommonOptions):
    pass
