"""The alert rule, as pure functions over a track's recent observations.

A face *counts* as unmasked when its label is ``no_mask``, its score is at least
``min_score`` and the smaller side of its box is at least ``min_face`` pixels. A track
*violates* the rule when at least ``k`` of its last ``n`` observations count. An alert is
raised for a violating track when

- the current observation counts (the snapshot shows the bare face),
- the track has not alerted before (one alert per person track and violation: a track
  that alerted is re-armed once it is clearly masked again - ``k`` of its last ``n``
  faces masked - so putting the mask on and later taking it off alerts again), and
- the camera's last alert is at least ``cooldown`` seconds old (capture time). A track
  held back by the cooldown is not marked: it alerts when the cooldown ends if it still
  violates the rule then.

So a masked person never alerts, a flicker of fewer than ``k`` unmasked frames in ``n``
never alerts, and a person who takes the mask off alerts once their last ``n`` frames
hold ``k`` unmasked ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from itertools import islice
from typing import Any

from services.alerts.tracker import Observation, Track


@dataclass(frozen=True, slots=True)
class Rule:
    """Thresholds of the rule for one camera."""

    k: int = 5
    n: int = 8
    min_score: float = 0.6
    min_face: int = 24
    cooldown: float = 30.0

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
        }


class Decision(Enum):
    """Outcome of evaluating one track at one frame."""

    NONE = "none"  # not violating, or the current face does not count
    ALREADY = "already_alerted"
    COOLDOWN = "cooldown"
    ALERT = "alert"


def counts(obs: Observation, rule: Rule) -> bool:
    """True when the face counts as unmasked for the rule."""
    return obs.label == "no_mask" and obs.score >= rule.min_score and obs.size >= rule.min_face


def unmasked_in_window(history: Iterable[Observation], rule: Rule) -> int:
    """How many of the last ``n`` observations (newest last) count as unmasked."""
    recent = list(history)[-rule.n :]
    return sum(1 for obs in recent if counts(obs, rule))


def violates(history: Iterable[Observation], rule: Rule) -> bool:
    """At least ``k`` of the last ``n`` observations count as unmasked."""
    return unmasked_in_window(history, rule) >= rule.k


def complies(history: Iterable[Observation], rule: Rule) -> bool:
    """At least ``k`` of the last ``n`` observations are confidently masked faces."""
    recent = list(history)[-rule.n :]
    masked = sum(
        1
        for obs in recent
        if obs.label == "mask" and obs.score >= rule.min_score and obs.size >= rule.min_face
    )
    return masked >= rule.k


def evaluate(track: Track, rule: Rule, ts: float, last_alert_ts: float | None) -> Decision:
    """Whether ``track``, just observed at capture time ``ts``, raises an alert now."""
    if not track.history or not counts(track.last, rule):
        return Decision.NONE
    if not violates(track.history, rule):
        return Decision.NONE
    if track.alerted:
        return Decision.ALREADY
    if last_alert_ts is not None and ts - last_alert_ts < rule.cooldown:
        return Decision.COOLDOWN
    return Decision.ALERT


def best_score(track: Track, rule: Rule) -> float:
    """Highest unmasked score among the last ``n`` observations (the alert's score)."""
    recent = list(islice(reversed(track.history), rule.n))
    return max((o.score for o in recent if counts(o, rule)), default=0.0)


def rule_for(camera_id: str, default: Rule, overrides: Mapping[str, Mapping[str, Any]]) -> Rule:
    """The default rule with the camera's overrides (keys whose value is None ignored)."""
    override = overrides.get(camera_id)
    if not override:
        return default
    changes = {k: v for k, v in override.items() if v is not None}
    return replace(default, **changes)
