"""Autologging: each ``fit`` of scikit-learn, xgboost and LightGBM logs into the active run.

``trackkit.autolog()`` patches training functions so that each outermost fit logs the
estimator's params, its training metrics (as MLflow's autologging computes them), the
per-round evaluation metrics of xgboost and LightGBM (each at its round as the step) and the
fitted model with a signature inferred from the training input. It works through the
Tracker/Run API only, so it behaves the same on every backend. See ``docs/autolog.md``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from trackkit.errors import TrackkitError, TrackkitWarning

if TYPE_CHECKING:
    from trackkit.run import Run

__all__ = ["autolog", "is_enabled"]

_lock = threading.Lock()
#: (owner, attribute, original) of every patch in place, so disabling restores them exactly
_patches: list[tuple[Any, str, Any]] = []
_options = {"log_models": True}
# Fits in progress. Process-wide, not per thread: a search or an ensemble runs its inner fits
# in worker threads (joblib), and those must log nothing of their own either.
_depth = 0
_depth_lock = threading.Lock()


def is_enabled() -> bool:
    """Whether any training function is patched now."""
    with _lock:
        return bool(_patches)


def autolog(
    *,
    sklearn: bool = True,
    xgboost: bool = True,
    lightgbm: bool = True,
    log_models: bool = True,
    disable: bool = False,
) -> None:
    """Log every training run of scikit-learn, xgboost and LightGBM into the active run.

    Each outermost ``fit`` (a Pipeline's inner fits and a search's many fits log nothing of
    their own) logs into ``trackkit.active_run()``; with no active run, it starts a run (on the
    default tracker, as ``trackkit.start_run()``) and ends it after the fit, as MLflow does.
    Libraries that are not installed are skipped. Calling it again replaces the previous
    settings.

    Args:
        sklearn: patch ``fit`` of every scikit-learn estimator, pipeline and search.
        xgboost: patch ``xgboost.train`` and the xgboost scikit-learn API.
        lightgbm: patch ``lightgbm.train`` and the LightGBM scikit-learn API.
        log_models: also log each fitted model (``log_model``, with a signature).
        disable: undo every patch (the original functions are restored exactly).
    """
    with _lock:
        for owner, attribute, original in reversed(_patches):
            setattr(owner, attribute, original)
        _patches.clear()
        if disable:
            return
        _options["log_models"] = bool(log_models)
        if sklearn and _installed("sklearn"):
            _patch_sklearn()
        if xgboost and _installed("xgboost"):
            _patch_xgboost()
        if lightgbm and _installed("lightgbm"):
            _patch_lightgbm()


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _patch(owner: Any, attribute: str, make: Callable[[Any], Callable[..., Any]]) -> None:
    original = owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
    replacement = make(original)
    for name in ("__name__", "__qualname__", "__doc__", "__module__"):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(replacement, name, getattr(original, name))
    replacement.__wrapped__ = original  # type: ignore[attr-defined]
    _patches.append((owner, attribute, original))
    setattr(owner, attribute, replacement)


# -- the session: one outermost fit, in the active run or in a run of its own -------------------
@contextlib.contextmanager
def _outermost() -> Iterator[bool]:
    """True for the outermost fit; fits started while it runs (nested) see False."""
    global _depth
    with _depth_lock:
        _depth += 1
        outermost = _depth == 1
    try:
        yield outermost
    finally:
        with _depth_lock:
            _depth -= 1


def _fit_in_run(fit: Callable[[], Any], log: Callable[[Run, Any], None]) -> Any:
    """Run ``fit`` in the active run (or a new one, ended after); then ``log`` its result."""
    from trackkit import fluent

    run = fluent.active_run()
    own = None
    if run is None:
        try:
            own = run = fluent.start_run()
        except TrackkitError as e:
            _warn(f"could not start a run to log this fit into: {e}")
    try:
        result = fit()
    except Exception:
        if own is not None:
            own.end("FAILED")
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit
        if own is not None:
            own.end("KILLED")
        raise
    try:
        if run is not None and not run.ended:
            log(run, result)
    except Exception as e:  # autologging never breaks training
        _warn(f"could not log this fit: {type(e).__name__}: {e}")
    finally:
        if own is not None:
            own.end()
    return result


def _warn(message: str) -> None:
    warnings.warn(f"trackkit autolog: {message}", TrackkitWarning, stacklevel=4)


# -- what is logged ------------------------------------------------------------------------------
def _param_value(value: Any) -> Any:
    if value is None:
        return "None"
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def log_params(run: Run, params: Mapping[str, Any]) -> None:
    """Log params as trackkit flattens them (nested mappings with ``.``); other values as text."""
    from trackkit.normalize import flatten

    plain = flatten({str(k): v for k, v in params.items()}, "params")
    run.log_params({k: _param_value(v) for k, v in plain.items()})


def _signature(model_input: Any, model: Any) -> Any:
    from trackkit import models

    if model_input is None:
        return None
    try:
        return models.infer_signature(models.head(model_input), model)
    except Exception:  # no signature rather than no model
        return None


def _log_model(run: Run, model: Any, model_input: Any, flavor: str | None = None) -> None:
    if _options["log_models"]:
        run.log_model(model, "model", flavor=flavor, signature=_signature(model_input, model))


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def training_metrics(estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
    """The training metrics MLflow's scikit-learn autologging logs, computed the same way.

    ``training_score`` (the estimator's ``score``); for a classifier ``training_precision_score``,
    ``training_recall_score``, ``training_f1_score`` (weighted), ``training_accuracy_score``
    and, with ``predict_proba``, ``training_log_loss`` and ``training_roc_auc``; for a regressor
    ``training_mean_squared_error``, ``training_root_mean_squared_error``,
    ``training_mean_absolute_error`` and ``training_r2_score``. A metric that cannot be
    computed is left out.
    """
    import numpy as np
    from sklearn import metrics
    from sklearn.base import is_classifier, is_regressor

    found: dict[str, float] = {}
    if y is None:
        return found
    weight = {} if sample_weight is None else {"sample_weight": sample_weight}

    def put(name: str, compute: Callable[[], Any]) -> None:
        with contextlib.suppress(Exception):
            found[f"training_{name}"] = float(compute())

    if callable(getattr(estimator, "score", None)):
        put("score", lambda: estimator.score(X, y, **weight))
    if not (is_classifier(estimator) or is_regressor(estimator)):
        return found
    try:
        predicted = estimator.predict(X)
    except Exception:
        return found
    if is_classifier(estimator):
        scorers: dict[str, Callable[..., Any]] = {
            "precision_score": metrics.precision_score,
            "recall_score": metrics.recall_score,
            "f1_score": metrics.f1_score,
        }
        for name, scorer in scorers.items():
            put(name, functools.partial(scorer, y, predicted, average="weighted", **weight))
        put("accuracy_score", lambda: metrics.accuracy_score(y, predicted, **weight))
        if callable(getattr(estimator, "predict_proba", None)):
            try:
                proba = estimator.predict_proba(X)
            except Exception:
                return found
            put("log_loss", lambda: metrics.log_loss(y, proba, **weight))
            scores = proba[:, 1] if proba.shape[1] == 2 else proba
            put(
                "roc_auc",
                lambda: metrics.roc_auc_score(
                    y, scores, average="weighted", multi_class="ovo", **weight
                ),
            )
    else:
        put("mean_squared_error", lambda: metrics.mean_squared_error(y, predicted, **weight))
        if "training_mean_squared_error" in found:
            found["training_root_mean_squared_error"] = float(
                np.sqrt(found["training_mean_squared_error"])
            )
        put("mean_absolute_error", lambda: metrics.mean_absolute_error(y, predicted, **weight))
        put("r2_score", lambda: metrics.r2_score(y, predicted, **weight))
    return found


def _log_estimator(
    run: Run, estimator: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    X, y = _argument(args, kwargs, 0, "X"), _argument(args, kwargs, 1, "y")
    log_params(run, estimator.get_params(deep=True))
    best = getattr(estimator, "best_params_", None)
    if isinstance(best, Mapping):  # GridSearchCV, RandomizedSearchCV
        log_params(run, {f"best_{k}": v for k, v in best.items()})
    cls = type(estimator)
    run.set_tags(
        {"estimator_name": cls.__name__, "estimator_class": f"{cls.__module__}.{cls.__qualname__}"}
    )
    found = training_metrics(estimator, X, y, kwargs.get("sample_weight"))
    score = getattr(estimator, "best_score_", None)
    if isinstance(score, (int, float)):
        found["best_cv_score"] = float(score)
    if found:
        run.log_metrics(found)
    _log_model(run, estimator, X)


def _log_rounds(run: Run, results: Mapping[str, Mapping[str, Any]]) -> None:
    """``{data: {metric: [v0, v1, ...]}}`` as ``<data>-<metric>`` at steps 0, 1, ..."""
    for data, by_metric in results.items():
        for metric, values in by_metric.items():
            for step, value in enumerate(values):
                number = value[0] if isinstance(value, (tuple, list)) else value
                run.log_metric(f"{data}-{metric}", float(number), step=step)


def _log_boosted(
    run: Run, estimator: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], results: Any
) -> None:
    """The scikit-learn API of xgboost and LightGBM: params, rounds, training metrics, model."""
    X, y = _argument(args, kwargs, 0, "X"), _argument(args, kwargs, 1, "y")
    log_params(run, estimator.get_params(deep=True))
    cls = type(estimator)
    run.set_tags(
        {"estimator_name": cls.__name__, "estimator_class": f"{cls.__module__}.{cls.__qualname__}"}
    )
    if isinstance(results, Mapping):
        _log_rounds(run, results)
    best = getattr(estimator, "best_iteration", None)
    found = training_metrics(estimator, X, y, kwargs.get("sample_weight"))
    if isinstance(best, int):
        found["best_iteration"] = float(best)
    if found:
        run.log_metrics(found)
    _log_model(run, estimator, X)


# -- scikit-learn ----------------------------------------------------------------------------------
def _sklearn_fit(original: Callable[..., Any]) -> Callable[..., Any]:
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _outermost() as outermost:
            if not outermost:
                return original(self, *args, **kwargs)
            return _fit_in_run(
                lambda: original(self, *args, **kwargs),
                lambda run, _: _log_estimator(run, self, args, kwargs),
            )

    return fit


def _patch_sklearn() -> None:
    from sklearn.utils import all_estimators

    done: set[type] = set()
    for _, estimator in all_estimators():
        # the classes that define the fit an estimator runs (e.g. BaseSearchCV for GridSearchCV)
        for cls in estimator.__mro__:
            if cls not in done and "fit" in cls.__dict__ and cls.__module__.startswith("sklearn."):
                done.add(cls)
                _patch(cls, "fit", _sklearn_fit)


# -- xgboost ---------------------------------------------------------------------------------------
def _dmatrix_input(dtrain: Any) -> Any:
    """A signature's input for a DMatrix: its named columns, or a float tensor."""
    from trackkit.models import Signature

    names = getattr(dtrain, "feature_names", None)
    if names:
        return Signature(tuple({"type": "double", "name": n, "required": True} for n in names))
    columns = dtrain.num_col()
    return Signature(
        ({"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, columns]}},)
    )


def _xgboost_train(original: Callable[..., Any]) -> Callable[..., Any]:
    def train(params: Mapping[str, Any], dtrain: Any, *args: Any, **kwargs: Any) -> Any:
        with _outermost() as outermost:
            if not outermost:
                return original(params, dtrain, *args, **kwargs)
            results = kwargs.get("evals_result")
            call_kwargs = dict(kwargs)
            if results is None:
                results = call_kwargs["evals_result"] = {}
            rounds = args[0] if args else kwargs.get("num_boost_round", 10)

            def log(run: Run, booster: Any) -> None:
                logged = {**dict(params), "num_boost_round": rounds}
                for key in ("early_stopping_rounds", "maximize"):
                    if kwargs.get(key) is not None:
                        logged[key] = kwargs[key]
                log_params(run, logged)
                _log_rounds(run, results)
                best = getattr(booster, "best_iteration", None)
                if kwargs.get("early_stopping_rounds") and isinstance(best, int):
                    run.log_metrics(
                        {
                            "best_iteration": best,
                            "stopped_iteration": booster.num_boosted_rounds() - 1,
                        }
                    )
                if _options["log_models"]:
                    run.log_model(booster, "model", signature=_dmatrix_input(dtrain))

            return _fit_in_run(lambda: original(params, dtrain, *args, **call_kwargs), log)

    return train


def _boosted_fit(
    results_of: Callable[[Any], Any],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _outermost() as outermost:
                if not outermost:
                    return original(self, *args, **kwargs)
                return _fit_in_run(
                    lambda: original(self, *args, **kwargs),
                    lambda run, _: _log_boosted(run, self, args, kwargs, results_of(self)),
                )

        return fit

    return make


def _xgboost_results(model: Any) -> Any:
    try:
        return model.evals_result()
    except Exception:  # fitted without eval_set
        return None


def _patch_boosting(
    library: Any,
    train: Callable[[Callable[..., Any]], Callable[..., Any]],
    estimators: Any,
    base: type,
    results: Callable[[Any], Any],
) -> None:
    """Patch a boosting library's ``train`` and the ``fit`` of its scikit-learn estimators
    (the subclasses of ``base`` in module ``estimators`` that define their own ``fit``)."""
    _patch(library, "train", train)
    for cls in vars(estimators).values():
        if isinstance(cls, type) and issubclass(cls, base) and "fit" in cls.__dict__:
            _patch(cls, "fit", _boosted_fit(results))


def _patch_xgboost() -> None:
    import xgboost
    from xgboost import sklearn as xgb_sklearn

    _patch_boosting(xgboost, _xgboost_train, xgb_sklearn, xgb_sklearn.XGBModel, _xgboost_results)


# -- LightGBM --------------------------------------------------------------------------------------
def _lightgbm_train(original: Callable[..., Any]) -> Callable[..., Any]:
    def train(params: Mapping[str, Any], train_set: Any, *args: Any, **kwargs: Any) -> Any:
        with _outermost() as outermost:
            if not outermost:
                return original(params, train_set, *args, **kwargs)
            import lightgbm

            from trackkit import models

            results: dict[str, Any] = {}
            call_kwargs = dict(kwargs)
            # the caller's list is not changed: ours is a new one
            call_kwargs["callbacks"] = [
                *(kwargs.get("callbacks") or []),
                lightgbm.record_evaluation(results),
            ]
            sample = getattr(train_set, "data", None)  # before training frees the raw data
            with contextlib.suppress(Exception):
                sample = models.head(sample)
            rounds = args[0] if args else kwargs.get("num_boost_round", 100)

            def log(run: Run, booster: Any) -> None:
                log_params(run, {**dict(params), "num_boost_round": rounds})
                _log_rounds(run, results)
                best = getattr(booster, "best_iteration", 0)
                if isinstance(best, int) and best > 0:
                    run.log_metrics({"best_iteration": best})
                if _options["log_models"]:
                    signature = None
                    with contextlib.suppress(Exception):
                        signature = models.Signature(models.schema_of(sample))
                    run.log_model(booster, "model", signature=signature)

            return _fit_in_run(lambda: original(params, train_set, *args, **call_kwargs), log)

    return train


def _lightgbm_results(model: Any) -> Any:
    return getattr(model, "evals_result_", None) or None


def _patch_lightgbm() -> None:
    import lightgbm
    from lightgbm import sklearn as lgb_sklearn

    _patch_boosting(
        lightgbm, _lightgbm_train, lgb_sklearn, lgb_sklearn.LGBMModel, _lightgbm_results
    )
