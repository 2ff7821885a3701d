"""Which batch sizes the service warms up before it reports SERVING."""

from __future__ import annotations

from types import SimpleNamespace

from services.inference.service import warmup_sizes


def test_every_batch_size_the_batcher_can_form_is_warmed() -> None:
    unbounded = SimpleNamespace(max_batch_size=None)  # TensorFlow: any batch in one call
    assert warmup_sizes(32, unbounded) == tuple(range(1, 33))
    assert warmup_sizes(1, unbounded) == (1,)


def test_large_batches_warm_every_size_to_64_then_the_largest() -> None:
    sizes = warmup_sizes(256, SimpleNamespace(max_batch_size=None))
    assert sizes == (*range(1, 65), 256)


def test_a_runtime_batch_limit_caps_the_sizes() -> None:
    assert warmup_sizes(32, SimpleNamespace(max_batch_size=4)) == (1, 2, 3, 4)
    assert warmup_sizes(32, object()) == tuple(range(1, 33))  # no attribute: unbounded
