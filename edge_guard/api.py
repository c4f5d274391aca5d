"""The Python API and the one classifier builder: `classify()` and `build_classifier()`.

`build_classifier(policies, settings)` is how every caller (CLI, TUI, compare, study,
policy tests, scripts, the server) turns a resolved `Settings` into a `Classifier`:
it picks the backend (local engine or server), the store and the prompt/sampling
configuration. `classify(text, policy, model=..., effort=..., max_tokens=...)` takes the
same settings as keywords, resolved like flags (keyword > environment > config.toml >
default), and accepts the seed's `Model` / `InferenceBackend` values.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_guard.backends.local import Backend, EngineSettings
from edge_guard.classification.classifier import Classifier, RunItem, make_backend
from edge_guard.conversation import Conversation
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.policy.core import Policy
from edge_guard.result import ClassificationResult, MultiResult
from edge_guard.settings.resolve import (
    InferenceBackend,
    Model,
    Settings,
    resolve_settings,
)
from edge_guard.store import Store

PolicyRef = str | Path | types.ModuleType | Policy


def build_backend(settings: Settings, *, interactive: bool = False) -> Backend:
    """The backend `settings` name: a server at `settings.url`, else the local engine."""
    if settings.backend == "server":
        from edge_guard.backends.server import server_backend_from_config

        return server_backend_from_config(settings.backend_config(), settings.model)
    return make_backend(
        settings.model, settings.engine_settings(), yes=settings.yes, interactive=interactive
    )


def build_classifier(
    policies: PolicyRef | Sequence[PolicyRef],
    settings: Settings | None = None,
    *,
    backend: Backend | None = None,
    store: Store | None = None,
    sampling: SamplingConfig | None = None,
    interactive: bool = False,
    warm: bool = False,
) -> Classifier:
    """A `Classifier` for one policy or several (or a `PolicySet`), configured by `settings`.

    On an edge-guard server (`settings.backend == "server"`) it is a `RemoteClassifier`,
    and a `PolicySet` goes by its name, so the server applies the set's thresholds (run
    the set with `classify_set_with`, as `classify()` and the CLI do).

    `backend` (a ready backend) and `store` (an open store) replace the ones `settings`
    would build; `sampling` replaces its temperature/seed/max_tokens (top_p/top_k).
    `interactive` lets a missing model be offered for download on a terminal. `warm`
    (the commands; Python when given `keep_alive`): its labels are computed by a warm
    engine for this model and engine settings (`edge_guard.warm`), kept loaded
    `settings.keep_alive` seconds after the last request.
    """
    settings = settings or resolve_settings()
    pset = _as_set(policies) if not isinstance(policies, str | Path) else None  # a PolicySet
    if pset is not None:
        policies = pset.policies
    if backend is None and settings.backend == "server":  # an `edge-guard serve` (detected)
        named = pset is not None and not pset.adhoc  # `-p a -p b`: no name a server knows
        remote = _remote(pset.name if named and pset is not None else policies, settings, sampling)
        if remote is not None:  # a set goes by its name: the server applies its thresholds
            return remote
    warm = warm and backend is None and store is None
    if backend is None:
        backend = build_backend(settings, interactive=interactive)
    classifier = Classifier(
        policies,
        backend,
        style=settings.style,
        effort=settings.effort,
        date=settings.date,
        sampling=sampling or settings.sampling(),
        store=store or Store(settings.db),
        use_cache=settings.use_cache,
        parallel=settings.parallel,
        truncate=settings.truncate,
        reasoning=settings.reasoning,
        cascade=settings.cascade,
    )
    if warm:
        from edge_guard.warm.route import wrap

        return wrap(classifier, settings)
    return classifier


def _remote(policies: Any, settings: Settings, sampling: SamplingConfig | None) -> Any:
    """A classifier on an edge-guard server (None for other servers), handed the whole
    spec: a request option the client cannot send is refused in one line there."""
    from edge_guard.backends.server_client import remote_classifier

    return remote_classifier(
        policies, settings.backend_config(), settings=settings, sampling=sampling
    )


def is_interactive() -> bool:
    """A terminal on stdin and stderr, outside CI: a missing model may be offered for pull."""
    return sys.stdin.isatty() and sys.stderr.isatty() and not os.environ.get("CI")


def _as_set(policy: Any) -> Any:
    """The `PolicySet` that `policy` is or names (a set's name or .toml file), else None."""
    from edge_guard.policy.sets import PolicySet, is_set_ref, load_set

    if isinstance(policy, PolicySet):
        return policy
    return load_set(policy) if isinstance(policy, str | Path) and is_set_ref(policy) else None


def _policy_list(policy: Any) -> list[Any] | None:
    return list(policy) if isinstance(policy, list | tuple) else None


def classify(
    text: str | Conversation | Sequence[str | Conversation],
    policy: PolicyRef | Sequence[PolicyRef],
    model: str | Path | Model | Backend | None = None,
    *,
    backend: str | InferenceBackend | Backend | None = None,
    url: str | None = None,
    api_key_env: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    server_kind: str | None = None,
    ctx: int | None = None,
    gpu_layers: int | str | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    force: bool | None = None,
    yes: bool | None = None,
    style: str | None = None,
    effort: str | None = None,
    date: str | None = None,
    reasoning: str | None = None,
    cascade: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    db: str | Path | None = None,
    use_cache: bool | None = None,
    truncate: bool | None = None,
    keep_alive: float | str | None = None,
    settings: Settings | None = None,
    sampling: SamplingConfig | None = None,
    store: Store | None = None,
    engine_settings: EngineSettings | None = None,
    run_items: Sequence[RunItem] | dict[str, Sequence[RunItem]] | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    logits_processors: Sequence[LogitsProcessor | None] | LogitsProcessor | None = None,
    on_event: Callable[[int, Event], None] | None = None,
) -> ClassificationResult | list[ClassificationResult] | MultiResult | list[MultiResult]:
    """Classify one text (-> one result) or a list (-> results in input order).

    `policy` may be a list of policies or a policy set (`PolicySet`, or a set's name):
    then each text gets a `MultiResult` (one result per policy and the combined
    `flagged`; a set's thresholds on P(violation) applied). The keywords are the `Settings` fields (unset
    ones come from the environment, config.toml, then the defaults; `settings=` gives a
    ready base instead). `model` may also be a ready backend; `backend` a kind
    ("local"/"server"), a seed `InferenceBackend` (a prompt format) or a ready backend.
    `keep_alive` (seconds, or "5m"): compute on a warm engine that stays loaded that long
    after its last request, shared with the commands (`edge_guard.warm`); without it
    the model loads in this process.
    """
    ready = None
    for candidate in (model, backend):
        if candidate is not None and not isinstance(candidate, str | Path):
            ready = candidate
    if ready is model:
        model = None
    if ready is backend:
        backend = None
    flags = {
        "model": model,
        "backend": backend,
        "url": url,
        "api_key_env": api_key_env,
        "concurrency": concurrency,
        "timeout": timeout,
        "server_kind": server_kind,
        "ctx": ctx,
        "gpu_layers": gpu_layers,
        "threads": threads,
        "parallel": parallel,
        "force": force,
        "yes": yes,
        "style": style,
        "effort": effort,
        "date": date,
        "reasoning": reasoning,
        "cascade": cascade,
        "temperature": temperature,
        "seed": seed,
        "max_tokens": max_tokens,
        "db": db,
        "use_cache": use_cache,
        "truncate": truncate,
        "keep_alive": keep_alive,
    }
    if sampling is not None and (temperature, seed, max_tokens) != (None, None, None):
        raise EdgeGuardError("pass either sampling= or temperature/seed/max_tokens, not both")
    settings = resolve_settings(flags, base=settings)  # keywords over `settings` if given
    if ready is None and engine_settings is not None and settings.backend == "local":
        ready = make_backend(settings.model, engine_settings, yes=settings.yes)
    one = isinstance(text, str | Conversation)  # one text or conversation, else a list
    texts = [text] if isinstance(text, str | Conversation) else list(text)
    pset = _as_set(policy)  # a PolicySet (or a set's name): its policies, thresholds applied
    classifier: Any = None
    if ready is None and settings.backend == "server":  # an edge-guard server: a set by name
        named = pset is not None and not pset.adhoc
        classifier = _remote(pset.name if named else policy, settings, sampling)
        if classifier is None:
            ready = build_backend(settings)  # another server (llama-server, vLLM): probed once
    listed = _policy_list(policy)
    if pset is None and listed is not None:
        from edge_guard.policy.sets import adhoc_set

        pset = adhoc_set(listed)
    if classifier is None:
        classifier = build_classifier(
            pset if pset is not None else policy,
            settings,
            backend=ready,
            store=store,
            sampling=sampling,
            warm=keep_alive is not None,
        )
    if pset is not None:  # every set and list of policies: one path, thresholds applied
        procs = logits_processors
        steer = None if procs is None else (lambda t: procs if callable(procs) else procs[t])
        multi = classify_set_with(
            classifier,
            pset,
            texts,
            steer=steer,
            samplings=samplings,
            on_event=on_event,
            run_items=run_items,
        )
        return multi[0] if one else multi
    kwargs = {
        "run_items": run_items,
        "samplings": samplings,
        "logits_processors": logits_processors,
        "on_event": on_event,
    }
    results = classifier.classify(texts, **kwargs)
    return results[0] if one else results


def classify_set_with(
    classifier: Any, pset: Any, texts: Sequence[Any], *, mode: str = "separate", **kwargs: Any
) -> list[MultiResult]:
    """A set's results, one `MultiResult` per text with its thresholds applied, through
    `classifier` (from `build_classifier`): locally `runs.multi.classify_set` applies them;
    on an edge-guard server (a `RemoteClassifier` built for the set's name) the server
    does. `kwargs`: steer, samplings, on_event, run_items (`classify_set`'s)."""
    client = sys.modules.get("edge_guard.backends.server_client")  # a RemoteClassifier needs it
    if client is None or not isinstance(classifier, client.RemoteClassifier):
        if mode == "taxonomy":  # every policy from one prompt per text (runs/taxonomy.py)
            from edge_guard.runs.taxonomy import classify_taxonomy

            given = [k for k, v in kwargs.items() if v is not None]
            if given:
                raise EdgeGuardError(f"--mode taxonomy takes no {', '.join(given)}")
            return classify_taxonomy(classifier, pset, texts)
        from edge_guard.runs.multi import classify_set

        return classify_set(classifier, pset, texts, mode=mode, **kwargs)
    if mode != "separate":
        raise EdgeGuardError(
            f"--mode {mode} runs in this process: an edge-guard server runs a "
            "set's policies separately (use --mode separate or the local "
            "backend)"
        )
    steer = kwargs.pop("steer", None)
    out = classifier.classify(texts, logits_processors=steer, **kwargs)
    from edge_guard.conversation import item_text

    return [
        r if isinstance(r, MultiResult) else MultiResult(item_text(t), {str(r.policy): r})
        for t, r in zip(texts, out, strict=True)
    ]
