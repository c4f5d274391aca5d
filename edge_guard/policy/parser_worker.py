"""Custom `parse()` functions run in a worker process that can be stopped.

A policy's `parse.py` is user code: it may raise, return the wrong type or never return.
Each custom parser runs in a small persistent worker subprocess (one per parser while it is
in use; a caller that finds it busy gets a second one). The caller waits for each answer up
to the time limit; a parser that overruns is killed with its worker and the next call starts
a fresh one. The calling process is left as it was, whichever thread calls: no signal
handler is installed and no thread is started.

The worker finds the parser again where it was defined: its module (imported by name, or
executed from its file under that name) and the module-level name bound to it; a function
bound to no module-level name (a nested function) travels as its code object, run with its
module's globals (the module is imported once more in the worker). Built-in parsers (defined
in edge_guard itself), functions of the script being run (`__main__`: loading it again would
run it again) and callables with no module file to load them from are called in the calling
process, without a time limit (`parser_ref` is None); so is any parser inside a worker.

Responses and results travel pickled over the worker's stdin/stdout; a result whose
`model_response` is the response it was given comes back without it (no second copy). In
the worker, `print()` goes to stderr, stdin is empty and Ctrl-C is left to the caller (a
stopped caller kills its worker). The worker ends when its caller closes the pipe, is killed,
or its parent process is gone.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

START_LIMIT_S = 60.0  # starting a worker and importing the parser's module (not parse time)
BATCH = 256  # responses per message to a worker

# Outcomes of one parse: ("ok", result) | ("raised", "Type: message") | ("type", "name")
# | ("timeout", None) | ("died", "why")
Outcome = tuple[str, Any]

_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from edge_guard.policy.parser_child import serve; serve()"
)


@dataclass(frozen=True)
class ParserRef:
    """Where a worker finds a parser: module name and file (its mtime, size and content
    digest: an edited file gets a new worker), and the module-level name bound to it with its code's digest,
    or its code object (`marshal`) with pickled defaults and closure values."""

    module: str
    file: str
    stamp: tuple[int, int, str]
    attr: str | None = None
    digest: str = ""
    code: bytes | None = None
    extra: bytes | None = None


def parser_ref(fn: Callable[[Any], Any]) -> ParserRef | None:
    """How a worker loads `fn`; None when it runs in the calling process (a built-in parser,
    or a callable with no module file to load it from)."""
    import marshal
    import pickle
    import types

    from edge_guard.policy import parser_child

    module = getattr(fn, "__module__", None) or ""
    if module == "edge_guard" or module.startswith("edge_guard."):
        return None  # our own code (combined and taxonomy parsers): no user code to stop
    if parser_child.IN_WORKER or not isinstance(fn, types.FunctionType):
        return None
    g = fn.__globals__
    if g.get("__name__") == "__main__":
        return None  # the caller's script: loading it again would run it again
    file = g.get("__file__")
    if not isinstance(file, str):
        return None  # no file to load it from
    try:
        st = os.stat(file)
        with open(file, "rb") as fh:  # the content too: a same-size edit may keep the mtime
            content = hashlib.sha256(fh.read()).hexdigest()[:16]
    except (OSError, ValueError):
        return None  # no file to load it from
    name, stamp = g.get("__name__") or module, (st.st_mtime_ns, st.st_size, content)
    for attr in ("parse", fn.__name__, *sorted(k for k in g if isinstance(k, str))):
        if g.get(attr) is fn:
            digest = parser_child.code_digest(fn.__code__)
            return ParserRef(name, file, stamp, attr=attr, digest=digest)
    try:
        cells = tuple(c.cell_contents for c in fn.__closure__ or ())
        extra = pickle.dumps((fn.__name__, fn.__defaults__, fn.__kwdefaults__, cells))
    except Exception:  # a closure over something that cannot travel: call it here
        return None
    return ParserRef(name, file, stamp, code=marshal.dumps(fn.__code__), extra=extra)


# -- the calling side ---------------------------------------------------------------------
class _Worker:
    """One worker process with `ref`'s parser loaded."""

    def __init__(self) -> None:
        import json
        import subprocess
        from multiprocessing.connection import Connection

        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        try:
            # close_fds=False: the parser sees the file descriptors the caller's process
            # passes on (only inheritable ones; these pipes' own ends are not)
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(sys.path)],
                stdin=child_in,
                stdout=child_out,
                close_fds=False,
            )
        except BaseException:
            for fd in (child_in, to_child, from_child, child_out):
                os.close(fd)
            raise
        os.close(child_in)
        os.close(child_out)
        self.send = Connection(to_child, readable=False)
        self.recv = Connection(from_child, writable=False)
        self.ok = True

    def load(self, ref: ParserRef) -> str | None:
        """Load the parser; None when ready, else why not."""
        import pickle

        try:
            self.send.send_bytes(pickle.dumps(("load", ref)))
            if not self.recv.poll(START_LIMIT_S):
                self.kill()
                return f"the parser worker did not start within {START_LIMIT_S:g} s"
            tag, why = pickle.loads(self.recv.recv_bytes())
        except (EOFError, OSError):
            self.kill()
            return f"the parser worker exited while starting (code {self.proc.wait()})"
        except BaseException:
            self.kill()
            raise
        if tag != "ready":
            self.kill()
            return str(why)
        return None

    def parse(self, responses: Sequence[Any], limit: float) -> list[Outcome]:
        """Outcomes for a prefix of `responses`: all of them, or up to the first that timed
        out or killed the worker (the worker is then dead; the caller goes on in another)."""
        import pickle

        out: list[Outcome] = []
        try:
            self.send.send_bytes(pickle.dumps(("parse", list(responses))))
            for response in responses:
                if not self.recv.poll(limit):
                    self.kill()
                    out.append(("timeout", None))
                    break
                try:
                    data = self.recv.recv_bytes()
                except (EOFError, OSError):
                    out.append(("died", f"the parser worker exited (code {self.kill()})"))
                    break
                try:
                    reply = pickle.loads(data)
                except Exception as exc:  # e.g. an object of a class only its module knows
                    why = (
                        f"returned a result that cannot be read back ({type(exc).__name__}: {exc})"
                    )
                    out.append(("unsendable", why))
                    continue
                tag, value, same, (printed, printed_err) = reply
                if same:  # it returned the response it was given
                    value.model_response = response
                for stream, text in ((sys.stdout, printed), (sys.stderr, printed_err)):
                    if text and stream is not None:  # where its print() went when run here
                        stream.write(text)
                out.append((tag, value))
        except (EOFError, OSError, pickle.PicklingError) as exc:
            code = self.kill()
            why = f"the parser worker failed ({type(exc).__name__}: {exc}; exit code {code})"
            out.append(("died", why))
        except BaseException:  # Ctrl-C, or a cancelled caller: the worker must not go on
            self.kill()
            raise
        return out

    def kill(self) -> int | None:
        self.ok = False
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        for conn in (self.send, self.recv):
            conn.close()
        return code


class _Pool:
    """Idle workers per parser; reset in a forked child (the parent's workers are not its)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.idle: dict[ParserRef, list[_Worker]] = {}

    def take(self, ref: ParserRef) -> _Worker | str:
        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.idle = os.getpid(), {}
            stale = [r for r in self.idle if r.file == ref.file and r.stamp != ref.stamp]
            old = [w for r in stale for w in self.idle.pop(r)]  # its file was edited
            idle = self.idle.get(ref)
            worker = idle.pop() if idle else None
        for w in old:
            w.kill()
        if worker is not None:
            return worker
        try:
            worker = _Worker()
        except OSError as exc:  # no process to be had (limits, memory): these items fail
            return f"the parser worker could not start ({type(exc).__name__}: {exc})"
        why = worker.load(ref)
        return worker if why is None else why

    def give(self, ref: ParserRef, worker: _Worker) -> None:
        if not worker.ok:
            return
        with self.lock:
            if self.pid == os.getpid():
                self.idle.setdefault(ref, []).append(worker)
                return
        worker.kill()

    def close(self) -> None:
        """Stop every idle worker (at exit; workers in use are killed by their callers)."""
        with self.lock:
            mine = self.pid == os.getpid()
            workers = [w for ws in self.idle.values() for w in ws] if mine else []
            self.idle = {}
        for w in workers:
            w.kill()


_POOL = _Pool()
atexit.register(_POOL.close)


def run_in_worker(ref: ParserRef, responses: Sequence[Any], limit: float) -> list[Outcome]:
    """Parse `responses` with `ref`'s parser in worker processes: one outcome each, in order.

    A parser that overruns `limit` on a response (or ends its worker) fails that response
    only; the rest go on in a fresh worker."""
    out: list[Outcome] = []
    while len(out) < len(responses):
        got = _POOL.take(ref)
        if isinstance(got, str):  # it cannot be loaded: every remaining response fails
            return out + [("died", got)] * (len(responses) - len(out))
        try:
            while len(out) < len(responses) and got.ok:
                chunk = responses[len(out) : len(out) + BATCH]
                out += got.parse(chunk, limit)
        finally:
            _POOL.give(ref, got)
    return out
