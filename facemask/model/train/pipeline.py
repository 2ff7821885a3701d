"""The input pipelines of training (``tf.data``).

Labelled images are decoded once (:func:`facemask.model.train.data.load_dataset`: the
in-memory cache); each epoch a seeded permutation of them flows through a parallel map
that augments an image and matches its faces to the anchors (numpy + OpenCV inside
``tf.numpy_function``; OpenCV releases the GIL), then batches (the last, incomplete batch
is dropped so every step has the same shape and the step function is traced once) and a
prefetch that overlaps the next batch with the training step.

Every random choice comes from a generator seeded with ``(seed, epoch, index)``, so an
epoch's batches are the same whatever the parallelism, and a resumed run sees exactly the
batches an uninterrupted one would have seen.

Distillation frames come with the teacher's outputs, computed once up front on the frame
and on its mirror image; each step draws :attr:`DistillData.batch_size` of them (seeded
the same way), the student seeing them with photometric jitter only (the teacher's boxes
stay valid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from facemask.core.preprocess import preprocess
from facemask.model.native import import_tensorflow
from facemask.model.train.augment import NO_AUGMENT, AugmentConfig, augment, photometric
from facemask.model.train.data import LabeledImage
from facemask.model.train.targets import match_anchors

_LABELLED_STREAM = 0
_DISTILL_STREAM = 1


def sample_rng(seed: int, stream: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample (``stream`` separates labelled and distillation draws)."""
    return np.random.default_rng([seed, stream, epoch, index])


@dataclass
class LabelledData:
    """The labelled images, the anchors and how to make one training sample."""

    images: Sequence[LabeledImage]
    anchors: np.ndarray
    input_size: int
    augment: AugmentConfig
    seed: int

    def sample(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``[S, S, 3]`` float32, box targets ``[A, 4]`` float32 and class targets
        ``[A]`` int32 of image ``index`` in ``epoch``."""
        item = self.images[index]
        rng = sample_rng(self.seed, _LABELLED_STREAM, epoch, index)
        image, boxes, labels = augment(
            item.rgb, item.boxes, item.labels, rng, self.input_size, self.augment
        )
        loc, cls = match_anchors(self.anchors, boxes, labels)
        return image, loc, cls

    def order(self, epoch: int) -> np.ndarray:
        """The images of ``epoch`` in their (seeded) shuffled order."""
        return np.random.default_rng([self.seed, 2, epoch]).permutation(len(self.images))

    def steps(self, batch_size: int) -> int:
        """Steps of one epoch (the incomplete last batch dropped; at least one)."""
        return max(1, len(self.images) // batch_size)

    def dataset(self, epoch: int, batch_size: int) -> object:
        """The ``tf.data.Dataset`` of ``epoch``: batches ``(images, loc, cls)``."""
        tf = import_tensorflow()
        size, count = self.input_size, len(self.anchors)
        batch = min(batch_size, len(self.images))
        order = self.order(epoch)[: self.steps(batch_size) * batch]

        def make(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return self.sample(epoch, int(index))

        def mapped(index: object) -> tuple[object, object, object]:
            image, loc, cls = tf.numpy_function(
                make, [index], (tf.float32, tf.float32, tf.int32), stateful=False
            )
            image.set_shape((size, size, 3))
            loc.set_shape((count, 4))
            cls.set_shape((count,))
            return image, loc, cls

        return (
            tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
            .map(mapped, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )


def model_input(rgb: np.ndarray, input_size: int) -> np.ndarray:
    """The model input of a frame (resize, RGB in [0, 1]) as inference makes it."""
    return preprocess(rgb, (input_size, input_size))


Teacher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Raw outputs ``(loc [B, A, 4], cls [B, A, 2])`` of the teacher on a model-input batch."""


@dataclass
class DistillData:
    """Unlabelled frames (each also mirrored) and the teacher's outputs on them."""

    inputs: np.ndarray
    """float32 ``[2F, S, S, 3]``: every frame, then every frame mirrored."""
    teacher_loc: np.ndarray
    teacher_cls: np.ndarray
    batch_size: int
    seed: int
    jitter: AugmentConfig

    @classmethod
    def build(
        cls,
        frames: Sequence[np.ndarray],
        teacher: Teacher,
        *,
        input_size: int,
        batch_size: int,
        seed: int,
        jitter: AugmentConfig,
        teacher_batch: int = 16,
    ) -> DistillData:
        """Teacher outputs on ``frames`` and their mirror images (``teacher_batch`` per call)."""
        plain = [model_input(frame, input_size) for frame in frames]
        inputs = np.stack(plain + [np.ascontiguousarray(x[:, ::-1]) for x in plain])
        locs, clss = [], []
        for start in range(0, len(inputs), teacher_batch):
            loc, score = teacher(inputs[start : start + teacher_batch])
            locs.append(np.asarray(loc, dtype=np.float32))
            clss.append(np.asarray(score, dtype=np.float32))
        photometric = replace(
            NO_AUGMENT,
            brightness=jitter.brightness,
            contrast=jitter.contrast,
            saturation=jitter.saturation,
            color_cast=jitter.color_cast,
        )
        return cls(
            inputs, np.concatenate(locs), np.concatenate(clss), batch_size, seed, photometric
        )

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distillation batch of one step: jittered inputs, teacher loc and cls."""
        rng = sample_rng(self.seed, _DISTILL_STREAM, epoch, step)
        picks = rng.choice(len(self.inputs), size=self.batch_size, replace=True)
        jittered = np.stack([photometric(self.inputs[i], rng, self.jitter) for i in picks.tolist()])
        return jittered, self.teacher_loc[picks], self.teacher_cls[picks]

    def dataset(self, epoch: int, steps: int) -> object:
        """The ``tf.data.Dataset`` of ``epoch``'s ``steps`` distillation batches."""
        tf = import_tensorflow()
        size = self.inputs.shape[1]
        count = self.teacher_loc.shape[1]

        def make(step: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return self.batch(epoch, int(step))

        def mapped(step: object) -> tuple[object, object, object]:
            images, loc, score = tf.numpy_function(
                make, [step], (tf.float32, tf.float32, tf.float32), stateful=False
            )
            images.set_shape((self.batch_size, size, size, 3))
            loc.set_shape((self.batch_size, count, 4))
            score.set_shape((self.batch_size, count, 2))
            return images, loc, score

        return (
            tf.data.Dataset.range(steps)
            .map(mapped, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )
