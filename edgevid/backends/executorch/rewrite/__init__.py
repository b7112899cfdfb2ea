"""Graph rewrites a target needs, each proven equal to the original in tests.

``rewrite_for_xnnpack`` turns a video model into ops ExecuTorch's XNNPACK delegate takes:
Conv3d -> Conv2d ("taps" or "frames into channels", chosen per layer by ``StrategyChooser``),
BatchNorm3d folded, 3-D pooling and means as rank-4 ops, LayerNorm/matmul/select/expand in
delegable forms. Importing this package needs torch only; ExecuTorch is imported when lowering.
"""

from .choose import StrategyChooser
from .conv3d import STRATEGIES, Conv3dSpec, banded_weight, conv3d_frames, fold_batch_norm, from_frames, to_frames
from .xnnpack import REWRITE_TOLERANCE, RewriteError, Rewritten, check_equal, rewrite_for_xnnpack

__all__ = [
    "REWRITE_TOLERANCE", "STRATEGIES", "Conv3dSpec", "RewriteError", "Rewritten", "StrategyChooser",
    "banded_weight", "check_equal", "conv3d_frames", "fold_batch_norm", "from_frames", "rewrite_for_xnnpack",
    "to_frames",
]
