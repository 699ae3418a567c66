"""A real HTTP server on loopback that speaks the OpenAI Chat Completions, Files and Batches wire
protocol, checks every request the way a strict provider would, and injects scripted faults.

    server = FakeOpenAI(api_key="sk-test").start()
    server.script["<pair_id>"] = ["429", "ok"]      # per attempt; default "ok"
    ... OpenAI(base_url=server.base_url, api_key="sk-test") ...
    server.stop()

Behaviours: ok, not_visible, 429 (Retry-After: 1), 500, slow (answers after `slow_s`), malformed
(content is not JSON), bad_schema (JSON without the required keys), refusal, empty, truncated
(finish_reason "length" unless max_completion_tokens >= 400), mirrored (the structured changes with
left and right swapped). `ok` answers name the changes the grounding's pose-based guess names
("raise your right arm" -> right arm up), as a model that reads the images right would;
`server.default` sets the behaviour of unscripted requests; `server.instruction`, when set, is the
instruction of every answer (a model that says the same sentence for every pair, or says markup).
Local servers: `api_key=None` takes any key (a server started without one); `server.image_limit`
refuses a request with more images than that (400), as a server with a per-prompt image limit does.
Each chat request's body is kept in `server.requests[i]["body"]`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import uvicorn
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

PAIR = re.compile(r"pair: (\w+)")


GUESS = re.compile(r"pose-based guess: (.*)")
PHRASES = [  # the offline captioner's phrases -> the structured change they name
    (re.compile(r"raise your (left|right) arm"), "arm", "up"),
    (re.compile(r"lower your (left|right) arm"), "arm", "down"),
    (re.compile(r"raise (both) arms"), "arm", "up"),
    (re.compile(r"lower (both) arms"), "arm", "down"),
    (re.compile(r"stretch your (left|right) arm out"), "arm", "out"),
    (re.compile(r"bring your (left|right) arm in"), "arm", "in"),
    (re.compile(r"bend your (left|right) arm"), "arm", "bend"),
    (re.compile(r"straighten your (left|right) arm"), "arm", "straighten"),
    (re.compile(r"bend your (left|right) knee"), "knee", "bend"),
    (re.compile(r"straighten your (left|right) knee"), "knee", "straighten"),
]


def guessed_changes(body: dict[str, Any]) -> list[dict[str, str]]:
    """The structured changes the grounding's pose-based guess names."""
    user = next((m for m in body.get("messages", []) if m.get("role") == "user"), {"content": []})
    text = " ".join(c.get("text", "") for c in user["content"] if isinstance(c, dict))
    m = GUESS.search(text)
    out = []
    for rx, part, direction in PHRASES:
        for side in rx.findall(m.group(1) if m else ""):
            out.append({"side": side, "part": part, "direction": direction})
    return out or [{"side": "none", "part": "whole_body", "direction": "other"}]


class FakeOpenAI:
    def __init__(self, api_key: str | None, slow_s: float = 3.0):
        self.api_key = api_key
        self.slow_s = slow_s
        self.script: dict[str, list[str]] = defaultdict(list)
        self.default = "ok"
        self.instruction: str | None = None  # every answer's instruction (None: names model and pair)
        self.image_limit: int | None = None  # images one request may hold (None: no limit)
        self.requests: list[dict[str, Any]] = []  # every chat request that reached the handler
        self.invalid: list[str] = []  # why requests were refused as malformed
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ checks and answers

    def check(self, body: dict[str, Any]) -> str | None:
        """Why the request is not what the captioner must send (None when it is)."""
        try:
            if body.get("response_format", {}).get("type") != "json_schema":
                return "no json_schema response_format"
            schema = body["response_format"]["json_schema"]["schema"]
            if set(schema.get("required", [])) != {"instruction", "before", "after", "visible_change", "changes"}:
                return "schema lacks the required keys"
            user = next(m for m in body["messages"] if m["role"] == "user")["content"]
            images = [c for c in user if c.get("type") == "image_url"]
            if self.image_limit is not None and len(images) > self.image_limit:
                return f"at most {self.image_limit} image(s) may be provided in one request"
            if len(images) != 2:
                return f"{len(images)} images instead of 2"
            for img in images:
                url = img["image_url"]["url"]
                if not url.startswith("data:image/jpeg;base64,"):
                    return "image is not a JPEG data URL"
                if base64.b64decode(url.split(",", 1)[1])[:2] != b"\xff\xd8":
                    return "image bytes are not JPEG"
            text = " ".join(c["text"] for c in user if c.get("type") == "text")
            if not PAIR.search(text) or not ("pose change" in text or "narration" in text or "label" in text):
                return "no grounding text"
        except (KeyError, StopIteration, TypeError, ValueError) as e:
            return f"malformed request: {e}"
        return None

    def answer(self, body: dict[str, Any], behaviour: str, pair_id: str) -> tuple[int, dict[str, Any], dict]:
        """(status, json body, headers) for one chat request."""
        if behaviour == "429":
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"retry-after": "1"}
        if behaviour == "500":
            return 500, {"error": {"message": "boom", "type": "server_error"}}, {}
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        model = body.get("model")
        if behaviour == "refusal":
            message["refusal"] = "I can't help with that."
        elif behaviour == "empty":
            message["content"] = ""
        elif behaviour == "malformed":
            message["content"] = '{"instruction": "raise your arm", '
        elif behaviour == "bad_schema":
            message["content"] = json.dumps({"caption": "raise your arm"})
        else:
            changes = guessed_changes(body)
            if behaviour == "mirrored":
                swap = {"left": "right", "right": "left"}
                changes = [c | {"side": swap.get(c["side"], c["side"])} for c in changes]
            message["content"] = json.dumps(
                {
                    "instruction": self.instruction
                    if self.instruction is not None
                    else f"[{model}] raise your right arm ({pair_id})",
                    "before": "arms down",
                    "after": "right arm up",
                    "visible_change": behaviour != "not_visible",
                    "changes": changes,
                }
            )
        finish = "stop"
        if behaviour == "truncated" and (body.get("max_completion_tokens") or 0) < 400:
            finish = "length"
        return (
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": 250, "completion_tokens": 40, "total_tokens": 290},
            },
            {},
        )

    def _next(self, body: dict[str, Any]) -> tuple[str, str]:
        user = next((m for m in body.get("messages", []) if m.get("role") == "user"), {"content": []})
        text = " ".join(c.get("text", "") for c in user["content"] if isinstance(c, dict))
        m = PAIR.search(text)
        pair_id = m.group(1) if m else "?"
        script = self.script.get(pair_id)
        behaviour = script.pop(0) if script else self.default
        return pair_id, behaviour

    # ------------------------------------------------------------ the app

    def _build(self) -> FastAPI:
        app = FastAPI()

        def authorised(request: Request) -> bool:
            if self.api_key is None:  # a local server started without a key takes any
                return bool(request.headers.get("authorization"))
            return request.headers.get("authorization") == f"Bearer {self.api_key}"

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            if not authorised(request):
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            body = await request.json()
            why = self.check(body)
            pair_id, behaviour = self._next(body)
            self.requests.append(
                {"t": time.monotonic(), "pair_id": pair_id, "behaviour": behaviour, "invalid": why, "body": body}
            )
            if why:
                self.invalid.append(why)
                return JSONResponse({"error": {"message": why, "type": "invalid_request_error"}}, status_code=400)
            if behaviour == "slow":
                await asyncio.sleep(self.slow_s)
            status, payload, headers = self.answer(body, behaviour, pair_id)
            return JSONResponse(payload, status_code=status, headers=headers)

        @app.post("/v1/files")
        async def upload(request: Request, file: UploadFile = File(...), purpose: str = Form(...)):  # noqa: B008
            if not authorised(request):
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            data = await file.read()
            fid = f"file-{uuid.uuid4().hex[:12]}"
            self.files[fid] = {"data": data, "filename": file.filename, "purpose": purpose}
            return self._file_obj(fid)

        @app.get("/v1/files/{fid}/content")
        async def content(fid: str):
            return Response(self.files[fid]["data"], media_type="application/octet-stream")

        @app.post("/v1/batches")
        async def create_batch(request: Request):
            if not authorised(request):
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            body = await request.json()
            bid = f"batch_{uuid.uuid4().hex[:12]}"
            out_lines = []
            for line in self.files[body["input_file_id"]]["data"].decode().splitlines():
                item = json.loads(line)
                req = item["body"]
                why = self.check(req)
                pair_id, behaviour = self._next(req)
                self.requests.append({"t": time.monotonic(), "pair_id": pair_id, "behaviour": behaviour, "batch": bid})
                status, payload, _ = (
                    (400, {"error": {"message": why}}, {}) if why else self.answer(req, behaviour, pair_id)
                )
                out_lines.append(
                    json.dumps(
                        {
                            "id": f"req_{uuid.uuid4().hex[:8]}",
                            "custom_id": item["custom_id"],
                            "response": {"status_code": status, "request_id": "r", "body": payload},
                            "error": None,
                        }
                    )
                )
            out_id = f"file-{uuid.uuid4().hex[:12]}"
            self.files[out_id] = {
                "data": "\n".join(out_lines).encode(),
                "filename": "out.jsonl",
                "purpose": "batch_output",
            }
            self.batches[bid] = {
                "id": bid,
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"],
                "status": "in_progress",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(time.time()),
                "_output": out_id,
                "_polls": 0,
            }
            return self._batch_obj(bid)

        @app.get("/v1/batches/{bid}")
        async def get_batch(bid: str):
            b = self.batches[bid]
            b["_polls"] += 1
            if b["_polls"] >= 2:  # in progress on the first look, done on the second
                b["status"] = "completed"
                b["output_file_id"] = b["_output"]
            return self._batch_obj(bid)

        return app

    def _file_obj(self, fid: str) -> dict[str, Any]:
        f = self.files[fid]
        return {
            "id": fid,
            "object": "file",
            "bytes": len(f["data"]),
            "created_at": int(time.time()),
            "filename": f["filename"],
            "purpose": f["purpose"],
            "status": "processed",
        }

    def _batch_obj(self, bid: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[bid].items() if not k.startswith("_")}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAI:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def chat_requests(self, pair_id: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if pair_id is None or r["pair_id"] == pair_id]
