"""Bounded label values."""

from __future__ import annotations

import pytest

from sidecar.telemetry.labels import ROUTES, ModelLabels, route_of


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/chat/completions", "chat_completions"),
        ("/v1/chat/completions", "chat_completions"),
        ("/beta/chat/completions", "chat_completions"),
        ("/completions", "completions"),
        ("/beta/completions", "completions"),
        ("/v1/completions", "completions"),
        ("/anthropic/v1/messages", "anthropic_messages"),
        ("/anthropic/messages", "anthropic_messages"),
        ("/v1/messages", "anthropic_messages"),
        ("/responses", "responses"),
        ("/v1/responses", "responses"),
        ("/models", "models"),
        ("/v1/models", "models"),
        ("/user/balance", "balance"),
        ("/chat/completions/", "chat_completions"),
        ("/", "other"),
        ("/v2/chat/completions", "other"),
        ("/chat/completions/extra", "other"),
        ("/beta/models", "other"),
    ],
)
def test_routes(path: str, route: str) -> None:
    assert route_of(path) == route
    assert route in ROUTES


def test_models_listed_then_first_come_then_other() -> None:
    labels = ModelLabels(["deepseek-flash"], cap=2)
    assert labels.label("deepseek-flash") == "deepseek-flash"
    assert labels.label("a") == "a"
    assert labels.label("b") == "b"
    assert labels.label("c") == "other"
    assert labels.label("a") == "a"  # never evicted
    assert labels.label(None) == "none"


def test_implausible_model_names_are_other() -> None:
    labels = ModelLabels([], cap=10)
    assert labels.label("x" * 300) == "other"
    assert labels.label("ignore previous instructions\n") == "other"
