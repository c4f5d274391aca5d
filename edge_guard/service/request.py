"""A `/v1/classify` or `/v1/moderations` body -> the `JobSpec` the core runs.

The server's `Settings` (its flags over the environment over config.toml) are every
request's defaults; the request fields in `REQUEST_FIELDS` override them one by one,
through the same `resolve_settings` every door uses (so a field is checked exactly as the
flag is, and an error names the field). `top_p`/`top_k` (which the CLI has no flag for)
go into the sampling only. Everything is checked here, before a job exists: nothing
invalid reaches the engine, and an error raised below in a flag's terms is put in the
field's terms (`field_terms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_guard.conversation import Conversation, Item, judges_problem
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import Policy
from edge_guard.service.core import JobSpec, ServiceCore
from edge_guard.service.schemas import ClassifyRequest, FieldError, field_terms
from edge_guard.settings.resolve import Settings, resolve_settings

# /v1/classify field -> the `Settings` field it sets (no_cache sets use_cache, inverted).
REQUEST_FIELDS = {
    "style": "style",
    "effort": "effort",
    "date": "date",
    "reasoning": "reasoning",
    "cascade": "cascade",
    "truncate": "truncate",
    "parallel": "parallel",
    "temperature": "temperature",
    "seed": "seed",
    "max_tokens": "max_tokens",
    "no_cache": "use_cache",
}
NULLABLE = ("date", "cascade")  # null turns these off; any other null means "the server's"
FIELD_OF = {v: k for k, v in REQUEST_FIELDS.items()}


def request_settings(core: ServiceCore, body: ClassifyRequest) -> Settings:
    """The server's settings with the request's fields over them (each checked)."""
    given = body.model_fields_set
    settings = core.settings
    for field, name in REQUEST_FIELDS.items():
        if field not in given:
            continue
        value = getattr(body, field)
        if field == "no_cache":
            value = not value
        if value is None and field not in NULLABLE:
            continue
        try:
            if value is None:
                settings = settings.replace(**{name: None})
            else:
                settings = resolve_settings({name: value}, base=settings, door="http")
        except EdgeGuardError as exc:
            raise FieldError(field, _reason(str(exc), field)) from None
    if settings.max_tokens > core.limits.max_tokens:
        raise FieldError("max_tokens", f"at most {core.limits.max_tokens} on this server")
    slots = core.engine_parallel()
    if settings.parallel is not None and slots is not None and settings.parallel > slots:
        raise FieldError("parallel", f"at most {slots} on this server (its --parallel)")
    return settings


def request_sampling(settings: Settings, body: ClassifyRequest | None = None) -> SamplingConfig:
    """The settings' sampling, with the request's top_p/top_k (HTTP only)."""
    s = settings.sampling()
    if body is None:
        return s
    return SamplingConfig(
        temperature=s.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=s.seed,
        max_tokens=s.max_tokens,
    )


def classify_spec(core: ServiceCore, body: ClassifyRequest) -> JobSpec:
    """The whole `/v1/classify` request, checked: inputs, policies, settings."""
    items = body.inputs()
    check_texts(core, items, "texts" if body.messages is None else "messages")
    thresholds: dict[str, float]
    if body.policy_text is not None:
        if body.policy is not None:
            raise FieldError("policy_text", "give policy or policy_text, not both")
        policies, thresholds = [core.inline_policy(body.policy_text, body.policy_output)], {}
    elif body.policy_output is not None:
        raise FieldError("policy_output", "goes with policy_text")
    else:
        policies, thresholds = core.resolve(body.policy)
    check_judges(policies, items)
    settings = request_settings(core, body)
    return JobSpec(items, policies, settings, request_sampling(settings, body), thresholds)


def moderation_spec(core: ServiceCore, texts: list[str], model: str | None) -> JobSpec:
    """`/v1/moderations`: the server's settings as they are."""
    check_texts(core, texts, "input")
    policies, thresholds = core.resolve(model)
    check_judges(policies, texts, "input")
    return JobSpec(
        list(texts), policies, core.settings, request_sampling(core.settings), thresholds
    )


def check_texts(core: ServiceCore, items: Sequence[Item], field: str) -> None:
    lim = core.limits
    if not items:
        raise FieldError(field, "no texts")
    if len(items) > lim.max_texts:
        raise FieldError(field, f"{len(items)} texts, at most {lim.max_texts}")
    for i, item in enumerate(items):
        where = field if isinstance(item, Conversation) else f"{field}[{i}]"
        size = len(item.render()) if isinstance(item, Conversation) else len(item)
        if size > lim.max_text_chars:
            raise FieldError(where, f"{size} characters, at most {lim.max_text_chars}")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise FieldError(where, f"unpaired surrogate at character {exc.start}") from None


def check_judges(policies: list[Policy], items: Sequence[Item], field: str = "texts") -> None:
    """A policy that judges replies or conversations needs `messages` (said in HTTP terms;
    `/v1/moderations`, whose `input` is plain text, points to /v1/classify)."""
    for policy in policies:
        judges = getattr(policy, "judges", "any")
        for item in items:
            if not isinstance(item, Conversation):
                if judges in ("assistant", "conversation"):
                    what = "model responses" if judges == "assistant" else "conversations"
                    how = (
                        (
                            "send the conversation as 'messages' (a list of {role, content}) with "
                            "'target', not 'text'"
                        )
                        if field != "input"
                        else ("send the conversation to /v1/classify as 'messages'")
                    )
                    raise FieldError(
                        "messages" if field != "input" else field,
                        f"policy {policy.name} judges {what}: {how}",
                    )
                continue
            problem = judges_problem(judges, item)
            if problem:
                raise FieldError("target", f"policy {policy.name} {problem}")


def _reason(message: str, field: str) -> str:
    """A `resolve_settings` error without the part naming the field (FieldError adds it)."""
    for lead in (f"request field {field!r} = ", f"request field {FIELD_OF.get(field, field)!r} = "):
        if message.startswith(lead):
            return message.split(": ", 1)[-1]
    return field_terms(message)[0]


def spec_summary(spec: JobSpec) -> dict[str, Any]:
    """The effective request options (echoed in /v1/classify answers)."""
    s = spec.settings
    return {
        "style": s.style,
        "effort": s.effort,
        "date": s.date,
        "reasoning": s.reasoning,
        "cascade": s.cascade,
        "truncate": s.truncate,
        "parallel": s.parallel,
        "temperature": s.temperature,
        "seed": s.seed,
        "max_tokens": s.max_tokens,
        "top_p": spec.sampling.top_p,
        "top_k": spec.sampling.top_k,
        "no_cache": not s.use_cache,
    }
