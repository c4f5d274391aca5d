"""Seed code ports by changing its imports only: the README's classify() call, verbatim.

The seed's `Model.GPT_OSS_20B` names the default build of gpt-oss-20b; here that build's
download location holds the synthetic o200k model (as if pulled), so nothing is fetched.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edge_guard import ClassificationResult, InferenceBackend, Model, Verdict, classify
from edge_guard.registry import lookup
from edge_guard.registry.store import download_path
from edge_guard.store import Store

# The seed README's policy module, with its imports pointed at edge_guard.
TOY_POLICY = '''
from edge_guard import ClassificationResult, ModelResponse

POLICY = """\\
Output exactly `1` if the user message is toxic, and `0` if it is not
"""

def parse(response: ModelResponse) -> ClassificationResult:
    text = response.response.strip()
    binary_label = (text == "1")
    return ClassificationResult(
        binary_label=binary_label,
        fine_grain_label="1" if binary_label else "0",
        float_label=1.0 if binary_label else 0.0,
        metadata={},
        model_response=response,
        parsed_successfully=(text == "1" or text == "0")
    )
'''


@pytest.fixture
def toy_example_policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "toy_example_policy.py"
    path.write_text(TOY_POLICY)
    spec = importlib.util.spec_from_file_location("toy_example_policy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("toy_example_policy", None)
    return module


@pytest.fixture
def pulled_base_model(tiny_o200k_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """gpt-oss-20b's default build 'downloaded': the synthetic model at its download path."""
    target = lookup("gpt-oss-20b")
    assert (target.kind, target.id) == ("manifest", "gpt-oss-20b:mxfp4")
    assert target.source is not None
    path = download_path(target.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(tiny_o200k_model)
    monkeypatch.setenv("EDGE_GUARD_MAX_TOKENS", "16")  # keep the synthetic model's answer short
    return path


def test_seed_names_mean_the_default_builds() -> None:
    assert [lookup(str(m)).id for m in Model] == [
        "gpt-oss-20b:mxfp4",
        "gpt-oss-safeguard-20b:mxfp4",
    ]
    assert [m.value for m in InferenceBackend] == ["harmony", "chat-template"]


def test_seed_readme_call_verbatim(toy_example_policy, pulled_base_model: Path) -> None:  # type: ignore[no-untyped-def]
    response: ClassificationResult = classify(
        text="I hate puppies",
        policy=toy_example_policy,  # Just pass in your policy module
        model=Model.GPT_OSS_20B,
        backend=InferenceBackend.API_INJECT_HARMONY,
        use_cache=True,
    )
    print(response.binary_label)
    assert isinstance(response, ClassificationResult)
    assert (response.text, response.policy, response.cached) == (
        "I hate puppies",
        "toy_example_policy",
        False,
    )
    # 16 tokens of a synthetic model: no final answer, so the seed parser's crash is undetermined
    assert response.model_response.finish_reason == "length"
    assert (response.verdict, response.binary_label) == (Verdict.UNDETERMINED, None)
    row = Store().get(response.key)
    assert (row["model_ref"], row["backend"], row["style"]) == ("gpt-oss-20b", "local", "harmony")
    assert json.loads(row["sampling"])["max_tokens"] == 16
    again = classify(
        text="I hate puppies",
        policy=toy_example_policy,
        model=Model.GPT_OSS_20B,
        backend=InferenceBackend.API_INJECT_HARMONY,
        use_cache=True,
    )
    assert again.key == response.key  # same cache entry (an error result is retried, not served)
    assert Store().query("SELECT count(*) AS n FROM results")[0]["n"] == 1


def test_seed_api_backend_is_the_chat_template(toy_example_policy, pulled_base_model: Path) -> None:  # type: ignore[no-untyped-def]
    response = classify(
        text="I hate puppies",
        policy=toy_example_policy,
        model=Model.GPT_OSS_20B,
        backend=InferenceBackend.API,
    )
    assert Store().get(response.key)["style"] == "chat-template"
