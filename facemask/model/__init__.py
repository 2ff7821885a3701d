"""Layer 2, the model: the detector, its runtimes (TensorFlow, TFLite), the model store
(pinned artifacts, fetch, sha256) and quantization, plus COCO evaluation of a detector.

Depends on :mod:`facemask.core` only. Importing it does not load TensorFlow: a runtime
imports its framework when it is created.
"""
