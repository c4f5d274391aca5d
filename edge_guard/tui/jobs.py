"""Model access for the TUI: classifier creation, one-model-at-a-time lock, cancellation.

Work with the model happens in thread workers. `ModelAccess` builds classifiers (through a
factory tests can replace), serialises use of the one loaded engine, and makes every
generation cancellable: `CancellableBackend` wraps each request's logits processor with a
check of a cancel flag, so a cancelled generation stops at its next token (the cache key is
computed before the backend is reached, so the wrapper never changes a key).

The Workbench, Runs and Tests jobs ask for a warm classifier (`warm=True`): with a
keep-alive above 0 their labels are computed by the warm engine the commands share
(`edge_guard.warm.route`; one model load for the TUI and the shell), and a cancel hangs
up the job's requests, so the engine cancels their work. What the engine cannot take
(steering, combined sets, a custom factory's own engine) runs here as before.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edge_guard.errors import EdgeGuardError


class Cancelled(Exception):
    """Raised inside a generation when the user cancels (deliberately not an EdgeGuardError,
    so the engine re-raises it instead of storing a failed result)."""


class CancelFlag:
    """A cancel request shared between the UI and a worker thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def set(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (in the setting thread) when set, at once if it is already;
        returns a function that forgets it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


class CancellableBackend:
    """Delegates to a backend; every request checks `flag` before each sampled token."""

    def __init__(self, inner: Any, flag: CancelFlag) -> None:
        self._inner = inner
        self._flag = flag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def execute(self, requests: Sequence[Any], n_parallel: int | None = None) -> Iterator[Any]:
        self._flag.check()
        wrapped = [replace(r, logits_processor=self._wrap(r.logits_processor)) for r in requests]
        return self._inner.execute(wrapped, n_parallel=n_parallel)

    def _wrap(self, inner: Callable[..., Any] | None) -> Callable[..., Any]:
        flag = self._flag

        def processor(output_ids: Sequence[int], logits: Any) -> Any:
            flag.check()
            return inner(output_ids, logits) if inner is not None else None

        return processor


@dataclass(frozen=True)
class RunOptions:
    """What the user chose in the TUI's controls; None = not chosen there, so the TUI's
    `Settings` decide (its command flags, the environment, config.toml, the defaults)."""

    model: str | None = None
    style: str | None = None
    effort: str | None = None
    max_tokens: int | str | None = None  # the box's text is checked by `resolve_settings`
    temperature: float | None = None
    reasoning: str | None = (
        None  # full | none | none-empty-analysis (edge_guard.classification.onepass)
    )

    def controls(self) -> dict[str, Any]:
        """The chosen values as `Settings` fields (unchosen ones left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


# factory(policy, options, *, store, use_cache, settings=None) -> Classifier
ClassifierFactory = Callable[..., Any]
# steer(classifier, texts) -> logits_processors argument for Classifier.iter (tests only)
Steering = Callable[[Any, Sequence[str]], Any]


def tui_settings(options: RunOptions, settings: Any = None, *, use_cache: bool = True) -> Any:
    """THE resolution of the TUI's request: its controls over `settings` (default: env and
    config.toml), checked by `resolve_settings`, errors naming the control."""
    from edge_guard.settings.resolve import resolve_settings

    base = settings if settings is not None else resolve_settings(door="tui")
    flags = {**options.controls(), "use_cache": None if use_cache else False}
    return resolve_settings(flags, base=base, door="tui")


def default_classifier_factory(
    policy: Any,
    options: RunOptions,
    *,
    store: Any,
    use_cache: bool = True,
    engine_settings: Any = None,
    settings: Any = None,
    warm: bool = False,
) -> Any:
    """A classifier for the TUI: `settings` (default: env/config.toml) with the user's
    choices (`tui_settings`); a missing model raises the registry's one-line error.
    `warm`: on the warm engine for its model and engine settings (not with
    `engine_settings`, which pin an engine of this process)."""
    from edge_guard.api import build_classifier
    from edge_guard.classification.classifier import make_backend

    chosen = tui_settings(options, settings, use_cache=use_cache)
    backend = None
    if engine_settings is not None and chosen.backend == "local":
        backend = make_backend(chosen.model, engine_settings)
    clf = build_classifier(policy, chosen, backend=backend, store=store)
    if not warm or backend is not None or getattr(store, "path", ":memory:") == ":memory:":
        return clf
    from edge_guard.warm.route import wrap

    return wrap(clf, chosen.replace(db=store.path))  # the engine stores where the TUI reads


class ModelAccess:
    """Creates classifiers and lets one job at a time use the model."""

    def __init__(
        self,
        factory: ClassifierFactory | None = None,
        steering: Steering | None = None,
        settings: Any = None,
    ) -> None:
        self.factory = factory or default_classifier_factory
        self.steering = steering
        self.settings = settings  # the TUI's spec, handed to the factory with the controls
        self._lock = threading.Lock()
        self._flags: weakref.WeakSet[CancelFlag] = weakref.WeakSet()

    def new_flag(self) -> CancelFlag:
        """A cancel flag for one job; `cancel_all` (on quit) sets every live one."""
        flag = CancelFlag()
        self._flags.add(flag)
        return flag

    def cancel_all(self) -> None:
        for flag in list(self._flags):
            flag.set()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def acquire(self, flag: CancelFlag, on_wait: Callable[[], None] | None = None) -> None:
        """Wait for the model (raises `Cancelled` if cancelled while waiting)."""
        waited = False
        while not self._lock.acquire(timeout=0.1):
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            flag.check()

    def release(self) -> None:
        self._lock.release()

    def classifier(
        self,
        policy: Any,
        options: RunOptions,
        *,
        store: Any,
        flag: CancelFlag,
        use_cache: bool = True,
        warm: bool = False,
    ) -> Any:
        """A classifier for one job, cancelled by `flag`. `warm`: on the warm engine when
        the factory can build one (the default factory; module docstring)."""
        extra: dict[str, Any] = {"settings": self.settings} if self._takes("settings") else {}
        if warm and self._takes("warm"):
            extra["warm"] = True
        clf = self.factory(policy, options, store=store, use_cache=use_cache, **extra)
        from edge_guard.warm.route import WarmClassifier

        if isinstance(clf, WarmClassifier):
            clf.use_backend(CancellableBackend(clf.local.backend, flag))  # what runs here
            clf.cancel_with(flag)  # and what runs on the engine
        else:
            clf.backend = CancellableBackend(clf.backend, flag)
        return clf

    def _takes(self, name: str) -> bool:
        """Whether the factory takes `name=` (a custom one may not: `settings`, it resolves
        its own; `warm`, it builds its own engine)."""
        import inspect

        if name == "settings" and self.settings is None:
            return False
        try:
            params = inspect.signature(self.factory).parameters.values()
        except (TypeError, ValueError):
            return False
        return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)

    def processors(self, classifier: Any, texts: Sequence[str]) -> Any:
        return self.steering(classifier, texts) if self.steering is not None else None


def model_missing_hint(ref: str) -> str | None:
    """A line for newcomers when `ref` names a model that is not on this machine (no I/O
    beyond looking for the file; None when it is there or the reference is invalid)."""
    try:
        from edge_guard.registry import lookup

        target = lookup(ref or None)
    except Exception:
        return None
    if target.kind in ("manifest", "hf") and target.path is None:
        return (
            f"Model {target.id} is not downloaded yet: pull it on the Models screen (F7), "
            "or type synth:tiny-o200k as the model to try the app with a tiny random model."
        )
    return None


def error_text(exc: BaseException) -> str:
    """The one line a user sees for a failure in a worker."""
    from edge_guard.errors import ModelNotFound

    if isinstance(exc, ModelNotFound):
        return f"{exc} — or pull it on the Models screen (F7); synth:tiny-o200k works offline"
    if isinstance(exc, EdgeGuardError):  # in the TUI's terms where the error has its own
        return exc.for_door("tui") if hasattr(exc, "for_door") else str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
