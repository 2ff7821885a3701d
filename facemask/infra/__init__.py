"""Layer 4, shared infrastructure of the services: settings base, logging, Redis
connection, the stream-group consumer, background workers with a clean stop, back-off,
signal handling, the metrics server and the gRPC client.

Depends on the layers below (:mod:`facemask.contracts`, :mod:`facemask.model`,
:mod:`facemask.core`); never on :mod:`services`.
"""
