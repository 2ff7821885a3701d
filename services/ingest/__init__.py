"""services.ingest package: the edge node that publishes camera frames to Redis Streams.

``sources`` (OpenCV sources, frame-rate cap at the source), ``camera`` (capture thread per
camera: resize, JPEG, frame ids), ``publisher`` (bounded ring buffer, XADD MAXLEN ~,
reconnects), ``registry`` (camera hashes with TTL), ``voice`` (prompt on alerts),
``metrics``, ``config`` (``IngestSettings``) and ``worker`` (wiring, signals). Nothing here
imports TensorFlow or gRPC.
"""
