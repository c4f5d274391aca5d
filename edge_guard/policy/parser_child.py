"""The parser worker process: load one custom `parse()`, answer parse requests until EOF.

Started by `parser_worker` (the calling side, which documents the protocol). In a worker,
`IN_WORKER` is true: a parser running there never starts workers of its own.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

IN_WORKER = False


def code_digest(code: Any) -> str:
    """A digest of what a code object does, equal across processes (marshal's bytes are
    not: they depend on reference counts)."""
    import hashlib

    def walk(c: Any) -> Any:
        if hasattr(c, "co_code"):
            consts = tuple(walk(k) for k in c.co_consts)
            return (c.co_code, c.co_names, c.co_varnames, c.co_freevars, c.co_cellvars, consts)
        if isinstance(c, frozenset):  # its order follows string hashing, per process
            return ("frozenset", tuple(sorted(repr(walk(k)) for k in c)))
        if isinstance(c, tuple):
            return tuple(walk(k) for k in c)
        return c

    return hashlib.sha256(repr(walk(code)).encode()).hexdigest()


def _load(ref: Any) -> Callable[[Any], Any]:
    import importlib
    import importlib.util
    import marshal
    import pickle
    import types

    module: types.ModuleType | None = None
    try:
        found = importlib.import_module(ref.module)
    except Exception:
        found = None
    if found is not None and getattr(found, "__file__", None) == ref.file:
        module = found
    if module is None:  # a file loaded by path (a policy's parse.py)
        name = ref.module
        spec = importlib.util.spec_from_file_location(name, ref.file or "")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {ref.file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(name, module)
        # From the source, never a cached .pyc (its stamp is the size and the mtime in whole
        # seconds: a quick same-size edit would run the old code).
        with open(ref.file or "", "rb") as fh:
            source = fh.read()
        exec(compile(source, ref.file or "", "exec", dont_inherit=True), vars(module))
    if ref.attr is not None:
        fn = getattr(module, ref.attr)
        code = getattr(fn, "__code__", None)
        if code is not None and ref.digest and code_digest(code) != ref.digest:
            raise ImportError(f"{ref.file} changed since it was loaded: load the policy again")
        return fn
    name, defaults, kwdefaults, cells = pickle.loads(ref.extra or b"")
    closure = tuple(types.CellType(v) for v in cells) or None
    fn = types.FunctionType(marshal.loads(ref.code or b""), vars(module), name, defaults, closure)
    fn.__kwdefaults__ = kwdefaults
    return fn


def _reply(fn: Callable[[Any], Any], response: Any) -> tuple[Any, ...]:
    """(tag, value, same response, (stdout, stderr) the parser printed)."""
    import contextlib
    import dataclasses
    import io

    from edge_guard.result import ClassificationResult

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = fn(response)
    except BaseException as exc:  # sys.exit() and the like fail one item
        result, reply = None, ("raised", f"{type(exc).__name__}: {exc}", False)
    else:
        reply = ("type", type(result).__name__, False)
    printed = (out.getvalue(), err.getvalue())
    if not isinstance(result, ClassificationResult):
        return (*reply, printed)
    if type(result) is not ClassificationResult:  # a subclass of the parser's own module
        fields = dataclasses.fields(ClassificationResult)
        result = ClassificationResult(**{f.name: getattr(result, f.name) for f in fields})
    same = result.model_response is response
    if same:
        result.model_response = None
    return ("ok", result, same, printed)


def _watch_parent(parent: int) -> None:
    """End the worker when its parent is gone (a parser may never read the pipe again)."""
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def serve() -> None:
    """The worker's loop: load one parser, then answer parse requests until EOF."""
    import contextlib
    import io
    import pickle
    import signal
    from multiprocessing.connection import Connection

    global IN_WORKER
    IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides what Ctrl-C stops
    recv = Connection(os.dup(0), writable=False)
    send = Connection(os.dup(1), readable=False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # what a parser writes to fd 1 goes to stderr, never into the pipe
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    fn: Callable[[Any], Any] | None = None
    while True:
        try:
            message = pickle.loads(recv.recv_bytes())
        except EOFError:
            return
        if message[0] == "load":
            quiet = io.StringIO()  # its module printed once already, when it was loaded
            try:
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    fn = _load(message[1])
            except BaseException as exc:
                why = f"loading it in the parser worker failed: {type(exc).__name__}: {exc}"
                send.send_bytes(pickle.dumps(("error", why)))
                continue
            send.send_bytes(pickle.dumps(("ready", None)))
            continue
        assert fn is not None
        for response in message[1]:
            reply = _reply(fn, response)
            try:
                data = pickle.dumps(reply)
            except Exception as exc:
                why = f"returned a result that cannot be sent back ({type(exc).__name__}: {exc})"
                data = pickle.dumps(("unsendable", why, False, reply[-1]))
            send.send_bytes(data)
