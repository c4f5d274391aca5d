"""Policy tests: a policy's golden cases run through a classifier, judged, reported (text,
JSON, JUnit XML) and kept per policy version (`edge-guard policies test`)."""
