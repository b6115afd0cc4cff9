"""A scorer as JSON: what a bundle stores instead of a pickle, so loading one runs no code.

Unpickling calls whatever the file names - anyone who can write to ``models/`` or the artefact
store could run code wherever a model is loaded. This codec writes plain JSON and reads back
only what it knows how to build:

* JSON values, tuples, sets, dicts with any keys, slices;
* numpy arrays and scalars (their bytes in base64, with the dtype; object arrays item by item);
* pandas DataFrames of plain columns (the feature catalogue);
* a LightGBM booster, as LightGBM's own model text;
* instances of the classes in :data:`ALLOWED` - leadscore's own model, cutoff and rule classes
  and the two scikit-learn estimators the calibrators use - rebuilt from their attributes
  without calling ``__init__``.

Anything else is refused on writing (naming where in the object it sits) and on reading
(naming the type the file asks for). Reading never imports a module or calls a function named
by the file.
"""

from __future__ import annotations

import base64
import json
import math
from importlib import import_module

import numpy as np
import pandas as pd
from pydantic import BaseModel

FORMAT = "leadscore-json-1"

# "module:qualname" of every class a bundle may contain. Adding one: it must be a plain data
# holder (or a scikit-learn estimator) whose attributes alone make it work.
ALLOWED_NAMES = (
    "leadscore.serving.scorer:Scorer", "leadscore.serving.scorer:ScoreScale",
    "leadscore.modeling.model:ConversionModel",
    "leadscore.modeling.families:TreeMargin", "leadscore.modeling.families:LinearMargin",
    "leadscore.modeling.families:BlendMargin",
    "leadscore.modeling.calibration:MarginCalibrator",
    "leadscore.modeling.cutoffs:Cutoffs", "leadscore.modeling.cutoffs:CutoffPolicy",
    "leadscore.modeling.baseline:RuleSet", "leadscore.modeling.baseline:FitRule", "leadscore.modeling.baseline:EngagementRule",
    "leadscore.serving.explain:GridThresholds",
    "leadscore.features.builder:FeatureConfig", "leadscore.features.builder:FeatureSpec", "leadscore.features.builder:Ratio",
    "leadscore.data.contract:Contract", "leadscore.data.contract:AttributeSpec", "leadscore.data.contract:KindSpec",
    "leadscore.data.contract:ColumnSpec", "leadscore.data.contract:TimestampFormat",
    "sklearn.linear_model._logistic:LogisticRegression", "sklearn.isotonic:IsotonicRegression",
)


# Bundles written before the stage packages (leadscore <= ec802e6) name the same classes by
# their old flat modules; read as the classes they are now (the same attributes).
LEGACY_NAMES = {
    "leadscore.scorer:Scorer": "leadscore.serving.scorer:Scorer",
    "leadscore.scorer:ScoreScale": "leadscore.serving.scorer:ScoreScale",
    "leadscore.train:ConversionModel": "leadscore.modeling.model:ConversionModel",
    "leadscore.calibration:MarginCalibrator": "leadscore.modeling.calibration:MarginCalibrator",
    "leadscore.cutoffs:Cutoffs": "leadscore.modeling.cutoffs:Cutoffs",
    "leadscore.cutoffs:CutoffPolicy": "leadscore.modeling.cutoffs:CutoffPolicy",
    "leadscore.baseline:RuleSet": "leadscore.modeling.baseline:RuleSet",
    "leadscore.baseline:FitRule": "leadscore.modeling.baseline:FitRule",
    "leadscore.baseline:EngagementRule": "leadscore.modeling.baseline:EngagementRule",
    "leadscore.explain:GridThresholds": "leadscore.serving.explain:GridThresholds",
    "leadscore.features:FeatureConfig": "leadscore.features.builder:FeatureConfig",
    "leadscore.features:FeatureSpec": "leadscore.features.builder:FeatureSpec",
    "leadscore.features:Ratio": "leadscore.features.builder:Ratio",
    "leadscore.contract:Contract": "leadscore.data.contract:Contract",
    "leadscore.contract:AttributeSpec": "leadscore.data.contract:AttributeSpec",
    "leadscore.contract:KindSpec": "leadscore.data.contract:KindSpec",
    "leadscore.contract:ColumnSpec": "leadscore.data.contract:ColumnSpec",
    "leadscore.contract:TimestampFormat": "leadscore.data.contract:TimestampFormat",
}


class CodecError(ValueError):
    pass


def _allowed() -> dict[str, type]:
    out = {}
    for name in ALLOWED_NAMES:
        module, _, qualname = name.partition(":")
        out[name] = getattr(import_module(module), qualname)   # our own list, never the file's
    return out


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_estimator(obj) -> bool:
    from sklearn.base import BaseEstimator

    return isinstance(obj, BaseEstimator)


def _float(x: float):
    return x if math.isfinite(x) else {"$float": repr(x)}


def _array(a: np.ndarray, where: str) -> dict:
    if a.dtype == object:
        return {"$array": "object", "shape": list(a.shape),
                "items": [encode(x, f"{where}[{i}]") for i, x in enumerate(a.ravel().tolist())]}
    if a.dtype.kind not in "biufcUSM" or a.dtype.fields is not None:
        raise CodecError(f"{where}: numpy arrays of dtype {a.dtype} cannot be stored")
    return {"$array": a.dtype.str, "shape": list(a.shape),
            "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")}


def encode(obj, where: str = "scorer"):
    """``obj`` as JSON-ready values; :class:`CodecError` names the path of what cannot be stored."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, np.integer):
        return obj
    if isinstance(obj, float) and not isinstance(obj, np.floating):
        return _float(obj)
    if isinstance(obj, np.ndarray):
        return _array(obj, where)
    if isinstance(obj, np.generic):
        return {"$scalar": _array(np.asarray(obj), where)}
    if isinstance(obj, list):
        return [encode(x, f"{where}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, tuple):
        return {"$tuple": [encode(x, f"{where}[{i}]") for i, x in enumerate(obj)]}
    if isinstance(obj, (set, frozenset)):
        kind = "$set" if isinstance(obj, set) else "$frozenset"
        return {kind: [encode(x, where) for x in sorted(obj, key=repr)]}
    if type(obj) is dict:
        return {"$dict": [[encode(k, f"{where}.key"), encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
    if isinstance(obj, slice):
        return {"$slice": [obj.start, obj.stop, obj.step]}
    if isinstance(obj, pd.DataFrame):
        return {"$frame": {"columns": [str(c) for c in obj.columns], "dtypes": [str(t) for t in obj.dtypes],
                           "values": [_array(obj[c].to_numpy(dtype=object), f"{where}.{c}") for c in obj.columns]}}
    cls = type(obj)
    if _name(cls) == "lightgbm.basic:Booster":
        return {"$lightgbm": obj.model_to_string(num_iteration=-1)}
    if _name(cls) not in ALLOWED_NAMES:
        raise CodecError(f"{where}: objects of type {_name(cls)} cannot be stored in a bundle")
    state = obj.__getstate__() if _is_estimator(obj) else dict(vars(obj))
    return {"$object": _name(cls),
            "state": {k: encode(v, f"{where}.{k}") for k, v in state.items()}}


def decode(value, allowed: dict[str, type] | None = None):
    """The object :func:`encode` described; builds only the types listed in this module."""
    allowed = _allowed() if allowed is None else allowed
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [decode(x, allowed) for x in value]
    if not isinstance(value, dict) or len(value) == 0:
        raise CodecError(f"unexpected value {value!r:.80}")
    tag = next(iter(value))
    if tag == "$float":
        return float(value["$float"])
    if tag == "$array":
        return _decode_array(value, allowed)
    if tag == "$scalar":
        return _decode_array(value["$scalar"], allowed)[()]
    if tag == "$tuple":
        return tuple(decode(x, allowed) for x in value["$tuple"])
    if tag in ("$set", "$frozenset"):
        items = [decode(x, allowed) for x in value[tag]]
        return set(items) if tag == "$set" else frozenset(items)
    if tag == "$dict":
        return {decode(k, allowed): decode(v, allowed) for k, v in value["$dict"]}
    if tag == "$slice":
        return slice(*value["$slice"])
    if tag == "$frame":
        spec = value["$frame"]
        frame = pd.DataFrame({c: _decode_array(v, allowed) for c, v in zip(spec["columns"], spec["values"])},
                             columns=spec["columns"])
        return frame.astype(dict(zip(spec["columns"], spec["dtypes"]))) if len(spec["columns"]) else frame
    if tag == "$lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_str=value["$lightgbm"])
    if tag == "$object":
        name = value["$object"]
        cls = allowed.get(LEGACY_NAMES.get(name, name))
        if cls is None:
            raise CodecError(f"the bundle asks for type {name!r}, which a bundle may not contain")
        state = {k: decode(v, allowed) for k, v in value["state"].items()}
        if issubclass(cls, BaseModel):   # a settings section, e.g. FeatureConfig: its fields, no validation run
            return cls.model_construct(**state)
        obj = cls.__new__(cls)
        if hasattr(obj, "__setstate__") and _is_estimator(obj):
            obj.__setstate__(state)
        else:
            obj.__dict__.update(state)
        return obj
    raise CodecError(f"unknown tag {tag!r} in the bundle")


def _decode_array(value: dict, allowed) -> np.ndarray:
    shape = tuple(int(n) for n in value["shape"])
    if value["$array"] == "object":
        out = np.empty(len(value["items"]), dtype=object)
        out[:] = [decode(x, allowed) for x in value["items"]]
        return out.reshape(shape)
    dtype = np.dtype(value["$array"])
    if dtype.kind not in "biufcUSM" or dtype.fields is not None:
        raise CodecError(f"arrays of dtype {dtype} may not be in a bundle")
    data = base64.b64decode(value["data"], validate=True)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def dumps(obj) -> bytes:
    return json.dumps({"format": FORMAT, "object": encode(obj)}, separators=(",", ":")).encode("utf-8")


def loads(data: bytes):
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CodecError(f"not a leadscore bundle object (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    return decode(doc["object"])
