"""The alert rule, as pure functions over a track's recent observations.

A face *counts* as unmasked when its label is ``no_mask``, its score is at least
``min_score`` and the smaller side of its box is at least ``min_face`` pixels (faces
dropped by the camera's ignore masks or include zones never reach a track:
:mod:`services.alerts.zones`). A track (one person, :mod:`services.alerts.tracker`)
*violates* the rule when at least ``k`` of its last ``n`` observations count. A violating
track raises an alert when

- the current observation counts (the snapshot shows the bare face),
- the track has not alerted before, or was *re-armed* since its last alert: ``k`` of its
  last ``n`` faces confidently masked (same ``min_score`` and ``min_face``), so putting
  the mask on and later taking it off is a new violation, and
- its own last alert is at least ``cooldown`` seconds old (capture time). A track held
  back by its cooldown is not marked (counted in ``facemask_alerts_suppressed_total``):
  it alerts when its cooldown ends if it still violates the rule then.

Nothing of one track holds another back: every violating person gets an alert. With a
``group_window`` > 0 (per camera; default 0 = off) the tracks of one camera that raise
an alert within ``group_window`` seconds of the first one are merged into ONE alert
that names them all (``violators``, ``track_ids``), sent when the window closes (the
camera's first entry at or after its end); see :class:`services.alerts.engine.AlertEngine`.

So a masked person never alerts, a flicker of fewer than ``k`` unmasked frames in ``n``
never alerts, a person who takes the mask off alerts once their last ``n`` frames hold
``k`` unmasked ones, and a person who keeps taking it off alerts at most once every
``cooldown`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np

from facemask.core.types import LABEL_IDS, Detections
from services.alerts.tracker import Track

MASK = LABEL_IDS["mask"]
NO_MASK = LABEL_IDS["no_mask"]


@dataclass(frozen=True, slots=True)
class Rule:
    """Thresholds of the rule for one camera."""

    k: int = 5
    n: int = 8
    min_score: float = 0.6
    min_face: int = 24
    cooldown: float = 5.0  # seconds between two alerts of one track
    group_window: float = 0.0  # seconds: violators starting within it share one alert

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"need 1 <= k <= n, got k={self.k}, n={self.n}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "k": self.k,
            "n": self.n,
            "min_score": self.min_score,
            "min_face": self.min_face,
            "cooldown": self.cooldown,
            "group_window": self.group_window,
        }


class Decision(Enum):
    """Outcome of evaluating one track at one frame."""

    NONE = "none"  # not violating, or the current face does not count
    ALREADY = "already_alerted"
    COOLDOWN = "cooldown"  # violating, but its own last alert is too recent
    ALERT = "alert"


def eligible(faces: Detections, size: tuple[int, int], rule: Rule) -> np.ndarray:
    """Boolean ``[N]``: faces (of a ``size`` frame) at ``min_score`` and ``min_face``."""
    return (faces.scores >= rule.min_score) & (faces.min_sides(*size) >= rule.min_face)


def counting(faces: Detections, size: tuple[int, int], rule: Rule) -> np.ndarray:
    """Boolean ``[N]``: which faces (of a ``size`` frame) count as unmasked for the rule."""
    return eligible(faces, size, rule) & (faces.class_ids == NO_MASK)


def confidently_masked(faces: Detections, size: tuple[int, int], rule: Rule) -> np.ndarray:
    """Boolean ``[N]``: which faces are masked, above ``min_score`` and ``min_face``."""
    return eligible(faces, size, rule) & (faces.class_ids == MASK)


def unmasked_in_window(track: Track, rule: Rule) -> int:
    """How many of the track's last ``n`` faces count as unmasked."""
    return int(counting(track.history[-rule.n :], track.size, rule).sum())


def violates(track: Track, rule: Rule) -> bool:
    """At least ``k`` of the last ``n`` faces count as unmasked."""
    return unmasked_in_window(track, rule) >= rule.k


def complies(track: Track, rule: Rule) -> bool:
    """At least ``k`` of the last ``n`` faces are confidently masked."""
    return int(confidently_masked(track.history[-rule.n :], track.size, rule).sum()) >= rule.k


def evaluate(track: Track, rule: Rule, ts: float) -> Decision:
    """Whether ``track``, just observed at capture time ``ts``, raises an alert now
    (the caller re-arms it first when it :func:`complies`)."""
    if not len(track.history) or not counting(track.last, track.size, rule)[0]:
        return Decision.NONE
    if not violates(track, rule):
        return Decision.NONE
    if track.alerted:
        return Decision.ALREADY
    if track.last_alert_ts is not None and ts - track.last_alert_ts < rule.cooldown:
        return Decision.COOLDOWN
    return Decision.ALERT


def best_score(track: Track, rule: Rule) -> float:
    """Highest unmasked score among the last ``n`` observations (the alert's score)."""
    recent = track.history[-rule.n :]
    scores = recent.scores[counting(recent, track.size, rule)]
    return float(scores.max()) if scores.size else 0.0


def rule_for(camera_id: str, default: Rule, overrides: Mapping[str, Mapping[str, Any]]) -> Rule:
    """The default rule with the camera's overrides (keys whose value is None ignored)."""
    override = overrides.get(camera_id)
    if not override:
        return default
    changes = {k: v for k, v in override.items() if v is not None}
    return replace(default, **changes)
