"""`RemoteClassifier`: the `Classifier` surface (`classify`, `iter`) over a running server.

`edge-guard serve` answers `GET /health` with `"service": "edge_guard"`; `detect()` looks
for that marker. Every request option (style, effort, date, reasoning mode, cascade,
truncate, parallel, sampling, the cache policy) goes with each request; a conversation
goes as `messages` + `target`. The policy goes by name when the server has the same version (same
hash), else as inline text (the server must run with --allow-inline-policies; a policy
with its own parse.py cannot be sent: code never goes over HTTP). Results come back as
`ClassificationResult`s, stored in the server's store (not this machine's).
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from edge_guard.conversation import Conversation, Item, item_text
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.errors import EdgeGuardError, PolicyError
from edge_guard.harmony.parse import ContentDelta, Event
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE, PromptConfig
from edge_guard.policy.core import Policy, load_policy
from edge_guard.response import ModelResponse, Timings
from edge_guard.result import ClassificationResult, MultiResult
from edge_guard.settings.values import check_mode, parse_bounds

MARKER = "edge_guard"
BATCH = 64  # texts per request


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def api_key_from_env(var: str | None) -> str | None:
    if not var:
        return None
    key = os.environ.get(var, "").strip()
    if not key:
        raise EdgeGuardError(f"the API key variable {var} is empty or unset")
    return key


def detect(
    url: str, api_key: str | None = None, timeout: float = 5.0, http: httpx.Client | None = None
) -> dict[str, Any] | None:
    """The server's /health when `url` is an edge-guard server, else None. `http`: a
    client to send it with (e.g. over a Unix socket: `edge_guard.warm`)."""
    try:
        r = (http or httpx).get(
            url.rstrip("/") + "/health", headers=_headers(api_key), timeout=timeout
        )
        body = r.json() if r.status_code in (200, 403) else None
    except (httpx.HTTPError, ValueError):
        return None
    if r.status_code == 403 and isinstance(body, dict):  # an edge-guard refusing this Host
        message = str((body.get("error") or {}).get("message") or "")
        if "--allowed-host" in message:
            raise EdgeGuardError(f"{url.rstrip('/')}: HTTP 403: {message}")
        return None
    return body if isinstance(body, dict) and body.get("service") == MARKER else None


class _RemoteBackend:
    """Enough of a backend for the CLI's printers: the served model's reference."""

    name = "server"

    def __init__(self, url: str, health: dict[str, Any]) -> None:
        self.url = url
        self.model_ref = str(health.get("model") or url)
        self._identity = str(health.get("identity") or "")

    def identity(self) -> str:
        return self._identity

    def close(self) -> None:
        pass


class RemoteClassifier:
    """Classifies texts (or conversations) under one policy on an edge-guard server.

    The attributes mean what `Classifier`'s do (`reasoning` is a reasoning mode, `cascade`
    a (low, high) band), and every one is sent with each request, so the server computes
    (and stores) exactly what a local classifier with the same settings would.
    `include_reasoning` asks the server for the reasoning text of each result.
    """

    def __init__(
        self,
        policy: str | Path | types.ModuleType | Policy,
        url: str,
        *,
        api_key: str | None = None,
        style: str = DEFAULT_STYLE,
        effort: str = DEFAULT_EFFORT,
        date: str | None = None,
        reasoning: str = "full",
        cascade: str | tuple[float, float] | None = None,
        truncate: bool = False,
        parallel: int | None = None,
        sampling: SamplingConfig | None = None,
        use_cache: bool = True,
        timeout: float = 600.0,
        include_reasoning: bool = True,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = http  # None: httpx's own functions (TCP)
        self.api_key = api_key
        self.timeout = timeout
        self.prompt_config = PromptConfig(style=style, effort=effort, date=date)
        self.reasoning = check_mode(reasoning)
        self.cascade = parse_bounds(cascade)
        self.truncate = truncate
        self.parallel = parallel
        self.sampling = sampling or SamplingConfig()
        self.use_cache = use_cache
        self.include_reasoning = include_reasoning
        health = detect(self.url, api_key, http=http)
        if health is None:
            raise EdgeGuardError(f"{self.url} is not an edge-guard server (GET /health)")
        self.backend = _RemoteBackend(self.url, health)
        self._policy_field = self._choose_policy(policy)
        self.policy = self._policy_obj

    def _choose_policy(self, policy: Any) -> dict[str, Any]:
        """By name when the server has this version (or the name is only there), else text."""
        data = self._get("/v1/policies")
        served = {row["name"]: row for row in data.get("data", []) if "hash" in row}
        named = isinstance(policy, str) and (policy in served or policy in data.get("sets", {}))
        try:
            local: Policy | None = load_policy(policy)
        except PolicyError:
            local = None
        if local is None or (named and policy not in served):
            if not named:
                raise PolicyError(f"policy {policy!r} is neither here nor on {self.url}")
            self._policy_obj = Policy(name=str(policy), text="")
            return {"policy": policy}
        self._policy_obj = local
        for name, row in served.items():
            if row.get("hash") == local.hash:
                return {"policy": name}
        if local.parser is not None:
            raise PolicyError(
                f"policy {local.name} has its own parse.py, which is never sent to a server: "
                "put the same policy on the server (its policies/ folder) and name it"
            )
        return {"policy_text": local.text, "policy_output": local.output.as_dict()}

    # -- HTTP ----------------------------------------------------------------------------
    def _get(self, path: str) -> dict[str, Any]:
        r = (self._http or httpx).get(
            self.url + path, headers=_headers(self.api_key), timeout=self.timeout
        )
        return self._json(r)

    def _json(self, r: httpx.Response) -> dict[str, Any]:
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200:
            msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise EdgeGuardError(f"server {self.url}: HTTP {r.status_code}: {msg or r.text[:200]}")
        if not isinstance(body, dict):
            raise EdgeGuardError(f"server {self.url}: reply is not a JSON object")
        return body

    def options(self, sampling: SamplingConfig) -> dict[str, Any]:
        """Every request option, as `/v1/classify` fields (none left to the server)."""
        cfg, bounds = self.prompt_config, self.cascade
        out = {
            "style": cfg.style,
            "effort": cfg.effort,
            "date": cfg.date,
            "reasoning": self.reasoning,
            "cascade": None if bounds is None else f"{bounds[0]!r}:{bounds[1]!r}",
            "truncate": self.truncate,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "seed": sampling.seed,
            "max_tokens": sampling.max_tokens,
            "no_cache": not self.use_cache,
            "include_reasoning": self.include_reasoning,
        }
        if self.parallel is not None:
            out["parallel"] = self.parallel
        return out

    def _body(
        self, items: Sequence[Item], sampling: SamplingConfig, stream: bool
    ) -> dict[str, Any]:
        body = {**self._policy_field, **self.options(sampling), "stream": stream}
        if len(items) == 1 and isinstance(items[0], Conversation):
            conv = items[0]
            return {**body, "messages": [m.as_dict() for m in conv.messages], "target": conv.target}
        return {**body, "texts": list(items)}

    # -- the Classifier surface ----------------------------------------------------------
    def classify(
        self, texts: Sequence[Item], **kwargs: Any
    ) -> list[ClassificationResult] | list[MultiResult]:
        """Results in input order; a set name (several policies): one `MultiResult` per text."""
        got: list[dict[str, ClassificationResult]] = [{} for _ in texts]
        for i, res in self.iter(texts, **kwargs):
            got[i][str(res.policy)] = res
        if all(len(g) <= 1 for g in got):
            return [next(iter(g.values())) for g in got]
        return [MultiResult(item_text(t), g) for t, g in zip(texts, got, strict=True)]

    def iter(
        self,
        texts: Sequence[Item],
        *,
        run_items: Any = None,
        samplings: Sequence[SamplingConfig] | None = None,
        logits_processors: Any = None,
        on_event: Callable[[int, Event], None] | None = None,
    ) -> Iterator[tuple[int, ClassificationResult]]:
        """Yield (index, result) as the server returns them: texts by batches of BATCH, a
        conversation by itself (one request each)."""
        if run_items is not None:
            raise EdgeGuardError(
                "named runs keep their results in this machine's store: "
                "run them with the local backend"
            )
        if logits_processors is not None:
            raise EdgeGuardError("logits processors run in Python and cannot go to a server")
        if any(not isinstance(t, str | Conversation) for t in texts):
            raise EdgeGuardError("an edge-guard server classifies texts and conversations")
        sampling = self.sampling
        if samplings:
            if any(s != samplings[0] for s in samplings):
                raise EdgeGuardError("an edge-guard server takes one sampling setting per call")
            sampling = samplings[0]
        for start, chunk in _chunks(texts):
            if on_event is None:
                body = self._json(
                    (self._http or httpx).post(
                        self.url + "/v1/classify",
                        json=self._body(chunk, sampling, False),
                        headers=_headers(self.api_key),
                        timeout=self.timeout,
                    )
                )
                for row in body.get("results", []):
                    yield start + int(row["index"]), result_from_json(row)
            else:
                for i, res in self._stream(chunk, sampling, on_event, start):
                    yield start + i, res

    def _stream(
        self,
        chunk: Sequence[Item],
        sampling: SamplingConfig,
        on_event: Callable[[int, Event], None],
        offset: int,
    ) -> Iterator[tuple[int, ClassificationResult]]:
        with (self._http or httpx).stream(
            "POST",
            self.url + "/v1/classify",
            json=self._body(chunk, sampling, True),
            headers=_headers(self.api_key),
            timeout=self.timeout,
        ) as r:
            if r.status_code != 200:
                r.read()
                self._json(r)
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "reasoning":
                        on_event(
                            offset + int(data["index"]),
                            ContentDelta(0, "analysis", str(data["delta"])),
                        )
                    elif event == "result":
                        yield int(data["index"]), result_from_json(data)
                    elif event == "error":
                        raise EdgeGuardError(f"server {self.url}: {data.get('message')}")


def _chunks(items: Sequence[Item]) -> Iterator[tuple[int, list[Item]]]:
    """(offset, items): runs of up to BATCH texts; each conversation alone."""
    run: list[Item] = []
    start = 0
    for i, item in enumerate(items):
        if isinstance(item, Conversation) or len(run) == BATCH:
            if run:
                yield start, run
            run, start = [], i
        if isinstance(item, Conversation):
            yield i, [item]
            start = i + 1
            continue
        run.append(item)
    if run:
        yield start, run


def result_from_json(row: dict[str, Any]) -> ClassificationResult:
    """A `/v1/classify` result row -> `ClassificationResult` (with its `ModelResponse`)."""
    t = row.get("timings") or {}
    fields = ("prompt_tokens", "cached_tokens", "prompt_ms", "output_tokens", "output_ms")
    resp = ModelResponse(
        response=row.get("final"),
        reasoning=row.get("reasoning") or "",
        finish_reason=str(row.get("finish_reason") or "error"),
        timings=Timings(**{k: t[k] for k in fields if k in t}),
        error=row.get("error"),
    )
    res = ClassificationResult(
        row.get("binary_label"),
        row.get("fine_grain_label"),
        row.get("float_label"),
        dict(row.get("metadata") or {}),
        resp,
        bool(row.get("parsed_successfully")),
        row.get("verdict"),
    )
    res.text, res.policy, res.key = row.get("text"), row.get("policy"), row.get("key")
    res.cached, res.error = bool(row.get("cached")), row.get("error")
    if row.get("conversation") is not None:
        res.conversation = json.dumps(
            row["conversation"], sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
    return res


# The request options (`Settings.request()`) a RemoteClassifier sends with every request.
SENT = (
    "style",
    "effort",
    "date",
    "reasoning",
    "cascade",
    "truncate",
    "temperature",
    "seed",
    "max_tokens",
)


def remote_classifier(
    policies: Any, cfg: Any, *, settings: Any, sampling: SamplingConfig | None = None
) -> RemoteClassifier | None:
    """A `RemoteClassifier` carrying every request option of `settings` (a `Settings`)
    when backend config `cfg` points at an edge-guard server; `sampling` replaces the
    settings' sampling. A request option this client cannot send is refused (one line).

    None for other servers (llama-server, vLLM: `ServerBackend` handles them). Server kind
    "auto" probes `GET /health`; "edge-guard" requires the marker.
    """
    kind = getattr(cfg, "server_kind", "auto")
    url = getattr(cfg, "url", None)
    if getattr(cfg, "kind", "server") != "server" or kind not in ("auto", "edge-guard") or not url:
        return None
    api_key = api_key_from_env(getattr(cfg, "api_key_env", None))
    if detect(url, api_key, timeout=min(5.0, float(getattr(cfg, "timeout", 5.0)))) is None:
        if kind == "edge-guard":
            raise EdgeGuardError(f"{url} is not an edge-guard server (GET /health has no marker)")
        return None
    request = settings.request() if callable(getattr(settings, "request", None)) else {}
    unsent = [name for name in request if name not in SENT]
    if unsent:
        raise EdgeGuardError(
            f"the edge-guard server client cannot send the option {unsent[0]!r}; "
            "use the local backend"
        )
    if isinstance(policies, list | tuple):
        if len(policies) != 1:
            raise EdgeGuardError("an edge-guard server takes one policy or set name per call")
        policies = policies[0]
    return RemoteClassifier(
        policies,
        url,
        api_key=api_key,
        style=settings.style,
        effort=settings.effort,
        date=settings.date,
        reasoning=settings.reasoning,
        cascade=settings.cascade,
        truncate=settings.truncate,
        parallel=settings.parallel,
        sampling=sampling or settings.sampling(),
        use_cache=settings.use_cache,
        timeout=float(getattr(cfg, "timeout", 600.0)),
    )
