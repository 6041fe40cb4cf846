"""The fast path of ``mobilenet-v1 predict``: a cached float32 TFLite model run by LiteRT.

Importing TensorFlow costs about 4 s of a CLI call, the model itself 6-15 ms an image. So when
``ai-edge-litert`` is installed and the weights are local (a registry name that is bundled or
already downloaded, or a Hugging Face directory), the first run converts the loaded Keras model
once (``converters.tflite``, float32) into a cache entry keyed by the SHA-256 of the weights'
bytes; later runs read that entry and never import TensorFlow or Keras. The pixels come from the
same numpy / Pillow processor as the Keras path's, so results agree with it to float32 rounding
(the build checks the converted model against the Keras one before caching it).

Cache: ``$MOBILENET_V1_CACHE``, else ``$XDG_CACHE_HOME/tf_mobilenet_v1``, else
``~/.cache/tf_mobilenet_v1``; entries ``tflite-<key>.tflite`` + ``tflite-<key>.json`` (the
JSON, written last, names the model file's SHA-256, so a damaged entry is rebuilt, not trusted).
The directory is used only when it is this user's and nobody else may write to it (created
0700): anyone who could write there could plant a model with their own labels. Entries are
read only as this user's regular files of bounded size; temporaries of killed builds go.
The labels, processor and model bytes an entry holds are what the loader read and the build
checked against the Keras model: the JSON carries an HMAC of all of them under a per-user
secret (``<cache dir>.key``, 32 random bytes, 0600, beside the directory and not in it), so an
entry edited, swapped or copied in from anywhere else (another user's or machine's cache, a
restored or shared folder) is said once, rebuilt and never shown. The key does not stop
someone who can read this user's files; they could as well edit the weights or the package.
The bundled weights' entry ships with the package (``fast.tflite`` + ``fast.json`` beside
them, as trusted as its code, unsigned), so even their first run converts nothing. Off
switch: ``MOBILENET_V1_FAST=0`` or ``mobilenet-v1 predict --no-fast``.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import importlib.util
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from .engines import TFLiteEngine
from .errors import first_line
from .fileio import MAX_WEIGHTS_BYTES, atomic_output, remove_stale_temporaries

ENV_SWITCH = "MOBILENET_V1_FAST"
ENV_CACHE = "MOBILENET_V1_CACHE"
ENV_STRICT = "MOBILENET_V1_FAST_STRICT"  # set: a fast-path failure raises (the tests set it)
_MAX_META_BYTES = 1 << 20  # an entry's JSON: labels and a processor, a few KB
_KEY_BYTES = 32  # the per-user secret that signs cache entries (HMAC-SHA256)
_TEMPORARY = r"tflite-[0-9a-f]{64}\.(tflite|json)"  # the entries' names, for their temporaries
FORMAT = 2  # bump when the entry's layout or meaning changes: old entries are then ignored
FAST_PREPROCESSING = ("model", "crop", "resize")  # the numpy processors; "slim" needs TF
# Build-time check of the converted model against the Keras one (random [-1, 1] input).
LOGITS_ATOL = 1e-3
# The bundled weights' fast model, shipped beside them (converters/bundle.py writes it).
SHIPPED_MODEL, SHIPPED_META = "fast.tflite", "fast.json"
HF_FILES = ("config.json", "model.safetensors")
HF_OPTIONAL = ("preprocessor_config.json",)
# Other weight files beside model.safetensors would make "which file did the loader read"
# a question; such a directory takes the Keras path.
HF_OTHER_WEIGHTS = ("pytorch_model.bin", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json")


def enabled(fast: bool | None = None) -> bool:
    """Whether to try the fast path: ``fast`` if given, else not ``MOBILENET_V1_FAST=0``, and
    only with ``ai_edge_litert`` installed."""
    if fast is None:
        fast = os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")
    if not fast or importlib.util.find_spec("ai_edge_litert") is None:
        return False
    try:  # a broken install must not cost a conversion on every run
        import ai_edge_litert.interpreter  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def cache_dir() -> str:
    """Where built TFLite models are kept (see the module docstring)."""
    if os.environ.get(ENV_CACHE):
        return os.environ[ENV_CACHE]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tf_mobilenet_v1")


def weight_files(weights: str) -> list[str] | None:
    """The files whose bytes (and names) make up ``weights``, everything its loader reads, or
    ``None`` when the fast path does not take them (not local, an export that runs as it is,
    or no known form: those run on the Keras path)."""
    from . import formats, registry

    weights = os.fspath(weights)
    if not os.path.exists(weights) and not os.path.exists(weights + ".index"):
        key = registry.canonical_name(weights)
        if key is None:
            return None
        weights = registry.cached_path(key)  # bundled directory or downloaded tarball
        if weights is None:
            return None
        if os.path.isfile(weights):
            return [weights]
    if os.path.isdir(weights):
        return _hf_directory_files(weights)
    try:
        form = formats.recognise(weights)
    except ValueError:
        return None
    if form.name == "tflite":
        return None  # predict runs a .tflite itself
    if form.name == "slim_ckpt":
        prefix = re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", weights)
        files = [prefix + ".index", *sorted(glob.glob(glob.escape(prefix) + ".data-*"))]
    elif form.family == "hf":  # a state dict reads the config files beside it too
        folder = os.path.dirname(os.path.abspath(weights))
        files = [weights, *(os.path.join(folder, n) for n in ("config.json", *HF_OPTIONAL)
                            if os.path.isfile(os.path.join(folder, n)))]
    else:
        files = [weights]
    return files if all(os.path.isfile(f) for f in files) else None


def _hf_directory_files(folder: str) -> list[str] | None:
    names = set(os.listdir(folder))
    if not all(n in names for n in HF_FILES) or any(n in names for n in HF_OTHER_WEIGHTS):
        return None
    files = [os.path.join(folder, n) for n in (*HF_FILES, *HF_OPTIONAL) if n in names]
    return files if all(os.path.isfile(f) for f in files) else None


def cache_key(files: Sequence[str]) -> str:
    """SHA-256 over the files' names and bytes (and this format's version)."""
    from . import __version__

    h = hashlib.sha256(f"tf_mobilenet_v1 {__version__} tflite-cache {FORMAT}\n".encode())
    for path in files:
        h.update(f"{os.path.basename(path)}\n".encode())
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h.update(f"{size}\n".encode())
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _entry_paths(key: str) -> tuple[str, str]:
    base = os.path.join(cache_dir(), f"tflite-{key}")
    return base + ".tflite", base + ".json"


def _processor(meta: dict, preprocessing: str):
    """The processor the Keras path would use: ``get_preprocessor(name, image_size, model)``."""
    from .preprocessing import MobileNetV1ImageProcessor

    if preprocessing == "model":
        return MobileNetV1ImageProcessor.from_dict(meta["processor"])
    return MobileNetV1ImageProcessor.for_variant(meta["image_size"], mode=preprocessing)


def _engine(content: bytes, meta: dict, preprocessing: str) -> TFLiteEngine:
    """The cached model as an engine, with the labels and processor of its weights."""
    id2label = {int(k): v for k, v in meta["id2label"].items()}
    return TFLiteEngine(content, _processor(meta, preprocessing), id2label, output="logits",
                        num_labels=meta["num_labels"])


def private_cache_dir(create: bool = False) -> str | None:
    """The cache directory when only this user can write to it (made 0700 with ``create``);
    ``None`` when it is absent, or (said once on stderr) owned by another user or writable by
    others: anyone who can write there could plant a model and its labels."""
    d = cache_dir()
    try:
        if create:
            os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except FileNotFoundError:
        return None
    except OSError as e:
        _say_once(f"cannot use the cache {d}: {first_line(e)}")
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        _say_once(f"not using the cache {d}: it is not a directory of yours that only you can "
                  f"write to (chmod go-w it, or set {ENV_CACHE} to a private one)")
        return None
    return d


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        print(f"mobilenet-v1: warning: {message}", file=sys.stderr)


def _read_own(path: str, limit: int, private: bool = False) -> bytes | None:
    """A regular file of this user's, at most ``limit`` bytes (and with ``private`` one nobody
    else may read or write), or ``None``: a planted symlink, a FIFO (opened without
    blocking), a device or a huge sparse file is not read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > limit \
                or (private and st.st_mode & 0o077):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_entry(key: str) -> tuple[bytes, dict] | None:
    """A cache entry's model bytes and metadata, or ``None`` when absent, damaged, not this
    user's own or not signed with this user's key (said once: it is then rebuilt)."""
    if private_cache_dir() is None:
        return None
    model_path, meta_path = _entry_paths(key)
    raw = _read_own(meta_path, _MAX_META_BYTES)
    content = _read_own(model_path, MAX_WEIGHTS_BYTES) if raw is not None else None
    entry = _checked(raw, content, key)
    secret = None if entry is None else _secret()
    if secret is None:
        return None
    mac = entry[1].get("mac")
    if not (isinstance(mac, str) and hmac.compare_digest(mac.encode(),
                                                         _mac(secret, entry[1]).encode())):
        _say_once(f"not using the cached fast model {meta_path}: it is not signed with this "
                  f"user's key {key_path()} (edited, or copied from elsewhere); rebuilding it")
        return None
    return entry


def key_path() -> str:
    """The per-user secret that signs cache entries: beside the cache directory, not in it,
    so a directory copied or planted whole brings no key that vouches for its entries."""
    return os.path.normpath(os.path.abspath(cache_dir())) + ".key"


def _secret(create: bool = False) -> bytes | None:
    """This user's cache key (made with ``create``: random, 0600, never replaced), or
    ``None`` when absent or (said once) not a private file of this user's."""
    path = key_path()
    key = _read_own(path, _KEY_BYTES, private=True)
    if key is None and create and not os.path.lexists(path):
        try:  # written whole, then linked: a racing run reads all of it or finds it absent
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tf_mobilenet_v1.")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(os.urandom(_KEY_BYTES))
                os.link(tmp, path)
            finally:
                os.unlink(tmp)
        except FileExistsError:  # another run made it first
            pass
        except OSError as e:
            _say_once(f"not caching the fast model: cannot create the key {path}: "
                      f"{first_line(e)}")
            return None
        key = _read_own(path, _KEY_BYTES, private=True)
    if key is not None and len(key) == _KEY_BYTES:
        return key
    if os.path.lexists(path):
        _say_once(f"not using the cache: its key {path} is not a {_KEY_BYTES}-byte file of "
                  "yours that only you can read (delete it to make a new one)")
    return None


def _mac(secret: bytes, meta: dict) -> str:
    """The HMAC-SHA256 of an entry's metadata (its ``mac`` aside), over canonical JSON."""
    body = json.dumps({k: v for k, v in meta.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":"))
    return hmac.new(secret, body.encode("utf-8"), hashlib.sha256).hexdigest()


def _read_shipped(files: Sequence[str], key: str) -> tuple[bytes, dict] | None:
    """The fast model shipped beside the package's bundled weights (``converters/bundle.py``
    builds it), when it was built from exactly these files by this version: their first run
    then converts nothing. Only the package's own folder is looked in (as trusted as its code);
    a ``fast.json`` in a folder of downloaded weights is never read."""
    from . import registry

    folder = os.path.dirname(os.path.abspath(files[0]))
    if not any(os.path.realpath(folder) == os.path.realpath(path)
               for path in map(registry.bundled_path, registry.BUNDLED) if path):
        return None
    try:
        with open(os.path.join(folder, SHIPPED_META), "rb") as f:
            raw = f.read(_MAX_META_BYTES)
        with open(os.path.join(folder, SHIPPED_MODEL), "rb") as f:
            content = f.read(MAX_WEIGHTS_BYTES)
    except OSError:
        return None
    return _checked(raw, content, key)


def _checked(raw: bytes | None, content: bytes | None, key: str) -> tuple[bytes, dict] | None:
    """``(content, meta)`` when the metadata is an entry of this format for ``key`` and names
    the model bytes' SHA-256, else ``None``."""
    if raw is None or content is None:
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
        ok = meta["format"] == FORMAT and meta["key"] == key \
            and meta["tflite_sha256"] == hashlib.sha256(content).hexdigest() \
            and meta["output"] == "logits" \
            and isinstance(meta["id2label"], dict) and isinstance(meta["num_labels"], int)
    except (KeyError, TypeError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return (content, meta) if ok else None


def _eligible_key(weights: str, preprocessing: str) -> str | None:
    """The cache key of ``weights``, or ``None`` when they or the preprocessing do not qualify."""
    if preprocessing not in FAST_PREPROCESSING:
        return None
    files = weight_files(weights)
    return None if files is None else cache_key(files)


def eligible(weights: str, preprocessing: str) -> bool:
    """Whether :func:`build` would take these weights and preprocessing."""
    return preprocessing in FAST_PREPROCESSING and weight_files(weights) is not None


def _failed(what: str, error: BaseException) -> None:
    """A fast-path failure that is not "not eligible": said on stderr with its reason (the
    Keras model then runs), or raised where ``MOBILENET_V1_FAST_STRICT`` is set (the tests)."""
    if os.environ.get(ENV_STRICT):
        raise RuntimeError(f"fast path: {what}: {first_line(error)}") from error
    print(f"mobilenet-v1: warning: {what} ({first_line(error)}); running the Keras model",
          file=sys.stderr)


def open_cached(weights: str, preprocessing: str) -> TFLiteEngine | None:
    """The fast engine for ``weights`` from the cache (or shipped with the package, for the
    bundled weights), or ``None`` (not eligible, not built yet, or a damaged entry: the caller
    then loads the Keras model and may build one)."""
    files = weight_files(weights) if preprocessing in FAST_PREPROCESSING else None
    key = None if files is None else cache_key(files)
    entry = None if key is None else _read_entry(key) or _read_shipped(files, key)
    if entry is None:
        return None
    try:
        return _engine(*entry, preprocessing)
    except (ValueError, RuntimeError) as e:  # an entry whose hash holds but which won't load
        _failed(f"cannot load the cached TFLite model {_entry_paths(key)[0]}", e)
        return None


def build(weights: str, model, preprocessing: str) -> TFLiteEngine | None:
    """Convert the loaded Keras ``model`` of ``weights`` to TFLite, check it against the Keras
    model, cache it and return its engine; ``None`` when the weights or the model do not
    qualify, or (said on stderr) when the conversion or its check fails."""
    key = _eligible_key(weights, preprocessing)
    if key is None or not _model_qualifies(model):
        return None
    try:
        content, meta = build_entry(model, key)
        engine = _engine(content, meta, preprocessing)
    except (ValueError, RuntimeError, OSError) as e:
        _failed("could not build the fast TFLite model", e)
        return None
    try:
        folder = private_cache_dir(create=True)
        secret = None if folder is None else _secret(create=True)
        if secret is not None:
            remove_stale_temporaries(folder, _TEMPORARY)  # of killed builds of any entry
            write_entry(*_entry_paths(key), content, {**meta, "mac": _mac(secret, meta)})
    except OSError as e:  # a read-only home still gets this run's fast model
        print(f"mobilenet-v1: warning: cannot cache the TFLite model in {cache_dir()}: "
              f"{first_line(e)}", file=sys.stderr)
    return engine


def _model_qualifies(model) -> bool:
    """Whether the fast path can stand for ``model``: its own processor gives model-sized
    images (the cached model has a fixed input size)."""
    from .preprocessing import MobileNetV1ImageProcessor

    size = int(model.config.image_size)
    return MobileNetV1ImageProcessor.for_model(model).output_size() == (size, size)


def build_entry(model, key: str) -> tuple[bytes, dict]:
    """``model`` as a float32 TFLite model (logits, no metadata) and its entry's metadata for
    ``key``, checked against the Keras model."""
    from tf_mobilenet_v1.converters.tflite import convert_tflite

    from .engines import KerasEngine
    from .preprocessing import MobileNetV1ImageProcessor

    config = model.config
    size = int(config.image_size)
    processor = MobileNetV1ImageProcessor.for_model(model)
    content = convert_tflite(model, quantize="none", outputs="logits", with_metadata=False)
    meta = {"format": FORMAT, "key": key, "image_size": size,
            "num_labels": int(config.num_labels),
            "id2label": {str(k): v for k, v in sorted((config.id2label or {}).items())},
            "processor": processor.to_dict(), "output": "logits",
            "tflite_sha256": hashlib.sha256(content).hexdigest()}
    probe = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    want = KerasEngine(model).logits(probe).astype(np.float64)
    got = _engine(content, meta, "model").logits(probe).astype(np.float64)
    if got.shape != want.shape or np.max(np.abs(got - want)) >= LOGITS_ATOL:
        raise ValueError("the TFLite model does not reproduce the Keras model's logits "
                         f"(shape {got.shape} vs {want.shape})")
    return content, meta


def write_entry(model_path: str, meta_path: str, content: bytes, meta: dict) -> None:
    """Model file first, metadata last, each atomically: a reader sees a whole entry or none
    (a cache entry, or the model shipped beside the bundled weights)."""
    with atomic_output(model_path, force=True, suffix=".tflite") as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    with atomic_output(meta_path, force=True, suffix=".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
