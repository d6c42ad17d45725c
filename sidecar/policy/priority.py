"""Priority: a base level per task, escalated by SLA breaches, age, retries and failure
urgency; safety-critical work is always the top level. The score maps to the nearest
level, ties upward (HIGH 8 + SLA breach 1 = 9 → CRITICAL)."""

from __future__ import annotations

from itertools import pairwise

import msgspec

from .durations import format_age, format_duration
from .events import Context
from .model import FailureType, Level, Priority


class Assigned(msgspec.Struct, frozen=True):
    level: Level
    score: float
    factors: tuple[str, ...]  # each factor in words, for the rationale
    sla_breach_tier: str | None = None


def nearest_level(priority: Priority, score: float) -> Level:
    levels = priority.levels  # highest first
    for upper, lower in pairwise(levels):
        if score >= (upper.value + lower.value) / 2:  # the midpoint itself goes up
            return upper
    return levels[-1]


def assign(
    priority: Priority,
    base: Level,
    context: Context,
    failure_type: FailureType | None,
    attempt: int,
    now: float,
) -> Assigned:
    if context.safety_critical:
        level = priority.level(priority.safety_critical_level)
        return Assigned(level, float(level.value), (f"safety-critical → {level.name}",))
    base_level = base
    score = float(base_level.value)
    factors = [f"base {base_level.name} ({base_level.value})"]
    breached = None
    age = context.age(now)
    tier = context.customer_tier
    if tier is not None and age is not None and tier in priority.tier_sla:
        sla = priority.tier_sla[tier]
        if age > sla and priority.sla_breach_boost:
            breached = tier
            score += priority.sla_breach_boost
            factors.append(
                f"SLA breach {tier} {format_age(age)} > {format_duration(sla)} "
                f"(+{priority.sla_breach_boost:g})"
            )
    if age is not None:
        reached = [a for a in priority.aging if age >= a.after]
        if reached and reached[-1].boost:
            score += reached[-1].boost
            factors.append(f"aged {format_age(age)} (+{reached[-1].boost:g})")
    if attempt >= priority.retry_escalation_after and priority.retry_escalation_boost:
        score += priority.retry_escalation_boost
        factors.append(f"{attempt} retries (+{priority.retry_escalation_boost:g})")
    if failure_type is not None and failure_type.urgency:
        score += failure_type.urgency
        factors.append(f"{failure_type.name} urgency ({failure_type.urgency:+g})")
    level = nearest_level(priority, score)
    if level.name != base_level.name:
        factors.append(f"→ {level.name}")
    return Assigned(level, score, tuple(factors), breached)
