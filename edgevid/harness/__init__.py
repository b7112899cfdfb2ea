"""Accuracy harness: evaluation against labels and the FP32 reference."""
