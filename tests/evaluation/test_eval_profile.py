"""The profile ``toolkit eval`` serves with: the suite decides the caches, whatever the user's profile says."""

from __future__ import annotations

from toolkit.evaluation.cli import eval_profile
from toolkit.evaluation.suite import load_suite
from toolkit.serving.profiles import load_profile


def _suite(tmp_path, engine: str):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: t\nload: {{concurrency: [1]}}\nengine: {engine}\n")
    return load_suite(path)


def test_caches_are_off_unless_the_suite_turns_them_on(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("endpoint:\n  cache_size: 64\n  semantic_cache: {enabled: true, threshold: 0.9}\n")
    off = load_profile(eval_profile(str(user), _suite(tmp_path, "{}"), tmp_path))
    assert off.endpoint.cache_size == 0 and off.endpoint.semantic_cache.enabled is False
    on = load_profile(eval_profile(str(user), _suite(tmp_path, "{query_cache: true, semantic_cache: true}"),
                                   tmp_path))
    assert on.endpoint.cache_size == 64 and on.endpoint.semantic_cache.enabled is True
    assert on.endpoint.semantic_cache.threshold == 0.9  # the user's setting, only switched on
