"""`style="chat-template"` equals the official gpt-oss Jinja chat template, tokenized as a server does."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import jinja2
import pytest

from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import EFFORTS, PromptConfig, PromptRenderer
from edge_guard.harmony.vocab import Vocab, o200k_harmony_vocab

# The subset of gpt-oss's chat_template.jinja that a [system, user] conversation exercises
# (no tools, no builtin tools, add_generation_prompt=True), kept close to the original.
GPT_OSS_TEMPLATE = """
{%- macro build_system_message() -%}
    {%- if model_identity is not defined %}
        {%- set model_identity = "You are ChatGPT, a large language model trained by OpenAI." %}
    {%- endif %}
    {{- model_identity + "\\n" }}
    {{- "Knowledge cutoff: 2024-06\\n" }}
    {{- "Current date: " + strftime_now("%Y-%m-%d") + "\\n\\n" }}
    {%- if reasoning_effort is not defined %}
        {%- set reasoning_effort = "medium" %}
    {%- endif %}
    {{- "Reasoning: " + reasoning_effort + "\\n\\n" }}
    {{- "# Valid channels: analysis, commentary, final. Channel must be included for every message." }}
{%- endmacro -%}

{{- "<|start|>system<|message|>" }}
{{- build_system_message() }}
{{- "<|end|>" }}

{%- if messages[0].role == "developer" or messages[0].role == "system" %}
    {%- set developer_message = messages[0].content %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set developer_message = "" %}
    {%- set loop_messages = messages %}
{%- endif %}

{%- if developer_message %}
    {{- "<|start|>developer<|message|>" }}
    {{- "# Instructions\\n\\n" }}
    {{- developer_message }}
    {{- "\\n\\n" }}
    {{- "<|end|>" }}
{%- endif %}

{%- for message in loop_messages -%}
    {%- if message.role == 'user' -%}
        {{- "<|start|>user<|message|>" + message.content + "<|end|>" }}
    {%- endif -%}
{%- endfor -%}

{%- if add_generation_prompt -%}
<|start|>assistant
{%- endif -%}
"""

HARMONY_SPECIALS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|return|>",
    "<|constrain|>",
    "<|channel|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|call|>",
)
_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in HARMONY_SPECIALS) + ")")

POLICY = "# Toxicity\n\nAnswer `1` if the message is toxic, `0` if not.\n"

BENIGN_TEXTS = {
    "ascii": "hello there",
    "empty": "",
    "spaces": "  padded  ",
    "newlines": "\n\nline\r\nline\n\n",
    "tabs": "\tindent\t",
    "devanagari": "हिन्दी में संदेश",
    "cjk": "中文文本 日本語",
    "emoji": "😀👍🏽 🇫🇷",
    "code": "for i in range(3):\n    print(i)",
    "angle-pipes": "a <| b |> c <|x",  # not a special string
}


def render_template(messages: list[dict[str, str]], effort: str | None, date: str) -> str:
    env = jinja2.Environment(undefined=jinja2.Undefined)
    template = env.from_string(GPT_OSS_TEMPLATE)
    variables: dict[str, object] = {
        "messages": messages,
        "add_generation_prompt": True,
        "strftime_now": lambda fmt: dt.datetime.strptime(date, "%Y-%m-%d").strftime(fmt),
    }
    if effort is not None:
        variables["reasoning_effort"] = effort
    return template.render(**variables)


def server_tokenize(vocab: Vocab, text: str) -> list[int]:
    """Tokenize a rendered template as llama-server does: special strings become their ids."""
    ids: list[int] = []
    for piece in _SPLIT.split(text):
        if piece in HARMONY_SPECIALS:
            ids.append(vocab.special_id(piece))
        elif piece:
            ids.extend(vocab.encoder.encode(piece))
    return ids


@pytest.fixture(scope="module", params=["o200k_harmony", "tiny"])
def vocab(request: pytest.FixtureRequest, tiny_model: Path) -> Vocab:
    return (
        o200k_harmony_vocab() if request.param == "o200k_harmony" else Vocab.from_gguf(tiny_model)
    )


@pytest.mark.parametrize("date", ["2025-11-28", "2024-02-29"])
@pytest.mark.parametrize("effort", EFFORTS)
@pytest.mark.parametrize("text", BENIGN_TEXTS.values(), ids=BENIGN_TEXTS.keys())
def test_chat_template_parity(text: str, effort: str, date: str, vocab: Vocab) -> None:
    rendered = render_template(
        [{"role": "system", "content": POLICY}, {"role": "user", "content": text}], effort, date
    )
    expected = server_tokenize(vocab, rendered)
    prompt = PromptRenderer(vocab).render(
        POLICY, text, PromptConfig(style="chat-template", effort=effort, date=date)
    )
    assert prompt.token_ids == expected
    assert vocab.decode(prompt.token_ids) == rendered


def test_template_text_shape() -> None:
    """Guard the hand-written template against drifting from the facts it encodes."""
    rendered = render_template(
        [{"role": "system", "content": "P"}, {"role": "user", "content": "T"}], "high", "2025-01-02"
    )
    assert rendered == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-01-02\n\nReasoning: high\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        "<|end|><|start|>developer<|message|># Instructions\n\nP\n\n<|end|>"
        "<|start|>user<|message|>T<|end|><|start|>assistant"
    )


def test_chat_template_default_effort_is_medium(vocab: Vocab) -> None:
    date = "2025-06-01"
    rendered = render_template(
        [{"role": "system", "content": POLICY}, {"role": "user", "content": "x"}], None, date
    )
    prompt = PromptRenderer(vocab).render(
        POLICY, "x", PromptConfig(style="chat-template", date=date)
    )
    assert prompt.token_ids == server_tokenize(vocab, rendered)


@pytest.mark.parametrize("policy", ["", None])
def test_empty_policy_omits_developer_message(policy: str | None, vocab: Vocab) -> None:
    date = "2025-03-04"
    messages = [{"role": "user", "content": "hello"}]
    if policy is not None:
        messages.insert(0, {"role": "system", "content": policy})
    rendered = render_template(messages, "low", date)
    assert "developer" not in rendered
    prompt = PromptRenderer(vocab).render(
        "", "hello", PromptConfig(style="chat-template", effort="low", date=date)
    )
    assert prompt.token_ids == server_tokenize(vocab, rendered)


def test_chat_template_without_date_uses_today(vocab: Vocab) -> None:
    before = dt.date.today().isoformat()
    prompt = PromptRenderer(vocab).render(POLICY, "hi", PromptConfig(style="chat-template"))
    after = dt.date.today().isoformat()
    assert prompt.config.date in (before, after)
    rendered = render_template(
        [{"role": "system", "content": POLICY}, {"role": "user", "content": "hi"}],
        "medium",
        prompt.config.date,
    )
    assert prompt.token_ids == server_tokenize(vocab, rendered)
    assert f"Current date: {prompt.config.date}\n" in vocab.decode(prompt.token_ids)


def test_harmony_style_differs_from_chat_template(vocab: Vocab) -> None:
    """The two styles are really different prompts (policy suffix, date line)."""
    r = PromptRenderer(vocab)
    date = "2025-01-01"
    a = r.render(POLICY, "x", PromptConfig(style="harmony", date=date))
    b = r.render(POLICY, "x", PromptConfig(style="chat-template", date=date))
    assert a.token_ids != b.token_ids
    assert vocab.decode(b.token_ids).replace(f"{POLICY}\n\n<|end|>", f"{POLICY}<|end|>") == (
        vocab.decode(a.token_ids)
    )
    assert PromptConfig(style="harmony").resolved().date is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"style": "chatml"}, "unknown prompt style 'chatml'"),
        ({"effort": "max"}, "unknown reasoning effort 'max'"),
        ({"date": "2025-1-2"}, "not in YYYY-MM-DD form"),
        ({"date": "2025-02-30"}, "not a calendar date"),
        ({"date": "today"}, "not in YYYY-MM-DD form"),
    ],
)
def test_prompt_config_rejects_bad_values(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(EdgeGuardError, match=re.escape(message)) as info:
        PromptConfig(**kwargs)
    assert "\n" not in str(info.value)
