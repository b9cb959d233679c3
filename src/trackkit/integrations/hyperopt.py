"""hyperopt: ``tracked(objective)`` logs each evaluation of ``fmin`` as a run.

::

    with trackkit.start_run(name="search"):
        fmin(fn=tracked(objective), space=space, algo=tpe.suggest, max_evals=50,
             trials=Trials())

Each evaluation runs inside a child run of the active run (see
:func:`trackkit.integrations.start_trial` for backends without nested runs), which is the
active run while the objective runs, so ``trackkit.log_metric`` inside it logs to the trial.
The run holds the sampled params and the loss; a failed evaluation (an exception, or
``{"status": "fail"}``) ends FAILED.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from trackkit._lazy import import_sdk
from trackkit.errors import InvalidInput
from trackkit.integrations import plain_params, start_trial

__all__ = ["tracked"]


def tracked(
    objective: Callable[..., Any],
    metric: str = "loss",
    nested: bool = True,
    run_name: str = "trial-",
) -> Callable[..., Any]:
    """Wrap a hyperopt objective so that each evaluation is logged as a run.

    Args:
        objective: the function ``fmin`` calls with the sampled params; it returns the loss,
            or a dict with ``"loss"`` and ``"status"`` (hyperopt's conventions).
        metric: the name the loss is logged under.
        nested: make each evaluation a child run of the run active when ``fmin`` runs.
        run_name: each run is named this prefix and the evaluation's number (``trial-0``...).

    Raises:
        MissingDependencyError: hyperopt is not installed (``pip install 'trackkit[hyperopt]'``).
    """
    hyperopt = import_sdk("hyperopt", extra="hyperopt", purpose="trackkit.integrations.hyperopt")
    if not callable(objective):
        raise InvalidInput(f"objective must be callable, got {type(objective).__name__}")
    if not isinstance(metric, str) or not metric:
        raise InvalidInput(f"metric must be a non-empty string, got {metric!r}")
    counter = [0]

    @functools.wraps(objective)
    def evaluate(params: Any) -> Any:
        number = counter[0]
        counter[0] += 1
        run = start_trial(f"{run_name}{number}", nested, {"hyperopt.evaluation": number})
        try:
            if isinstance(params, Mapping):
                run.log_params(plain_params(params))
            else:
                run.log_params({"params": str(params)})
            result = objective(params)
        except BaseException:
            run.end("FAILED")
            raise
        status = "FINISHED"
        loss = result
        if isinstance(result, Mapping):
            loss = result.get("loss")
            if result.get("status") == hyperopt.STATUS_FAIL:
                status = "FAILED"
        try:
            if isinstance(loss, (int, float)) or hasattr(loss, "item"):
                run.log_metric(metric, float(loss))
        finally:
            run.end(status)
        return result

    return evaluate
