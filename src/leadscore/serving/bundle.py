"""Model bundles: ``models/<name>/`` holds the scorer as JSON, ``manifest.json`` and the hashes.

A bundle is a flat directory of text: the scorer as JSON (:mod:`leadscore.serving.codec` - LightGBM's
own model text, the calibrators, cutoffs, score scale, rules, grid and catalogue), the report
and tables, and ``manifest.json``, which records the caller's content (metrics, cutoffs,
catalogue, data fingerprint), the library versions it was written with, and the SHA-256 and
size of every other file. Nothing in a bundle is a pickle and loading one runs no code named by
its files: the codec builds only the types it lists.

:func:`load_bundle` verifies everything before it reads an object: a changed, missing or added
file, or a library version the bundle is not portable to, is refused with an error naming the
file. The hashes catch corruption and careless edits, not an attacker - whoever can rewrite the
files can rewrite the manifest too. Against that, set ``LEADSCORE_SIGNING_KEY`` (a secret from
your secret store) where models are trained and loaded: :func:`write_bundle` then writes
``manifest.sig``, an HMAC-SHA256 of the manifest's bytes, and every load refuses a bundle whose
signature is missing or does not match, before it parses anything else.

:func:`write_bundle` builds the new bundle in a hidden sibling directory and renames it into
place; an existing bundle is moved aside first and deleted last, so a crash leaves the old or
the new bundle, never a mix (in the instant between the two renames, the old one is at its
``.<name>.old-*`` sibling).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import uuid
import warnings
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import leadscore
from leadscore.serving import codec

MANIFEST = "manifest.json"
SCORER_FILE = "scorer.json"   # the Scorer, in every bundle leadscore writes
SIGNATURE = "manifest.sig"
SIGNING_KEY = "LEADSCORE_SIGNING_KEY"
FORMAT = "leadscore-bundle/2"
PICKLED_FORMAT = "leadscore-bundle/1"   # objects were pickles: never loaded again
RESERVED_KEYS = ("format", "created_at", "versions", "files", "objects", "code")
CHUNK = 1 << 20
# Estimator state and model text are not promised portable across minor versions of these.
EXACT_MINOR = ("python", "lightgbm", "scikit-learn")
SAME_MAJOR = ("leadscore",)
RECORDED = ("lightgbm", "scikit-learn", "pandas", "numpy", "shap")


class BundleError(Exception):
    """A bundle cannot be written or must not be loaded; the message names the directory and file."""


class BundleVersionWarning(UserWarning):
    """A library differs from the one the bundle was written with, in a way that usually works."""


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def installed_versions() -> dict[str, str]:
    """Python, leadscore and the libraries a stored scorer depends on (those installed)."""
    versions = {"python": platform.python_version(), "leadscore": leadscore.__version__}
    for dist in RECORDED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def code_files() -> dict[str, str]:
    """leadscore's own source files (``relative/path.py`` -> SHA-256): what the registered model
    carries as its code, recorded in every manifest so a changed code file is refused."""
    root = Path(leadscore.__file__).parent
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts}


def _release(version: str) -> tuple:
    """(major, minor) of a version string; (the whole string,) if it does not start with digits."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(match[1]), int(match[2] or 0)) if match else (version,)


def check_versions(recorded: dict, installed: dict | None = None) -> list[str]:
    """Problems that make the bundle unsafe to load: python, lightgbm and scikit-learn must match
    major.minor, leadscore its major. Any other recorded library that differs, or is no longer
    installed, is not returned but reported with ``warnings.warn(..., BundleVersionWarning)``."""
    installed = installed_versions() if installed is None else installed
    problems = []
    for lib, was in recorded.items():
        now = installed.get(lib)
        if lib in EXACT_MINOR or lib in SAME_MAJOR:
            width = 2 if lib in EXACT_MINOR else 1
            part = "major.minor" if width == 2 else "major"
            if now is None:
                problems.append(f"{lib}: bundle written with {was}, but {lib} is not installed")
            elif _release(was)[:width] != _release(now)[:width]:
                problems.append(f"{lib}: bundle written with {was}, installed is {now} "
                                f"({part} must match; install {lib}=={was} or retrain)")
        elif now != was:
            warnings.warn(f"{lib}: bundle written with {was}, installed is {now or 'none'}",
                          BundleVersionWarning, stacklevel=2)
    problems += [f"{lib}: the manifest records no version" for lib in EXACT_MINOR + SAME_MAJOR
                 if lib not in recorded]
    return problems


def _check_name(name: str) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..", MANIFEST, SIGNATURE)
            and "/" not in name and "\\" not in name and not name.startswith("."))


def _check_writable(directory: Path, objects: dict, manifest: dict, extra_files: dict) -> None:
    names = list(objects) + list(extra_files)
    bad = [n for n in names if not _check_name(n)] + sorted({n for n in names if names.count(n) > 1})
    bad += [n for n in objects if not str(n).endswith(".json")]
    if bad:
        raise BundleError(f"{directory}: bad file name(s) {', '.join(map(repr, bad))}: use unique plain names, "
                          f"'.json' for objects, not {MANIFEST} or {SIGNATURE} nor starting with a dot")
    clash = sorted(set(manifest) & set(RESERVED_KEYS))
    if clash:
        raise BundleError(f"{directory}: manifest key(s) {', '.join(clash)} are written by write_bundle; rename them")
    try:
        json.dumps(manifest)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{directory}: manifest is not JSON-serialisable ({exc}); "
                          "convert numpy/pandas values to plain Python first") from exc
    if directory.is_file() or (directory.is_dir() and not (directory / MANIFEST).is_file()
                               and any(directory.iterdir())):
        raise BundleError(f"{directory}: exists and is not a bundle (no {MANIFEST}); refusing to replace it")


def write_bundle(directory: Path | str, objects: dict[str, object], manifest: dict,
                 extra_files: dict[str, bytes | str] | None = None) -> Path:
    """Write ``objects`` (as JSON by :mod:`leadscore.serving.codec`, names ending ``.json``),
    ``extra_files`` and the manifest to ``directory`` atomically, replacing a bundle already
    there, and sign the manifest when ``LEADSCORE_SIGNING_KEY`` is set; returns the directory."""
    directory, extra_files = Path(directory), extra_files or {}
    _check_writable(directory, objects, manifest, extra_files)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, obj in objects.items():
            try:
                (tmp / name).write_bytes(codec.dumps(obj))
            except codec.CodecError as exc:
                raise BundleError(f"{directory}: cannot store {name}: {exc}") from exc
        for name, content in extra_files.items():
            (tmp / name).write_bytes(content.encode() if isinstance(content, str) else content)
        files = {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                 for n in [*objects, *extra_files]}
        full = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": installed_versions(), **manifest, "files": files, "objects": sorted(objects),
                "code": code_files()}
        text = (json.dumps(full, indent=2) + "\n").encode()
        (tmp / MANIFEST).write_bytes(text)
        key = signing_key()
        if key is not None:
            (tmp / SIGNATURE).write_text(f"hmac-sha256:{_hmac(key, text)}\n")
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _swap_in(new: Path, directory: Path) -> None:
    """Rename ``new`` to ``directory``; an existing one is moved aside first and deleted last.
    Writers in the same directory take turns (a lock on it)."""
    from leadscore.io import directory_lock

    with directory_lock(directory.parent):
        if not directory.exists():
            os.rename(new, directory)
            return
        old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex}"
        os.rename(directory, old)
        try:
            os.rename(new, directory)
        except BaseException:
            os.rename(old, directory)
            raise
        shutil.rmtree(old, ignore_errors=True)


def publish_bundle(staged: Path | str, directory: Path | str) -> Path:
    """Copy a verified bundle (a training run's own staged copy) to ``directory`` atomically,
    replacing what is there: the run registers and publishes exactly the bundle it wrote, even
    when another training writes the same ``directory`` at the same time."""
    staged, directory = Path(staged), Path(directory)
    verify_bundle(staged)
    if directory.is_file() or (directory.is_dir() and not (directory / MANIFEST).is_file() and any(directory.iterdir())):
        raise BundleError(f"{directory}: exists and is not a bundle (no {MANIFEST}); refusing to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex}"
    try:
        shutil.copytree(staged, tmp)
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def signing_key() -> bytes | None:
    key = os.environ.get(SIGNING_KEY, "")
    return key.encode() if key else None


def _hmac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def check_signature(directory: Path | str) -> None:
    """With ``LEADSCORE_SIGNING_KEY`` set, the manifest's bytes must carry its HMAC in
    ``manifest.sig``; checked before the manifest is parsed. Without a key: nothing to check."""
    key = signing_key()
    if key is None:
        return
    directory = Path(directory)
    try:
        text = (directory / MANIFEST).read_bytes()
    except OSError as exc:
        raise BundleError(f"{directory}: cannot read {MANIFEST} ({exc}); not a bundle") from exc
    try:
        signature = (directory / SIGNATURE).read_text().strip()
    except OSError:
        raise BundleError(f"{directory}: refusing to load the bundle: {SIGNING_KEY} is set but the bundle is not "
                          f"signed (no {SIGNATURE}); write it again where the key is set") from None
    if not hmac.compare_digest(signature, f"hmac-sha256:{_hmac(key, text)}"):
        raise BundleError(f"{directory}: refusing to load the bundle: {SIGNATURE} does not match the manifest "
                          f"(modified, or signed with another key)")


def read_manifest(directory: Path | str) -> dict:
    """The parsed manifest, its structure checked (format, versions, files with sha256 and bytes)."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise BundleError(f"{directory}: not a directory; expected a bundle written by write_bundle")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: missing; {directory} is not a bundle (write it with write_bundle)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg}); "
                          "the bundle is damaged - write it again") from exc
    problem = _structure_problem(manifest)
    if problem and isinstance(manifest, dict) and manifest.get("format") == PICKLED_FORMAT:
        raise BundleError(f"{path}: {problem}")
    if problem:
        raise BundleError(f"{path}: {problem}; the bundle is damaged - write it again")
    return manifest


def _structure_problem(manifest) -> str | None:
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got {type(manifest).__name__}"
    if manifest.get("format") == PICKLED_FORMAT:
        return ("written by an older leadscore, whose bundles held pickles - which are never loaded, since "
                "loading one can run code; retrain (`leadscore train`) to write a current bundle")
    if manifest.get("format") != FORMAT:
        return f"format is {manifest.get('format')!r}, expected {FORMAT!r}"
    versions, files = manifest.get("versions"), manifest.get("files")
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        return "'versions' must map library names to version strings"
    if not isinstance(files, dict):
        return "'files' must map file names to {sha256, bytes}"
    for name, entry in files.items():
        if not _check_name(name):
            return f"'files' lists {name!r}, which is not a plain file name"
        if (not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int)
                or not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256")))):
            return f"'files' entry for {name!r} needs a 64-hex 'sha256' and an integer 'bytes'"
    objects = manifest.get("objects")
    if not isinstance(objects, list) or not all(isinstance(n, str) and n in files for n in objects):
        return "'objects' must list the object files, each one of 'files'"
    return None


def verify_bundle(directory: Path | str) -> dict:
    """Check every file against the manifest and the recorded versions against the installed
    ones (and the signature, with a key); returns the manifest or raises BundleError listing
    every problem. Reads no object."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a directory; expected a bundle written by write_bundle")
    check_signature(directory)
    manifest = read_manifest(directory)
    files = manifest["files"]
    problems = []
    for name, entry in files.items():
        path = directory / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing (or not a regular file)")
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: contents differ from the manifest's sha256 (modified or damaged)")
    problems += [f"{p.name}: present but not listed in the manifest (remove it or write the bundle again)"
                 for p in sorted(directory.iterdir()) if p.name not in (MANIFEST, SIGNATURE) and p.name not in files]
    problems += check_versions(manifest["versions"])
    if problems:
        raise BundleError(f"{directory}: refusing to load the bundle:\n  " + "\n  ".join(problems))
    return manifest


def load_bundle(directory: Path | str) -> tuple[dict, dict[str, object]]:
    """Verify the bundle, then read each object file; returns (manifest, {name: object}). Each
    file is read once into memory and its hash checked again, so the bytes read are exactly the
    bytes verified; :mod:`leadscore.serving.codec` builds only the types it lists."""
    directory = Path(directory)
    manifest = verify_bundle(directory)
    objects = {}
    for name in manifest["objects"]:
        data = (directory / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]:
            raise BundleError(f"{directory}: refusing to load the bundle: {name} changed after verification")
        try:
            objects[name] = codec.loads(data)
        except (codec.CodecError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{directory}: refusing to load the bundle: {name}: {exc}") from None
    return manifest, objects
