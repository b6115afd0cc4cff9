"""Bundles: round trip, nothing ever unpickled, refusal of tampered, unsigned or incompatible bundles
before any object is read, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
from importlib import metadata

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import leadscore
from leadscore.serving import bundle
from leadscore.serving.bundle import (
    MANIFEST,
    BundleError,
    BundleVersionWarning,
    check_versions,
    load_bundle,
    read_manifest,
    sha256_file,
    verify_bundle,
    write_bundle,
)
from leadscore.serving.codec import CodecError, dumps, loads


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: the detector for "did loading run code?"."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "unpickled.marker"


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=200) > 0).astype(int)
    return LogisticRegression().fit(X, y), X


@pytest.fixture
def model_dir(tmp_path, fitted):
    """A bundle with a fitted model, a dict and two extra files."""
    model, _ = fitted
    return write_bundle(tmp_path / "models" / "lead", {"scorer.json": model, "meta.json": {"a": [1, 2]}},
                        {"metrics": {"auc": 0.8}}, {"report.html": "<h1>ok</h1>", "catalogue.csv": b"name\nx\n"})


def flip_byte(path: pathlib.Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(directory: pathlib.Path, change) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


# --- writing and reading back ---------------------------------------------------------------

def test_round_trip_gives_equal_predictions(model_dir, fitted):
    model, X = fitted
    manifest, objects = load_bundle(model_dir)
    assert sorted(objects) == ["meta.json", "scorer.json"]
    np.testing.assert_array_equal(objects["scorer.json"].predict_proba(X), model.predict_proba(X))
    assert objects["meta.json"] == {"a": [1, 2]}
    assert manifest["metrics"] == {"auc": 0.8}
    assert (model_dir / "report.html").read_text() == "<h1>ok</h1>"
    assert (model_dir / "catalogue.csv").read_bytes() == b"name\nx\n"


def test_manifest_records_format_versions_and_every_file(model_dir):
    manifest = read_manifest(model_dir)
    assert manifest["format"] == "leadscore-bundle/2"
    assert manifest["created_at"].endswith("+00:00")
    versions = manifest["versions"]
    assert versions["leadscore"] == leadscore.__version__
    assert versions["lightgbm"] == metadata.version("lightgbm")
    assert versions["scikit-learn"] == metadata.version("scikit-learn")
    assert {"python", "pandas", "numpy"} <= set(versions)
    assert manifest["objects"] == ["meta.json", "scorer.json"]
    assert manifest["code"]["serving/bundle.py"] == sha256_file(pathlib.Path(bundle.__file__))
    on_disk = sorted(p.name for p in model_dir.iterdir() if p.name != MANIFEST)
    assert "manifest.sig" not in on_disk   # no key set: unsigned
    assert sorted(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": sha256_file(model_dir / name), "bytes": (model_dir / name).stat().st_size}
    assert verify_bundle(model_dir) == manifest


def test_sha256_file_streams_large_files(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one 1 MiB chunk, not a multiple of it
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


# --- refusing damaged bundles ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["scorer.json", "report.html"])
def test_flipped_byte_is_refused_naming_the_file(model_dir, name):
    flip_byte(model_dir / name, at=len((model_dir / name).read_bytes()) // 2)
    with pytest.raises(BundleError, match=rf"{name}: contents differ") as err:
        load_bundle(model_dir)
    assert str(model_dir) in str(err.value)


def test_tampered_manifest_hash_is_refused(model_dir):
    edit_manifest(model_dir, lambda m: m["files"]["meta.json"].update(sha256="0" * 64))
    with pytest.raises(BundleError, match=r"meta\.json: contents differ"):
        verify_bundle(model_dir)


def test_deleted_file_is_refused(model_dir):
    (model_dir / "catalogue.csv").unlink()
    with pytest.raises(BundleError, match=r"catalogue\.csv: listed in the manifest but missing"):
        load_bundle(model_dir)


@pytest.mark.parametrize("make", [lambda p: p.write_text("hello"), lambda p: p.mkdir()])
def test_unlisted_file_or_directory_is_refused(model_dir, make):
    make(model_dir / "extra.joblib")
    with pytest.raises(BundleError, match=r"extra\.joblib: present but not listed"):
        load_bundle(model_dir)


def test_every_problem_is_reported_at_once(model_dir):
    (model_dir / "catalogue.csv").unlink()
    (model_dir / "notes.txt").write_text("x")
    with pytest.raises(BundleError) as err:
        verify_bundle(model_dir)
    assert "catalogue.csv" in str(err.value) and "notes.txt" in str(err.value)


@pytest.mark.parametrize("text, message", [
    ('{"format": "leadscore-bundle/2", "files": {', r"line 1, column \d+: not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"format": "other/2"}', "format is 'other/2'"),
    ('{"format": "leadscore-bundle/2", "versions": {}, "files": []}', "'files' must map"),
    ('{"format": "leadscore-bundle/2", "versions": {"numpy": 2}, "files": {}}', "'versions' must map"),
    ('{"format": "leadscore-bundle/2", "versions": {}, "files": {"../x": {"sha256": "%s", "bytes": 1}}}' % ("a" * 64),
     r"'\.\./x', which is not a plain file name"),
    ('{"format": "leadscore-bundle/2", "versions": {}, "files": {"x": {"sha256": "abc", "bytes": 1}}}',
     "needs a 64-hex 'sha256'"),
])
def test_garbled_manifest_is_refused(model_dir, text, message):
    (model_dir / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(model_dir)
    assert str(model_dir / MANIFEST) in str(err.value)


def test_missing_manifest_or_directory_is_refused(model_dir, tmp_path):
    (model_dir / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(model_dir)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nowhere")


# --- loading never runs code ---------------------------------------------------------------

def _rehash(directory: pathlib.Path) -> None:
    """What an attacker who can write the directory does: make the manifest match the files."""
    edit_manifest(directory, lambda m: m["files"].update(
        {n: {"sha256": sha256_file(directory / n), "bytes": (directory / n).stat().st_size} for n in m["files"]}))


def test_a_pickle_is_never_loaded_even_when_the_manifest_is_rehashed(tmp_path, marker):
    directory = write_bundle(tmp_path / "b", {"x.json": {"harmless": True}}, {})
    (directory / "x.json").write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
    _rehash(directory)
    with pytest.raises(BundleError, match=r"x\.json"):
        load_bundle(directory)
    assert not marker.exists()
    pickle.loads((directory / "x.json").read_bytes())   # the file itself would have run code
    assert marker.exists()


@pytest.mark.parametrize("type_name", ["os:system", "pathlib:Path", "builtins:eval", "subprocess:Popen",
                                       "leadscore.io:write_json"])
def test_a_json_object_of_a_type_not_listed_is_refused(tmp_path, type_name):
    directory = write_bundle(tmp_path / "b", {"x.json": {"harmless": True}}, {})
    doc = {"format": "leadscore-json-1", "object": {"$object": type_name, "state": {}}}
    (directory / "x.json").write_text(json.dumps(doc))
    _rehash(directory)
    with pytest.raises(BundleError, match=f"type {type_name!r}, which a bundle may not contain"):
        load_bundle(directory)


def test_an_unstorable_object_is_refused_when_writing_naming_where_it_is(tmp_path):
    with pytest.raises(BundleError, match=r"cannot store x\.json: scorer\[0\]\['f'\]: objects of type builtins:builtin_function_or_method"):
        write_bundle(tmp_path / "b", {"x.json": [{"f": print}]}, {})
    assert not (tmp_path / "b").exists()


def test_codec_round_trips_the_values_a_scorer_holds():
    import pandas as pd

    value = {"t": (1, 2.5, float("nan"), None), "s": {"a"}, 3: slice(1, 4), "a": np.arange(6.0).reshape(2, 3),
             "o": np.array(["x", None], dtype=object), "i": np.int32(7), "inf": float("-inf"),
             "df": pd.DataFrame({"name": ["a", "b"], "n": [1, 2]}).astype({"name": "str"})}
    back = loads(dumps(value))
    assert back["t"][:2] == (1, 2.5) and np.isnan(back["t"][2]) and back["t"][3] is None
    assert back["s"] == {"a"} and back[3] == slice(1, 4) and back["inf"] == float("-inf")
    np.testing.assert_array_equal(back["a"], value["a"]) and back["a"].dtype == value["a"].dtype
    assert back["o"].tolist() == ["x", None] and back["i"] == 7 and back["i"].dtype == np.int32
    pd.testing.assert_frame_equal(back["df"], value["df"])
    with pytest.raises(CodecError, match="not a leadscore bundle object"):
        loads(b'{"format": "other"}')


def test_tampered_file_is_refused(tmp_path):
    directory = write_bundle(tmp_path / "b", {"x.json": {"harmless": True}}, {})
    with open(directory / "x.json", "ab") as fh:
        fh.write(b" ")
    with pytest.raises(BundleError, match=r"x\.json: contents differ"):
        load_bundle(directory)


def test_file_changed_after_verification_is_not_read(tmp_path, marker, monkeypatch):
    directory = write_bundle(tmp_path / "b", {"x.json": {"harmless": True}}, {})
    real_verify = bundle.verify_bundle

    def verify_then_swap(d):
        manifest = real_verify(d)
        (pathlib.Path(d) / "x.json").write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
        return manifest

    monkeypatch.setattr(bundle, "verify_bundle", verify_then_swap)
    with pytest.raises(BundleError, match=r"x\.json changed after verification"):
        load_bundle(directory)
    assert not marker.exists()


def test_a_bundle_of_pickles_from_an_older_leadscore_says_retrain(tmp_path):
    directory = write_bundle(tmp_path / "b", {"x.json": {"harmless": True}}, {})
    edit_manifest(directory, lambda m: m.update(format="leadscore-bundle/1"))
    with pytest.raises(BundleError, match=r"older leadscore, whose bundles held pickles .* retrain"):
        load_bundle(directory)


# --- the signature --------------------------------------------------------------------------

def test_with_a_signing_key_a_rehashed_or_unsigned_bundle_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADSCORE_SIGNING_KEY", "s3cret")
    signed = write_bundle(tmp_path / "signed", {"x.json": {"v": 1}}, {"run": 1})
    assert (signed / "manifest.sig").read_text().startswith("hmac-sha256:")
    assert load_bundle(signed)[1] == {"x.json": {"v": 1}}
    # the attacker swaps the object and rewrites the hashes, but cannot sign without the key
    (signed / "x.json").write_text(dumps({"v": 666}).decode())
    _rehash(signed)
    with pytest.raises(BundleError, match="manifest.sig does not match the manifest"):
        load_bundle(signed)
    monkeypatch.delenv("LEADSCORE_SIGNING_KEY")
    unsigned = write_bundle(tmp_path / "unsigned", {"x.json": {"v": 1}}, {})
    monkeypatch.setenv("LEADSCORE_SIGNING_KEY", "s3cret")
    with pytest.raises(BundleError, match="LEADSCORE_SIGNING_KEY is set but the bundle is not signed"):
        load_bundle(unsigned)
    monkeypatch.setenv("LEADSCORE_SIGNING_KEY", "another key")
    with pytest.raises(BundleError, match="signed with another key"):
        verify_bundle(tmp_path / "signed")


@pytest.mark.parametrize("lib, recorded", [("lightgbm", "0.1.0"), ("scikit-learn", "1.0.2"),
                                           ("python", "2.7.18"), ("leadscore", "99.0.0")])
def test_incompatible_version_is_refused_before_reading(tmp_path, lib, recorded):
    directory = write_bundle(tmp_path / "b", {"x.json": {"v": 1}}, {})
    installed = read_manifest(directory)["versions"][lib]
    edit_manifest(directory, lambda m: m["versions"].update({lib: recorded}))
    with pytest.raises(BundleError) as err:
        load_bundle(directory)
    assert f"{lib}: bundle written with {recorded}, installed is {installed}" in str(err.value)
    assert str(directory) in str(err.value)


def test_soft_version_difference_warns_and_loads(tmp_path):
    directory = write_bundle(tmp_path / "b", {"x.json": {"v": 1}}, {})
    edit_manifest(directory, lambda m: m["versions"].update(pandas="0.0.1"))
    with pytest.warns(BundleVersionWarning, match=r"pandas: bundle written with 0\.0\.1"):
        assert load_bundle(directory)[1] == {"x.json": {"v": 1}}


# --- the version rule -----------------------------------------------------------------------

INSTALLED = {"python": "3.11.7", "leadscore": "0.3.1", "lightgbm": "4.7.0", "scikit-learn": "1.9.1",
             "pandas": "3.1.1", "numpy": "2.4.6"}


def test_same_minor_and_patch_differences_pass_silently(recwarn):
    recorded = {**INSTALLED, "python": "3.11.2", "leadscore": "0.1.0", "lightgbm": "4.7.3", "scikit-learn": "1.9.0"}
    assert check_versions(recorded, INSTALLED) == []
    assert not [w for w in recwarn if issubclass(w.category, BundleVersionWarning)]


@pytest.mark.parametrize("lib, recorded", [("python", "3.12.0"), ("lightgbm", "4.6.0"), ("lightgbm", "3.7.0"),
                                           ("scikit-learn", "1.8.2"), ("leadscore", "1.0.0")])
def test_hard_mismatch_is_a_problem(lib, recorded):
    problems = check_versions({**INSTALLED, lib: recorded}, INSTALLED)
    assert len(problems) == 1 and problems[0].startswith(f"{lib}: bundle written with {recorded}, installed is")


def test_hard_library_missing_on_either_side_is_a_problem():
    assert check_versions(INSTALLED, {k: v for k, v in INSTALLED.items() if k != "lightgbm"}) == [
        "lightgbm: bundle written with 4.7.0, but lightgbm is not installed"]
    assert check_versions({k: v for k, v in INSTALLED.items() if k != "scikit-learn"}, INSTALLED) == [
        "scikit-learn: the manifest records no version"]


def test_other_libraries_only_warn():
    with pytest.warns(BundleVersionWarning) as caught:
        assert check_versions({**INSTALLED, "numpy": "1.26.4", "shap": "0.46.0"}, INSTALLED) == []
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["numpy", "shap"]


# --- atomic writes --------------------------------------------------------------------------

def test_replacing_a_bundle_leaves_only_the_new_one(model_dir, fitted):
    write_bundle(model_dir, {"scorer.json": {"v": 2}}, {"run": 2})
    manifest, objects = load_bundle(model_dir)
    assert manifest["run"] == 2 and objects == {"scorer.json": {"v": 2}}
    assert not (model_dir / "report.html").exists()
    assert os.listdir(model_dir.parent) == [model_dir.name]


def test_failure_during_write_keeps_the_old_bundle(model_dir, fitted, monkeypatch):
    model, X = fitted
    real_write, calls = pathlib.Path.write_bytes, []

    def write_then_fail(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(model_dir, {"scorer.json": {"v": 2}, "meta.json": {"v": 2}}, {"run": 2})
    assert len(calls) == 2 and not str(calls[0]).startswith(str(model_dir) + os.sep)  # built elsewhere
    monkeypatch.undo()
    manifest, objects = load_bundle(model_dir)
    assert manifest["metrics"] == {"auc": 0.8}
    np.testing.assert_array_equal(objects["scorer.json"].predict(X), model.predict(X))
    assert os.listdir(model_dir.parent) == [model_dir.name]


def test_failure_renaming_the_new_bundle_in_restores_the_old(model_dir, monkeypatch):
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in os.path.basename(src):
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(bundle.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        write_bundle(model_dir, {"scorer.json": {"v": 2}}, {})
    monkeypatch.undo()
    assert load_bundle(model_dir)[0]["metrics"] == {"auc": 0.8}
    assert os.listdir(model_dir.parent) == [model_dir.name]


def test_first_write_creates_parent_directories(tmp_path):
    directory = write_bundle(tmp_path / "a" / "b", {"x.json": 1}, {})
    assert load_bundle(directory)[1] == {"x.json": 1}
    assert os.listdir(tmp_path / "a") == ["b"]


# --- refusing to write ----------------------------------------------------------------------

def test_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="is not a bundle"):
        write_bundle(tmp_path / "precious", {"x.json": 1}, {})
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("objects, extra", [
    ({"scorer.pkl": 1}, {}), ({"x.json": 1}, {"x.json": b""}), ({}, {"sub/x.txt": b""}),
    ({}, {MANIFEST: "{}"}), ({}, {".hidden": b""}), ({}, {"manifest.sig": b""}),
])
def test_bad_file_names_are_refused(tmp_path, objects, extra):
    with pytest.raises(BundleError, match="bad file name"):
        write_bundle(tmp_path / "b", objects, {}, extra)
    assert not (tmp_path / "b").exists()


def test_reserved_and_unserialisable_manifest_content_is_refused(tmp_path):
    with pytest.raises(BundleError, match="files are written by write_bundle"):
        write_bundle(tmp_path / "b", {"x.json": 1}, {"files": []})
    with pytest.raises(BundleError, match="not JSON-serialisable"):
        write_bundle(tmp_path / "b", {"x.json": 1}, {"when": object()})
    assert os.listdir(tmp_path) == []


def test_a_bundle_written_before_the_stage_packages_reads_its_classes_by_their_old_names():
    """Bundles name classes by module; the stage packages moved them. Every pre-move name
    (leadscore <= ec802e6) reads as the class it is now - and only those: an old name that
    was never a bundle class stays refused."""
    from leadscore.data.contract import TimestampFormat
    from leadscore.modeling.cutoffs import CutoffPolicy
    from leadscore.serving.codec import ALLOWED_NAMES, LEGACY_NAMES

    assert set(LEGACY_NAMES.values()) <= set(ALLOWED_NAMES)
    written = dumps([CutoffPolicy(policy="capacity", mql=500, sql=100, bootstrap=0), TimestampFormat()]).decode()
    old = written.replace('"leadscore.modeling.cutoffs:CutoffPolicy"', '"leadscore.cutoffs:CutoffPolicy"') \
                 .replace('"leadscore.data.contract:TimestampFormat"', '"leadscore.contract:TimestampFormat"')
    assert old != written and "leadscore.cutoffs:CutoffPolicy" in old
    policy, fmt = loads(old.encode())
    assert policy == CutoffPolicy(policy="capacity", mql=500, sql=100, bootstrap=0)
    assert isinstance(fmt, TimestampFormat)
    with pytest.raises(CodecError, match="'leadscore.io:write_json', which a bundle may not contain"):
        loads(old.replace('"leadscore.cutoffs:CutoffPolicy"', '"leadscore.io:write_json"').encode())
