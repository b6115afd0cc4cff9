"""Cutoff policies: how the MQL and SQL cutoffs are chosen from a business target.

One module per policy in this package, each defining a :class:`Policy` subclass with its
``name``, the check of its targets and how it chooses the two cutoffs; modules are found by
name, so **adding a policy is adding one module here**. :mod:`leadscore.modeling.cutoffs`
runs them (validation in :class:`~leadscore.modeling.cutoffs.CutoffPolicy`, choosing in
:func:`~leadscore.modeling.cutoffs.choose_cutoffs`) and reports the result.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

EV_FIELDS = ("value_per_sql", "mql_cost", "sql_cost")


class CutoffError(ValueError):
    """A cutoff policy that is invalid, or that cannot be met on the data it is chosen on."""


@dataclass
class Choice:
    """What a policy chooses from, on the frame the cutoffs are chosen on.

    ``sorted``: the examples by ``p`` (``candidates()`` gives the distinct values of p and,
    for each, the examples and positives at or above it; ``n``, ``positives``);
    ``arrivals()``: the new-leads-per-week counter (built on first use); ``scale``: leads per
    example. With sampling weights every one of these counts is a sum of weights (a float), so a
    policy that works from them alone chooses as on the full population without knowing of
    weights; ``probability``: the name of p in messages; ``notes`` / ``fell_back``: where a
    target could not be met and what was chosen instead.
    """

    sorted: Any
    arrivals_of: Any
    scale: float
    probability: str = "p_sql"
    notes: list[str] = field(default_factory=list)
    fell_back: list[str] = field(default_factory=list)

    @functools.cached_property
    def arrivals(self):
        return self.arrivals_of()


class Policy:
    """A cutoff policy. ``needs_data``: False when the cutoffs follow from the config alone."""

    name: str = ""
    needs_data: bool = True

    def check(self, cfg) -> None:
        """Refuse (:class:`CutoffError`) targets this policy cannot use; may fill defaults
        through ``cfg._set``. ``cfg``: the :class:`~leadscore.modeling.cutoffs.CutoffPolicy`."""

    def choose(self, cfg, choice: Choice | None) -> dict[str, float]:
        """``{"mql": cutoff, "sql": cutoff}``; ``choice`` is None when not ``needs_data``."""
        raise NotImplementedError


def no_value_fields(cfg) -> None:
    given = [name for name in EV_FIELDS if getattr(cfg, name) is not None]
    if given:
        raise CutoffError(f"{', '.join(given)}: only used by policy expected_value, not {cfg.policy}; "
                          "remove them or set policy: expected_value")


def both_targets(cfg) -> None:
    missing = [name for name in ("mql", "sql") if getattr(cfg, name) is None]
    if missing:
        raise CutoffError(f"policy {cfg.policy} needs both an mql and an sql target; missing: {', '.join(missing)}")


@functools.cache
def registry() -> dict[str, Policy]:
    """Every policy of this package by name, in name order."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Policy) and value is not Policy and value.name:
                found[value.name] = value()
    return dict(sorted(found.items()))


def names() -> tuple[str, ...]:
    return tuple(registry())


def policy_named(name) -> Policy:
    if not isinstance(name, str) or name not in registry():
        raise CutoffError(f"policy must be one of {', '.join(names())}, got {name!r}")
    return registry()[name]
