"""HTTP surface of the simulator: routes, authentication and admission, in DeepSeek's order.

Admission order (each step answers at once, before any 200): 401 no key → scheduled outage
(``outage.py``) → 400 bad JSON or
unknown model → 402 empty balance → 429 over the key's concurrency limit → injected 500/503 →
(openai flavour) 429 over the RPM/TPM window. Admitted requests count against the key's
concurrency until their response ends, queueing included.
"""

from __future__ import annotations

import time
import uuid

import orjson
from aiohttp import web

from sidecar.simulator import wire
from sidecar.simulator.outage import OUTAGE_MESSAGES, in_outage
from sidecar.simulator.plan import Plan, draw_fault, make_plan
from sidecar.simulator.ratelimit import retry_after_header
from sidecar.simulator.realtime import realtime_session
from sidecar.simulator.scenario import Scenario
from sidecar.simulator.service import serve
from sidecar.simulator.state import STATE, SimState

CONCURRENCY_MESSAGE = (
    "Too many requests. Your current concurrency is {n}, which exceeds your concurrency limit of"
    " {m} based on your remaining balance. Please top up your balance to restore your concurrency."
)


def error(
    status: int, message: str, type_: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = wire.error_body(message, type_)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def api_key_of(request: web.Request) -> str | None:
    """Bearer token wins over ``x-api-key``, as DeepSeek documents for ``/anthropic``."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def authenticate(request: web.Request, state: SimState) -> str | web.Response:
    key = api_key_of(request)
    if key is not None:
        return key
    if not state.scenario.require_auth:
        return "anonymous"
    message = "Authentication Fails (auth header format should be Bearer sk-...)"
    return error(401, message, "authentication_error")


def served_model(kind: str, model: str, scenario: Scenario) -> bool:
    """Known names, plus Claude names on ``/anthropic`` (mapped to Flash or Pro there)."""
    return model in scenario.models or (kind == "anthropic" and model.startswith("claude"))


async def admit(request: web.Request, kind: str) -> web.StreamResponse:
    """Run the admission checks, then serve; see the module docstring for the order."""
    state = request.app[STATE]
    key = authenticate(request, state)
    if isinstance(key, web.Response):
        return key
    if in_outage(state.scenario, time.monotonic() - state.started_at):
        status = state.scenario.outage_status
        extra = retry_after_header(1.0) if status == 429 else None
        return error(status, *OUTAGE_MESSAGES[status], extra)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return error(400, "Failed to deserialize the JSON body", "invalid_request_error")
    if not served_model(kind, str(body.get("model", "")), state.scenario):
        return error(400, "Model Not Exist", "invalid_request_error")
    account = state.accounts.get(key)
    if account.balance <= 0:
        return error(402, "Insufficient Balance", "unknown_error")
    openai = state.scenario.flavour == "openai"
    n, m = account.in_flight + 1, state.accounts.limit(account)
    if n > m:
        extra = retry_after_header(1.0) if openai else None
        return error(429, CONCURRENCY_MESSAGE.format(n=n, m=m), "rate_limit_error", extra)
    plan = make_plan(state.scenario, state.seed, kind, body)
    fault = draw_fault(state.scenario, state.fault_rng)
    if fault == "500":
        return error(500, "Server Error", "server_error")
    if fault == "503":
        return error(503, "Server Overloaded", "server_error")
    headers: dict[str, str] = {}
    if openai:
        now = time.monotonic()
        wait = state.windows.admit(key, plan.prompt_tokens + len(plan.content), now)
        headers = state.windows.headers(key, now)
        if wait is not None:
            message = f"Rate limit reached for {plan.model} on requests or tokens per min."
            return error(429, message, "requests", {**headers, **retry_after_header(wait)})
    set_fault(plan, fault)
    account.in_flight += 1
    try:
        return await serve(request, state, plan, key, headers)
    finally:
        account.in_flight -= 1


def set_fault(plan: Plan, fault: str | None) -> None:
    """Place an abort or stall somewhere inside the token sequence."""
    total = len(plan.reasoning) + len(plan.content)
    plan.fault = fault
    plan.fault_at = plan.rng.randint(1, max(1, total - 1))


async def chat(request: web.Request) -> web.StreamResponse:
    return await admit(request, "chat")


async def fim(request: web.Request) -> web.StreamResponse:
    return await admit(request, "fim")


async def messages(request: web.Request) -> web.StreamResponse:
    return await admit(request, "anthropic")


async def realtime(request: web.Request) -> web.StreamResponse:
    """``GET /realtime?model=``: a WebSocket session (``realtime.py``) for a known key and model."""
    state = request.app[STATE]
    key = authenticate(request, state)
    if isinstance(key, web.Response):
        return key
    model = request.query.get("model") or state.scenario.models[0]
    if model not in state.scenario.models:
        return error(400, "Model Not Exist", "invalid_request_error")
    return await realtime_session(request, state, key, model)


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = authenticate(request, state)
    if isinstance(key, web.Response):
        return key
    return web.Response(
        body=wire.models_body(state.scenario.models), content_type="application/json"
    )


async def balance(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = authenticate(request, state)
    if isinstance(key, web.Response):
        return key
    acc = state.accounts.get(key)
    body = wire.balance_body(acc.balance > 0, acc.balance, max(0.0, acc.granted), acc.topped_up)
    return web.Response(body=body, content_type="application/json")


async def _trace_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every DeepSeek response carries ``x-ds-trace-id`` (32 hex); OpenAI's ``x-request-id``."""
    if request.app[STATE].scenario.flavour == "openai":
        response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
    else:
        response.headers["x-ds-trace-id"] = uuid.uuid4().hex


def build_app(scenario: Scenario, seed: int = 0) -> web.Application:
    """The simulator as an aiohttp app; tests serve it with ``aiohttp_server``."""
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[STATE] = SimState(scenario=scenario, seed=seed)
    app.on_response_prepare.append(_trace_header)
    for prefix in ("", "/v1", "/beta"):
        app.router.add_post(f"{prefix}/chat/completions", chat)
    for path in ("/beta/completions", "/completions", "/v1/completions"):
        app.router.add_post(path, fim)
    for path in ("/anthropic/v1/messages", "/anthropic/messages"):
        app.router.add_post(path, messages)
    app.router.add_get("/models", models)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/user/balance", balance)
    app.router.add_get("/realtime", realtime)
    app.router.add_get("/v1/realtime", realtime)
    return app


__all__ = ["CONCURRENCY_MESSAGE", "build_app"]
