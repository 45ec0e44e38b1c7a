"""Validation of a job, in one place: every check a job passes before it is accepted.

`check_spec` runs at submit, on the caller's thread (a control connection, or an in-process
`JobClient`), before the store journals the job: types and sizes of the options, FFT input
headers (dtype, shape, limits), patterns and formats, and the paths (confined under the
allowed roots when the daemon has any, an input that is a regular file, an output directory
that exists, an output that is not the input). It returns the spec with its paths resolved,
which is what the journal keeps. Every file is opened beneath its root (`beneath`): a FIFO
or a symlink swapped in can only refuse this submit, never block it.

Whether the output already exists (`output_taken`) is found on the same thread and handed to
the store with the spec: the store refuses it unless the spec says ``overwrite``, after an
idempotency key is looked up (a retried submit of a finished job finds the job, not its
output). The store never opens or stats a user's file itself: a job that starts long after
it was accepted is checked again by its own reader and writer, which open its files beneath
the roots as they start (a symlink may have been swapped in since), and fail the job if they
cannot.

A path problem is a `Refused` with `ErrorCode.INVALID_PATH`; anything else is an
`InvalidArgument`.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import threading
from typing import Any, Final

import numpy as np

from actord import InvalidArgument
from actord.runtime.errors import ErrorCode, Refused

from .beneath import Escape, NotRegular, open_directory, open_file
from .formats import resolve_format
from .model import (
    FFT_MAX_CHUNK_ELEMENTS,
    FFT_MAX_CHUNKS,
    FFT_MAX_ELEMENTS,
    FFT_MAX_SEED,
    FFT_MAX_SIDE,
    LOG_MAX_BLOCK_BYTES,
    LOG_MAX_DECOMPRESSED_BYTES,
    LOG_MAX_LINE_BYTES,
    LOG_MAX_PATTERN,
    LOG_MAX_RATIO,
    REJECTS_SUFFIX,
    FFTOptions,
    JobKind,
    JobSpec,
    LogOptions,
    Transform,
)
from .paths import confine, confine_pair

__all__ = [
    "Roots",
    "check_spec",
    "input_refused",
    "output_refused",
    "output_taken",
    "read_npy_header",
    "resolve",
    "written_paths",
]

Roots = tuple[tuple[str, ...], tuple[str, ...]]  # (input roots, output roots)
_FINAL_DTYPES: Final = ("complex128", "complex64")


def check_spec(spec: JobSpec, roots: Roots | None = None) -> JobSpec:
    """The spec with its paths resolved, if it may be accepted; else raise (see the module)."""
    _check_types(spec)
    spec = _check_paths(resolve(spec, roots), roots)
    _check_options(spec, roots)
    return spec


def resolve(spec: JobSpec, roots: Roots | None = None) -> JobSpec:
    """The spec with its paths resolved (symlinks followed) and confined under `roots`, as
    the journal keeps it; nothing needs to exist. Raises `Refused` (invalid_path)."""
    if not isinstance(spec.output, str) or not isinstance(spec.input, str | None):
        raise InvalidArgument("output and input must be strings")
    if roots is not None:
        inputs, outputs = roots
        if spec.input is None:
            source, output = None, confine(spec.output, outputs, what="output")
        else:
            source, output = confine_pair(spec.input, spec.output, inputs, outputs)
        if spec.kind is JobKind.LOG:  # a symlink named like the rejects file may point out
            confine(output + REJECTS_SUFFIX, outputs, what="rejects file")
    else:  # an in-process client: any path this process may use
        if "\x00" in spec.output or (spec.input is not None and "\x00" in spec.input):
            raise _refuse("paths must not contain NUL bytes")
        output = os.path.realpath(spec.output)
        source = None if spec.input is None else os.path.realpath(spec.input)
    for path in (output, source):
        try:
            (path or "").encode()
        except UnicodeEncodeError:  # a name (or a link's target) that is not UTF-8
            raise _refuse(f"{path!r} is not valid UTF-8: the journal keeps paths as text") from None
    return JobSpec(spec.kind, output, source, spec.options, overwrite=spec.overwrite)


def written_paths(spec: JobSpec) -> tuple[str, ...]:
    """The files a job publishes: its output, and a log job's rejects file."""
    if spec.kind is JobKind.LOG:
        return (spec.output, spec.output + REJECTS_SUFFIX)
    return (spec.output,)


def output_taken(spec: JobSpec, roots: Roots | None = None) -> str | None:
    """Why the job may not write its output (it exists, and `overwrite` is not set), or None.
    Its directory is opened beneath the output roots: one that cannot be is left to the
    path checks (this answers None)."""
    if spec.overwrite:
        return None
    try:
        with open_directory(os.path.dirname(spec.output), None if roots is None else roots[1]) as d:
            for path in written_paths(spec):
                if d.lstat(os.path.basename(path)) is not None:
                    return (
                        f"{path} already exists: to replace it, submit again with --overwrite "
                        '(actorctl submit ... --overwrite; "overwrite": true in the protocol)'
                    )
    except OSError:
        return None
    return None


# -- paths ---------------------------------------------------------------------------------


def _refuse(message: str) -> Refused:
    return Refused(ErrorCode.INVALID_PATH, message)


def input_refused(source: str, error: OSError) -> Refused:
    """The refusal of an input that cannot be opened beneath its root (at submit, or by its
    reader as the job starts: the same words)."""
    if isinstance(error, Escape):
        return _refuse(f"the input {source} leads out of its allowed root: {error.strerror}")
    if isinstance(error, FileNotFoundError):
        return _refuse(f"the input {source} does not exist or is not a file")
    return _refuse(f"the input {source} does not exist or is not a file: {error.strerror}")


def output_refused(output: str, error: OSError) -> Refused:
    """The refusal of an output whose directory cannot be opened beneath its root (at submit,
    or by its writer as the job starts: the same words)."""
    if isinstance(error, Escape):
        return _refuse(f"the output {output} leads out of its allowed root: {error.strerror}")
    return _refuse(f"no directory for the output {output}: {error.strerror}")


def _check_paths(resolved: JobSpec, roots: Roots | None = None) -> JobSpec:
    """What must hold of a resolved spec's paths for its job to run now, found by opening
    them beneath their roots (`beneath`)."""
    inputs, outputs = (None, None) if roots is None else roots
    output, source = resolved.output, resolved.input
    written: list[os.stat_result] = []
    try:
        directory = open_directory(os.path.dirname(output), outputs)
    except OSError as error:
        raise output_refused(output, error) from None
    with directory:
        for path in written_paths(resolved):
            found = directory.lstat(os.path.basename(path))
            if found is not None and stat.S_ISDIR(found.st_mode):
                raise _refuse(f"{path} is a directory")
            if found is not None:
                written.append(found)
    if source is not None:
        try:
            fd = open_file(source, inputs)
        except OSError as error:
            raise input_refused(source, error) from None
        try:
            found = os.fstat(fd)
        finally:
            os.close(fd)
        if any((f.st_dev, f.st_ino) == (found.st_dev, found.st_ino) for f in written):
            raise _refuse("the output (or its rejects file) would overwrite the input")
    return resolved


# -- types and options ---------------------------------------------------------------------


def _check_types(spec: JobSpec) -> None:
    # The wire decoder checks what a socket client sends; an in-process caller builds the
    # dataclasses itself, and whatever it puts in must be journaled and read back alike.
    if not isinstance(spec.kind, JobKind) or not isinstance(spec.overwrite, bool):
        raise InvalidArgument("kind must be a JobKind and overwrite a bool")
    options = spec.options
    if isinstance(options, LogOptions):
        for name in ("format", "pattern"):
            if not isinstance(getattr(options, name), str | None):
                raise InvalidArgument(f"{name}: must be a string")
        for name in ("block_bytes", "max_line_bytes", "max_decompressed_bytes", "max_ratio"):
            _integer(name, getattr(options, name))
    elif isinstance(options, FFTOptions):
        if not isinstance(options.dtype, str):
            raise InvalidArgument("dtype: must be a string")
        _integer("seed", options.seed)
        if not 0 <= options.seed < FFT_MAX_SEED:
            raise InvalidArgument(f"seed: must be between 0 and {FFT_MAX_SEED - 1}")


def _integer(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name}: must be an integer, got {value!r}")


def _check_options(spec: JobSpec, roots: Roots | None = None) -> None:
    if spec.kind is JobKind.LOG:
        _check_log(spec)
    else:
        _check_fft(spec, None if roots is None else roots[0])


def _check_log(spec: JobSpec) -> None:
    if not isinstance(spec.options, LogOptions):
        raise InvalidArgument("a log job takes LogOptions")
    if spec.input is None:
        raise InvalidArgument("a log job needs an input file")
    log = spec.options
    if not 1 <= log.block_bytes <= LOG_MAX_BLOCK_BYTES:
        raise InvalidArgument(
            f"block_bytes must be between 1 and {LOG_MAX_BLOCK_BYTES}, got {log.block_bytes}"
        )
    if not 1 <= log.max_line_bytes <= LOG_MAX_LINE_BYTES:
        raise InvalidArgument(
            f"max_line_bytes must be between 1 and {LOG_MAX_LINE_BYTES}, got {log.max_line_bytes}"
        )
    if not 1 <= log.max_decompressed_bytes <= LOG_MAX_DECOMPRESSED_BYTES:
        raise InvalidArgument(
            f"max_decompressed_bytes must be between 1 and {LOG_MAX_DECOMPRESSED_BYTES},"
            f" got {log.max_decompressed_bytes}"
        )
    if not 1 <= log.max_ratio <= LOG_MAX_RATIO:
        raise InvalidArgument(
            f"max_ratio must be between 1 and {LOG_MAX_RATIO}, got {log.max_ratio}"
        )
    if log.pattern is not None and len(log.pattern) > LOG_MAX_PATTERN:
        raise InvalidArgument(
            f"pattern: at most {LOG_MAX_PATTERN} characters, got {len(log.pattern)}"
        )
    resolve_format(log.format, log.pattern)  # compiles a pattern: raises if it is not one


def _check_fft(spec: JobSpec, inputs: tuple[str, ...] | None = None) -> None:
    if not isinstance(spec.options, FFTOptions):
        raise InvalidArgument("an FFT job takes FFTOptions")
    options = spec.options
    if (spec.input is None) == (options.synthetic is None):
        raise InvalidArgument("an FFT job needs either an input .npy or a synthetic shape")
    if options.dtype not in _FINAL_DTYPES:
        raise InvalidArgument(f"dtype must be one of {_FINAL_DTYPES}")
    if not isinstance(options.transform, Transform):
        raise InvalidArgument(f"transform must be one of {[t.value for t in Transform]}")
    if spec.input is not None:
        _check_npy_input(spec.input, options.transform, inputs)
        return
    shape = options.synthetic
    if (
        not isinstance(shape, tuple)
        or len(shape) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
    ):
        raise InvalidArgument(f"synthetic must be an (N, H, W) shape of integers, got {shape!r}")
    if min(shape) < 1:
        raise InvalidArgument(f"synthetic dimensions must be positive, got {shape}")
    _check_fft_limits(shape, "the synthetic shape")


def _check_fft_limits(shape: tuple[int, ...], what: str) -> None:
    """Refuse an (N, H, W) stack over the limits documented in the model (FFT_MAX_*)."""
    n, h, w = shape
    if n > FFT_MAX_CHUNKS:
        raise InvalidArgument(f"{what} {shape} is too big: at most {FFT_MAX_CHUNKS} chunks")
    if max(h, w) > FFT_MAX_SIDE:
        raise InvalidArgument(f"{what} {shape} is too big: at most {FFT_MAX_SIDE} per side")
    if h * w > FFT_MAX_CHUNK_ELEMENTS:
        raise InvalidArgument(
            f"{what} {shape} is too big: at most {FFT_MAX_CHUNK_ELEMENTS} elements per chunk"
        )
    if n * h * w > FFT_MAX_ELEMENTS:
        raise InvalidArgument(
            f"{what} {shape} is too big: at most {FFT_MAX_ELEMENTS} elements in all"
        )


def _check_npy_input(
    path: str, transform: Transform, inputs: tuple[str, ...] | None = None
) -> None:
    """Refuse an FFT input that is not a numeric (N, H, W) `.npy` stack within the limits.

    Only the header is read (a few hundred bytes), never the array: an input may be tens of
    GiB, and a submit must answer at once. A stack of no chunks is accepted (its output is an
    empty stack); a chunk with a zero side has no transform.
    """
    try:
        with open(open_file(path, inputs), "rb") as file:  # a descriptor opened beneath
            header = read_npy_header(path, file)
            data_offset = file.tell()
            size = os.fstat(file.fileno()).st_size
    except (Escape, NotRegular) as error:  # swapped since its path was checked
        raise input_refused(path, error) from None
    except OSError as error:
        raise InvalidArgument(f"cannot read the input {path}: {error.strerror or error}") from None
    shape, dtype = header
    if dtype.hasobject:
        raise InvalidArgument(
            f"{path} holds Python objects (dtype {dtype}): an FFT input must be numeric"
        )
    if dtype.fields is not None or not np.issubdtype(dtype, np.number):
        raise InvalidArgument(
            f"{path}: an FFT input must be numeric (integer, real or complex), not {dtype}"
        )
    if len(shape) != 3:
        raise InvalidArgument(f"{path}: an FFT input must be an (N, H, W) stack, got shape {shape}")
    if 0 in shape[1:]:
        raise InvalidArgument(f"{path}: an FFT input needs chunks with no zero side, got {shape}")
    _check_fft_limits(shape, f"the input {path}")
    if transform is Transform.RFFT2 and np.issubdtype(dtype, np.complexfloating):
        raise InvalidArgument(
            f"{path}: rfft2 needs a real input, and this one is {dtype}: use fft2 for a complex"
            " input"
        )
    needed = data_offset + shape[0] * shape[1] * shape[2] * dtype.itemsize
    if size < needed:
        raise InvalidArgument(f"{path} is truncated: {size} bytes, its header says {needed}")


# The header's length field, by .npy format version: 1.0 and 2.0 (3.0 only differs by UTF-8
# field names, which only a structured, non-numeric dtype has).
_HEADER_LENGTH: Final = {(1, 0): struct.Struct("<H"), (2, 0): struct.Struct("<I")}
# numpy's own bound on a header it parses (`max_header_size`): a longer one is refused before
# it is read, whatever its length field claims (up to 4 GiB in format 2.0).
_MAX_HEADER: Final = 10_000
# _parse_lock serialises the parse of headers (numpy's `ast.literal_eval`): CPython 3.11 keeps
# the AST constructor's recursion depth per interpreter, not per thread, and two readers
# parsing at once failed a healthy job with "AST constructor recursion depth mismatch"
# (CPython gh-106905). The reads happen outside it: a slow disk holds up no other header.
_parse_lock: Final = threading.Lock()


def read_npy_header(path: str, file: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype in a `.npy` header; the file is left at the start of the data.
    Any thread: the parse is serialised (see `_parse_lock`)."""
    try:
        version = np.lib.format.read_magic(file)
    except ValueError:
        raise InvalidArgument(f"{path} is not a .npy file (it does not start as one)") from None
    length_field = _HEADER_LENGTH.get(version)
    if length_field is None:
        raise InvalidArgument(f"{path}: .npy format {version[0]}.{version[1]} is not supported")
    field = file.read(length_field.size)
    if len(field) < length_field.size:
        raise InvalidArgument(f"{path} has a malformed .npy header: it ends in its length")
    (length,) = length_field.unpack(field)
    if length > _MAX_HEADER:
        raise InvalidArgument(
            f"{path} has a malformed .npy header: {length} bytes long (at most {_MAX_HEADER})"
        )
    header = file.read(length)
    if len(header) < length:
        raise InvalidArgument(f"{path} has a malformed .npy header: it is cut short")
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    try:
        with _parse_lock:
            shape, fortran_order, dtype = read_header(io.BytesIO(field + header))
    except Exception as error:  # noqa: BLE001 - any parse failure is a refusal
        # numpy parses the header as a Python literal: a malformed one raises ValueError,
        # SyntaxError or tokenize.TokenError, by numpy version. Whatever the file holds, the
        # answer is a refusal: a submit is answered, never dropped.
        raise InvalidArgument(f"{path} has a malformed .npy header: {error}") from None
    if any(n < 0 for n in shape):  # numpy takes any integers: a negative one is corrupt
        raise InvalidArgument(f"{path} has a malformed .npy header: shape {shape}")
    if fortran_order and len(shape) > 1:  # a chunk would be strided across the whole file
        raise InvalidArgument(
            f"{path} is stored in Fortran order: save it in C order "
            "(np.save(path, np.ascontiguousarray(stack)))"
        )
    return tuple(int(n) for n in shape), dtype
