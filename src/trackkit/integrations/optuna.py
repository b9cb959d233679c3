"""Optuna: ``TrackkitCallback`` logs each trial of ``study.optimize`` as a run.

::

    with trackkit.start_run(name="search"):
        study.optimize(objective, n_trials=20, callbacks=[TrackkitCallback(metric_name="rmse")])

Each finished trial becomes a child run of the active run (see
:func:`trackkit.integrations.start_trial` for backends without nested runs) holding the
trial's params, its value(s), its number and its state: a complete trial ends FINISHED, a
failed one FAILED, a pruned one KILLED with the tag ``pruned=true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trackkit._lazy import import_sdk
from trackkit.errors import InvalidInput
from trackkit.integrations import plain_params, start_trial

__all__ = ["TrackkitCallback"]

_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}


class TrackkitCallback:
    """An Optuna callback (``callbacks=[TrackkitCallback()]``): one run per finished trial.

    Args:
        metric_name: the name of the objective's value; for a multi-objective study, one name
            per objective (a single name gets the suffixes ``_0``, ``_1``...).
        nested: make each trial a child run of the active run.

    Raises:
        MissingDependencyError: optuna is not installed (``pip install 'trackkit[optuna]'``).
    """

    def __init__(self, metric_name: str | Sequence[str] = "value", nested: bool = True) -> None:
        import_sdk("optuna", extra="optuna", purpose="trackkit.integrations.optuna")
        if isinstance(metric_name, str):
            names: tuple[str, ...] = (metric_name,)
        elif isinstance(metric_name, Sequence) and all(isinstance(n, str) for n in metric_name):
            names = tuple(metric_name)
        else:
            raise InvalidInput(f"metric_name must be a string or strings, got {metric_name!r}")
        if not names or not all(names):
            raise InvalidInput("metric_name must name the objective's value")
        self.metric_names = names
        self.nested = nested

    def _names(self, count: int) -> list[str]:
        if len(self.metric_names) == count:
            return list(self.metric_names)
        if len(self.metric_names) == 1:
            return [f"{self.metric_names[0]}_{i}" for i in range(count)]
        raise InvalidInput(
            f"the study has {count} objectives but metric_name names {len(self.metric_names)}"
        )

    def __call__(self, study: Any, trial: Any) -> None:
        state = trial.state.name
        directions = [d.name.lower() for d in study.directions]
        tags: dict[str, Any] = {
            "optuna.study": study.study_name,
            "optuna.trial_number": trial.number,
            "optuna.state": state,
            "optuna.direction": ",".join(directions),
        }
        if state == "PRUNED":
            tags["pruned"] = "true"
        run = start_trial(f"trial-{trial.number}", self.nested, tags)
        try:
            run.log_params(plain_params(trial.params))
            for step, value in sorted(trial.intermediate_values.items()):
                run.log_metric("intermediate_value", float(value), step=int(step))
            if trial.values is not None:
                names = self._names(len(trial.values))
                run.log_metrics(dict(zip(names, trial.values, strict=True)))
        except BaseException:
            run.end("FAILED")
            raise
        run.end(_STATUS.get(state, "FINISHED"))
