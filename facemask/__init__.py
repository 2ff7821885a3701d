"""facemask: distributed multi-camera face-mask detection (shared library code)."""

__version__ = "0.1.0"
