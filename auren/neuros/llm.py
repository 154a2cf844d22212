"""LLM providers: they phrase the engine's facts, nothing more.

Two wire protocols over ``httpx`` (no vendor SDK): OpenAI-compatible Chat Completions (OpenAI,
vLLM, llama.cpp ``llama-server``, Ollama ``/v1``) and Anthropic Messages. Both support
read-only tools whose runner is bound to the authorised user by the caller: the model can ask
for more of *this* person's facts, never name a user, write, or fetch a URL.

The caller (``auren.neuros.chat``) owns the rules around a provider: a deadline over the whole
exchange, a token cap, sanitising the text and the number check that sends every ungrounded
reply back to the builtin phrasing. A provider raises :class:`LLMError` for anything that is
not a usable text answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from auren.settings import Settings

ANTHROPIC_VERSION = "2023-06-01"
# Tool calls one model turn may make; more is treated as a runaway.
MAX_CALLS_PER_TURN = 4


class LLMError(Exception):
    """The provider gave no usable answer (transport, status, shape or tool misuse)."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments


ToolRunner = Callable[[str, dict[str, Any]], Awaitable[str]]
Turn = tuple[str, str]  # (role: "user" | "assistant", content)


class LLMProvider(Protocol):
    @property
    def name(self) -> str: ...

    async def complete(self, system: str, turns: Sequence[Turn], tools: Sequence[Tool],
                       run_tool: ToolRunner) -> str:
        """The model's final text for the conversation ``turns`` (the last one is the user's).

        Raises:
            LLMError: no usable text.
        """
        ...


def _arguments(raw: Any) -> dict[str, Any]:
    # OpenAI sends a JSON string; Ollama-style servers send an object. Both are accepted.
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw or "{}")
        except orjson.JSONDecodeError as exc:
            raise LLMError("tool arguments are not JSON") from exc
        if isinstance(value, dict):
            return value
    raise LLMError("tool arguments must be an object")


async def _post(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = await client.post(url, headers=headers, content=orjson.dumps(body))
    except httpx.HTTPError as exc:
        raise LLMError(f"transport: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise LLMError(f"status {response.status_code}")
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise LLMError("response is not JSON") from exc
    if not isinstance(data, dict):
        raise LLMError("response is not an object")
    return data


class OpenAICompatible:
    """``POST {base_url}/chat/completions``; ``base_url`` usually ends in ``/v1``."""

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, model: str,
                 api_key: str | None, max_tokens: int, tool_rounds: int) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._max_tokens = max_tokens
        self._tool_rounds = tool_rounds

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    async def complete(self, system: str, turns: Sequence[Turn], tools: Sequence[Tool],
                       run_tool: ToolRunner) -> str:
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        messages += [{"role": role, "content": content} for role, content in turns]
        specs = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                   "parameters": t.parameters}} for t in tools]
        for round_ in range(self._tool_rounds + 1):
            body: dict[str, Any] = {"model": self._model, "messages": messages,
                                    "max_tokens": self._max_tokens, "temperature": 0.2}
            # The last round offers no tools, so the model has to answer in text.
            if specs and round_ < self._tool_rounds:
                body["tools"] = specs
                body["tool_choice"] = "auto"
            data = await _post(self._client, self._url, self._headers, body)
            try:
                message = data["choices"][0]["message"]
                calls = message.get("tool_calls") or []
                content = message.get("content")
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise LLMError("unexpected chat.completion shape") from exc
            if not calls:
                if not isinstance(content, str) or not content.strip():
                    raise LLMError("empty answer")
                return content
            if not specs or round_ >= self._tool_rounds or len(calls) > MAX_CALLS_PER_TURN:
                raise LLMError("tool calls beyond what was offered")
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            for index, call in enumerate(calls):
                try:
                    function = call["function"]
                    name = str(function["name"])
                    call_id = str(call.get("id") or f"call_{round_}_{index}")
                except (KeyError, TypeError) as exc:
                    raise LLMError("malformed tool call") from exc
                result = await run_tool(name, _arguments(function.get("arguments")))
                messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        raise LLMError("no answer within the tool rounds")


class AnthropicMessages:
    """``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``."""

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, model: str,
                 api_key: str | None, max_tokens: int, tool_rounds: int) -> None:
        self._client = client
        base = base_url.rstrip("/")
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self._model = model
        self._headers = {"content-type": "application/json",
                         "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._max_tokens = max_tokens
        self._tool_rounds = tool_rounds

    @property
    def name(self) -> str:
        return f"anthropic:{self._model}"

    async def complete(self, system: str, turns: Sequence[Turn], tools: Sequence[Tool],
                       run_tool: ToolRunner) -> str:
        messages: list[dict[str, Any]] = []
        for role, content in turns:
            # The Messages API wants alternating roles starting with the user.
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n\n" + content
            elif messages or role == "user":
                messages.append({"role": role, "content": content})
        specs = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                 for t in tools]
        for round_ in range(self._tool_rounds + 1):
            body: dict[str, Any] = {"model": self._model, "system": system,
                                    "messages": messages, "max_tokens": self._max_tokens,
                                    "temperature": 0.2}
            if specs and round_ < self._tool_rounds:
                body["tools"] = specs
            data = await _post(self._client, self._url, self._headers, body)
            blocks = data.get("content")
            if not isinstance(blocks, list):
                raise LLMError("unexpected message shape")
            uses = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
            if not uses:
                text = "".join(str(b.get("text", "")) for b in blocks
                               if isinstance(b, dict) and b.get("type") == "text")
                if not text.strip():
                    raise LLMError("empty answer")
                return text
            if not specs or round_ >= self._tool_rounds or len(uses) > MAX_CALLS_PER_TURN:
                raise LLMError("tool calls beyond what was offered")
            messages.append({"role": "assistant", "content": blocks})
            results = []
            for use in uses:
                try:
                    use_id, name = str(use["id"]), str(use["name"])
                except KeyError as exc:
                    raise LLMError("malformed tool_use block") from exc
                result = await run_tool(name, _arguments(use.get("input", {})))
                results.append({"type": "tool_result", "tool_use_id": use_id, "content": result})
            messages.append({"role": "user", "content": results})
        raise LLMError("no answer within the tool rounds")


def build_provider(settings: Settings, client: httpx.AsyncClient) -> LLMProvider | None:
    """The configured provider, or None for the builtin phrasing."""
    key = settings.neuros_llm_api_key.get_secret_value() if settings.neuros_llm_api_key else None
    common: dict[str, Any] = {"model": settings.neuros_llm_model, "api_key": key,
                              "max_tokens": settings.neuros_llm_max_tokens,
                              "tool_rounds": settings.neuros_llm_tool_rounds}
    if settings.neuros_llm == "openai":
        return OpenAICompatible(client, base_url=settings.neuros_llm_base_url
                                or "https://api.openai.com/v1", **common)
    if settings.neuros_llm == "anthropic":
        return AnthropicMessages(client, base_url=settings.neuros_llm_base_url
                                 or "https://api.anthropic.com", **common)
    return None
