"""Exported weights: one ``safetensors`` file with string metadata, for every model the
project writes (the quality model, the MOS head, the enhancer, the NIQE model).

Every such file names its kind in ``format`` (``"attiqa"``, ``"attiqa-mos"``,
``"attiqa-enhancer"``, ``"attiqa-niqe"``) and its layout version in ``format_version``
(:data:`VERSION_KEY`, the one version key); structured metadata values are JSON. Writing
is atomic; reading never unpickles anything, checks the kind and version first, and
loading into a module is strict, listing every difference (missing and unexpected keys,
shape mismatches, tensors of the wrong kind or holding NaN/infinity) in one line that
names the file. Errors are :class:`CheckpointError` (a ``ValueError``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import contextlib
import shutil
import tempfile
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .io import atomic_path

__all__ = ["VERSION_KEY", "CheckpointError", "write_weights_file", "read_weights_file", "read_tensor_shapes",
           "json_metadata", "state_dict_differences", "weight_file_option_error", "check_state_tensors", "load_strict",
           "read_user_state_dict", "safetensors_copy", "TIMM_STATE_KEYS", "OPEN_CLIP_STATE_KEYS"]

#: Where timm (``load_state_dict``) and open_clip look for the weights inside a checkpoint
#: dict, in order: :func:`read_user_state_dict` takes them out the same way.
TIMM_STATE_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
OPEN_CLIP_STATE_KEYS = ("state_dict",)

#: The metadata key of every weight file's layout version.
VERSION_KEY = "format_version"
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A weight file is unreadable, of another format, or does not match the network."""


def write_weights_file(path: PathLike, tensors: Mapping[str, torch.Tensor], *, format: str, version: int,
                       metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``tensors`` (moved to CPU, made contiguous) and ``metadata`` to ``path``
    atomically. Metadata values that are not strings are stored as JSON (values JSON
    cannot hold as ``str(value)``); ``format`` and ``format_version`` come first."""
    meta = {"format": format, VERSION_KEY: str(int(version))}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata=meta)
    return path


def read_weights_file(path: PathLike, *, format: str, version: int, what: str, noun: str = "weight file",
                      tensors: bool = True,
                      legacy_version_keys: Sequence[str] = (), hint: Optional[Mapping[str, str]] = None,
                      ) -> Tuple[Optional[Dict[str, torch.Tensor]], Dict[str, str]]:
    """``(tensors or None, raw metadata)`` of a weight file of kind ``format``.

    Args:
        what: how messages name the kind (``"an attiqa checkpoint"``).
        noun: what a missing file is called (``"checkpoint"``: ``"checkpoint not found: PATH"``).
        tensors: also read the tensors (False: metadata only, cheap).
        legacy_version_keys: earlier names of the version key, read when it is absent.
        hint: ``{other format: advice}`` added to the message when the file holds another kind.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a readable safetensors file, another ``format``, or a version
            other than ``version`` (each a one-line message naming the file).
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{noun} {path} is a folder, expected a .safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"{noun} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path), device="cpu") if tensors else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != format:
        extra = (hint or {}).get(meta.get("format"), "")
        raise CheckpointError(f"{path} is not {what} (metadata format={meta.get('format')!r}){extra}")
    found = meta.get(VERSION_KEY)
    for key in legacy_version_keys:
        found = meta.get(key) if found is None else found
    if found != str(version):
        raise CheckpointError(f"{path} has {format} {VERSION_KEY}={found!r}; this attiqa reads "
                              f"{VERSION_KEY}={version}")
    return state, meta


def weight_file_option_error(path: Optional[PathLike], option: str = "--checkpoint") -> Optional[str]:
    """``"--checkpoint DIR is a folder, expected a .safetensors file"`` when the option
    names a folder (a run folder given for its checkpoint); None otherwise (also for a
    missing file, which the loader names)."""
    if path is not None and Path(path).is_dir():
        return f"{option} {path} is a folder, expected a .safetensors file"
    return None


def read_tensor_shapes(path: PathLike) -> Dict[str, Tuple[int, ...]]:
    """``{name: shape}`` of every tensor in a safetensors file, from its header alone (no
    tensor is read), so that a loader can compare them with the network a file describes
    before building it. An unreadable file is a :class:`CheckpointError` naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(int(n) for n in f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def json_metadata(path: PathLike, meta: Mapping[str, str], *keys: str, optional: Sequence[str] = ()) -> Dict[str, Any]:
    """The JSON metadata values of ``keys`` (and of ``optional`` keys, ``{}`` when absent);
    a missing or malformed one is a :class:`CheckpointError` naming the file."""
    out: Dict[str, Any] = {}
    try:
        for key in keys:
            out[key] = json.loads(meta[key])
        for key in optional:
            out[key] = json.loads(meta[key]) if key in meta else {}
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has missing or malformed metadata: {exc!r}") from exc
    return out


def _shape(value: Any) -> Tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def state_dict_differences(expected: Mapping[str, Any], found: Mapping[str, Any], *,
                           first: Sequence[str] = ()) -> str:
    """What keeps ``found`` from loading strictly into a module whose state dict is
    ``expected``: ``"missing keys [...], unexpected keys [...], shape mismatches [...]"``,
    or ``""`` when nothing differs. Each list holds its first :data:`LISTED_DIFFERENCES`
    entries and ``"and N more"`` when longer. Keys are sorted, but shape mismatches are
    in the network's order (``expected``'s: the first is nearest the input), those of keys
    starting with one of ``first`` before the others. Values are tensors (also
    on the meta device) or shapes (:func:`read_tensor_shapes`)."""

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{k}: checkpoint {_shape(found[k])} vs network {_shape(expected[k])}"
        for k in sorted(expected, key=lambda k: not k.startswith(tuple(first)))  # stable: the network's order
        if k in found and _shape(found[k]) != _shape(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return ""
    return (f"missing keys {_first(missing)}, unexpected keys {_first(unexpected)}, "
            f"shape mismatches {_first(mismatched)}")


#: How many names of each kind :func:`state_dict_differences` lists before "and N more".
LISTED_DIFFERENCES = 5


def _first(names: Sequence[str], count: int = LISTED_DIFFERENCES) -> str:
    """``"['a', 'b']"``, or the first ``count`` names and how many more
    (``"['a', ..., 'e', and 12 more]"``): a file of another network (hundreds of keys)
    stays a readable line."""
    if len(names) <= count:
        return repr(list(names))
    return f"[{', '.join(repr(n) for n in names[:count])}, and {len(names) - count} more]"


def check_state_tensors(path: Any, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Raise a one-line :class:`CheckpointError` naming ``path`` and the tensor when a
    tensor that is floating point in ``expected`` is not floating point in ``state`` (or
    the other way round), or when a floating tensor holds NaN or infinity."""
    for key in sorted(state):
        value, want = state[key], expected.get(key)
        if want is not None and value.is_floating_point() != want.is_floating_point():
            kind = "floating point" if want.is_floating_point() else "integer"
            raise CheckpointError(
                f"{path}: tensor {key!r} has dtype {value.dtype}; the network expects {kind} ({want.dtype})"
            )
        if value.is_floating_point():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                first = float(value[bad].flatten()[0])
                raise CheckpointError(
                    f"{path}: tensor {key!r} holds {int(bad.sum())} non-finite value(s) of {value.numel()} "
                    f"(first: {first})"
                )


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Any, *,
                does_not_match: str) -> None:
    """Load ``state`` into ``module`` strictly, cast to the module's dtypes; a difference
    raises ``CheckpointError("<path> does not match <does_not_match>: <differences>")`` and
    a wrong or non-finite tensor :func:`check_state_tensors` 's error."""
    expected = module.state_dict()
    differences = state_dict_differences(expected, state)
    if differences:
        raise CheckpointError(f"{path} does not match {does_not_match}: {differences}")
    check_state_tensors(path, state, expected)
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _is_safetensors(path: Path) -> Optional[str]:
    """None when ``path`` reads as a safetensors file, else why it does not."""
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except (SafetensorError, OSError, ValueError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_user_state_dict(path: PathLike, *, what: str, state_keys: Sequence[str] = TIMM_STATE_KEYS
                         ) -> Dict[str, torch.Tensor]:
    """The tensors of a weight file a user names (a backbone's pretrained weights, CLIP
    weights), read without running any code the file could carry.

    A safetensors file is read as such (a file named ``.safetensors`` must be one); any
    other file goes through ``torch.load(weights_only=True)``, which builds tensors and
    plain containers only and refuses every other pickled object (torch >= 2.6, the floor
    in setup.cfg, where ``weights_only`` has no known way around it). A checkpoint dict is
    unwrapped at the first of ``state_keys`` it holds (as the library that reads it would),
    and the result must map names to tensors. Every failure is one :class:`CheckpointError`
    naming ``what`` and the file.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable, refused by ``weights_only``, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    why = _is_safetensors(path)
    if why is None:
        return load_file(str(path), device="cpu")
    if path.suffix.lower() == ".safetensors":
        raise CheckpointError(f"{what} {path} is named .safetensors but is not a readable safetensors file ({why})")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (a class outside tensors and containers), zip/EOF errors
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{what} {path} is neither a safetensors file nor a PyTorch file of tensors only (torch.load with "
            f"weights_only=True refused it: {type(exc).__name__}: {first}); nothing in it was run. Convert it to "
            f"safetensors where it came from (safetensors.torch.save_file(state_dict, 'weights.safetensors'))"
        ) from None
    if isinstance(data, Mapping):
        for key in state_keys:
            if data.get(key) is not None:
                data = data[key]
                break
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError(f"{what} {path} holds no state dict (a mapping of names to tensors), "
                              f"got {type(data).__name__}")
    bad = [k for k, v in data.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{what} {path}: entries {bad[:5]} are not named tensors (a state dict holds only those)")
    return dict(data)


@contextlib.contextmanager
def safetensors_copy(path: PathLike, *, what: str, state_keys: Sequence[str] = TIMM_STATE_KEYS) -> Iterator[Path]:
    """A safetensors file with the tensors of the user's weight file ``path``, for a
    library (timm, open_clip) that reads a file by name: so the library never unpickles
    it, whatever its version. A readable ``.safetensors`` file is yielded as it is (a
    safetensors file of another name as a link, or copy, named ``.safetensors``); any other
    file is read by :func:`read_user_state_dict` and written, tensors unchanged, to a
    temporary file that is removed after the block."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    if _is_safetensors(path) is None and path.suffix.lower() == ".safetensors":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="attiqa-weights-") as folder:
        target = Path(folder) / "weights.safetensors"
        if _is_safetensors(path) is None:
            try:
                target.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, target)
        else:
            state = read_user_state_dict(path, what=what, state_keys=state_keys)
            save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(target))
        yield target
