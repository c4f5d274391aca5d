"""edge_guard: offline policy classification with gpt-oss-safeguard GGUF builds on llama.cpp.

from edge_guard import classify, load_policy
result = classify("some text", "toxic_simple", model="synth:tiny-o200k", max_tokens=512)
print(result.verdict, result.float_label)
both = classify(["a", "b"], ["toxic_simple", "spam"], model="synth:tiny-o200k")
print([m.flagged for m in both])
"""

from __future__ import annotations

from edge_guard.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "classify": "edge_guard.api",
    "build_classifier": "edge_guard.api",
    "Classifier": "edge_guard.classification.classifier",
    "RunItem": "edge_guard.classification.classifier",
    "Settings": "edge_guard.settings.resolve",
    "resolve_settings": "edge_guard.settings.resolve",
    "Model": "edge_guard.settings.resolve",
    "InferenceBackend": "edge_guard.settings.resolve",
    "ClassificationResult": "edge_guard.result",
    "MultiResult": "edge_guard.result",
    "Verdict": "edge_guard.result",
    "ModelResponse": "edge_guard.response",
    "Timings": "edge_guard.response",
    "load_policy": "edge_guard.policy.core",
    "Policy": "edge_guard.policy.core",
    "OutputSpec": "edge_guard.policy.core",
    "Engine": "edge_guard.engine.engine",
    "GenerationRequest": "edge_guard.engine.engine",
    "SamplingConfig": "edge_guard.engine.sampling",
    "PromptConfig": "edge_guard.harmony.render",
    "Store": "edge_guard.store",
    "EdgeGuardError": "edge_guard.errors",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
