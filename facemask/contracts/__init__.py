"""Layer 3, the contracts between processes: the Redis key layout, the stream entry wire
format (frames, detections, dead letters, alert events), the camera registration hash
and the protobuf mapping of the gRPC API (generated code in :mod:`facemask.v1`).

Depends on :mod:`facemask.core` only. Every service speaks through these modules, so a
change of format has one place to happen.
"""
