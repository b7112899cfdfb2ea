"""edgevid: ship PyTorch video-recognition models to edge targets, quantized and measured."""

__version__ = "0.1.0"
