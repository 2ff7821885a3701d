"""The training losses (TensorFlow): SSD multibox loss and the distillation term.

**Multibox** (labelled images): the classifier is the upstream model's - two independent
sigmoid outputs per anchor (``mask``, ``no_mask``), background being both low - so the
class loss is sigmoid cross-entropy on the two logits against the one-hot target (all
zeros for background). Every positive anchor counts; of the background anchors only the
hardest, :data:`NEGATIVES_PER_POSITIVE` (3) per positive of the same image (at least
:data:`MIN_NEGATIVES` in an image without faces), so the thousands of easy background
anchors do not drown the faces. The box loss is smooth-L1 on the encoded offsets of the
positives. Both are summed and divided by the number of positives in the batch.

**Distillation** (unlabelled frames): the student's outputs against the upstream
model's on the same frames - a KL term on every anchor's two sigmoid outputs (zero when
equal) and smooth-L1 on the offsets of the anchors the teacher finds a face at (score >
:data:`TEACHER_FACE_SCORE`), divided by the number of those anchors. It keeps the boxes
and scores on footage the upstream model already handles where they were, so that the
fine-tune learns the new data without forgetting the conventions it knew (the trap of
issue 16: a fine-tune on tightly drawn boxes lost 0.14 AP50 on loosely drawn ones).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

NEGATIVES_PER_POSITIVE = 3
MIN_NEGATIVES = 8
TEACHER_FACE_SCORE = 0.5
_EPS = 1e-6


def smooth_l1(diff: tf.Tensor) -> tf.Tensor:
    """Element-wise smooth-L1 (Huber with delta 1)."""
    absolute = tf.abs(diff)
    return tf.where(absolute < 1.0, 0.5 * diff * diff, absolute - 0.5)


def _sigmoid_ce(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross-entropy summed over the class axis: ``[B, A]``."""
    return tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1
    )


def multibox_loss(
    loc_target: tf.Tensor,
    cls_target: tf.Tensor,
    loc_pred: tf.Tensor,
    cls_logits: tf.Tensor,
    *,
    negatives_per_positive: int = NEGATIVES_PER_POSITIVE,
    min_negatives: int = MIN_NEGATIVES,
) -> dict[str, tf.Tensor]:
    """``{"loc", "cls", "positives"}`` of a batch: targets ``loc [B, A, 4]``, ``cls [B, A]``
    (int: -1 ignore, 0 background, 1 + class) and predictions ``loc [B, A, 4]``,
    ``cls_logits [B, A, 2]``. The losses are scalars normalised by the positives."""
    cls_target = tf.cast(cls_target, tf.int32)
    num_classes = tf.shape(cls_logits)[-1]
    positive = cls_target > 0
    negative = tf.equal(cls_target, 0)
    onehot = tf.one_hot(tf.maximum(cls_target - 1, 0), num_classes, dtype=cls_logits.dtype)
    onehot = onehot * tf.cast(positive, cls_logits.dtype)[..., None]
    ce = _sigmoid_ce(onehot, cls_logits)  # [B, A]
    num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)  # [B]
    num_neg = tf.maximum(num_pos * negatives_per_positive, min_negatives)
    num_neg = tf.minimum(num_neg, tf.reduce_sum(tf.cast(negative, tf.int32), axis=1))
    # rank of every background anchor by its loss (0 = hardest), per image
    neg_ce = tf.where(negative, ce, tf.fill(tf.shape(ce), tf.constant(-1.0, ce.dtype)))
    order = tf.argsort(neg_ce, axis=1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=1, stable=True)
    hard = negative & (rank < num_neg[:, None])
    total_pos = tf.maximum(tf.cast(tf.reduce_sum(num_pos), ce.dtype), 1.0)
    selected = tf.cast(positive | hard, ce.dtype)
    cls_loss = tf.reduce_sum(tf.stop_gradient(selected) * ce) / total_pos
    loc_elem = tf.reduce_sum(smooth_l1(loc_pred - tf.cast(loc_target, loc_pred.dtype)), axis=-1)
    loc_loss = tf.reduce_sum(loc_elem * tf.cast(positive, loc_elem.dtype)) / total_pos
    return {"loc": loc_loss, "cls": cls_loss, "positives": total_pos}


def distillation_loss(
    teacher_loc: tf.Tensor,
    teacher_cls: tf.Tensor,
    loc_pred: tf.Tensor,
    cls_logits: tf.Tensor,
    *,
    face_score: float = TEACHER_FACE_SCORE,
) -> dict[str, tf.Tensor]:
    """``{"loc", "cls"}`` of the student (``loc_pred``, ``cls_logits``) against the
    teacher's raw outputs (``teacher_loc [B, A, 4]``, probabilities ``teacher_cls
    [B, A, 2]``), normalised by the anchors where the teacher sees a face (at least 1)."""
    p = tf.clip_by_value(tf.cast(teacher_cls, cls_logits.dtype), _EPS, 1.0 - _EPS)
    teacher_entropy = -(p * tf.math.log(p) + (1.0 - p) * tf.math.log(1.0 - p))
    kl = tf.nn.sigmoid_cross_entropy_with_logits(labels=p, logits=cls_logits) - teacher_entropy
    face = tf.reduce_max(p, axis=-1) > face_score  # [B, A]
    count = tf.maximum(tf.reduce_sum(tf.cast(face, kl.dtype)), 1.0)
    cls_loss = tf.reduce_sum(kl) / count
    loc_elem = tf.reduce_sum(smooth_l1(loc_pred - tf.cast(teacher_loc, loc_pred.dtype)), axis=-1)
    loc_loss = tf.reduce_sum(loc_elem * tf.cast(face, loc_elem.dtype)) / count
    return {"loc": loc_loss, "cls": cls_loss}


def loss_summary(values: dict[str, Any]) -> dict[str, float]:
    """Scalars of a loss dict as floats (for logs and the progress bar)."""
    return {key: float(value) for key, value in values.items()}
