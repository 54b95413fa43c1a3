#!/usr/bin/python3
"""fake_upstream.py: a fake model API speaking the Anthropic and OpenAI wire formats.

One HTTP/1.1 server (keep-alive, chunked SSE) on 127.0.0.1, Python 3 stdlib only.

    /usr/bin/python3 tests/fakes/fake_upstream.py --port 0 \
        [--anthropic-key KEY] [--openai-key KEY]

With --port 0 it picks a free port; the first line on stdout is always
"PORT <n>". --anthropic-key / --openai-key make the fake check the key
(401 in the provider's own error format otherwise); without them any
x-api-key is accepted and the OpenAI route also works with no
Authorization header at all (like a local Ollama).

Model routes
  POST /v1/messages                   Anthropic Messages API (plain and stream)
  POST <any prefix>/chat/completions  OpenAI chat completions, e.g.
                                      /v1/chat/completions or /chat/completions

The default reply depends on the conversation received, so a test can check
that the whole history was sent:
  "fake-anthropic reply #<number of user messages> to: <last user message>"
  "fake-openai reply #<number of user messages> to: <last user message>"
(with " [system: <system prompt>]" appended when there was one; the last
message is cut to 200 characters and the system prompt to 60, "..." marking
a cut).

Every request (admin ones excepted) is validated the way the real API would:
headers (x-api-key - or Authorization: Bearer, as the newest Anthropic SDKs
send it -, anthropic-version, content-type; Authorization for OpenAI),
body shape (model, max_tokens, messages, roles - a "system" role in
Anthropic messages is a 400 -, stream, stream_options only with stream,
unknown top-level fields). A refusal is a 400 in the provider's format.

Admin API (same port)
  POST /_admin/script    body: a JSON list of behaviours (or {"items": [...]})
                         appended to a queue; each model request takes the
                         next one (if any). A behaviour is an object with any
                         of:
      status            HTTP status to fail with (400, 401, 429, 500, 529...)
      error_type        error type (default: the provider's for that status)
      message           error message (default: a documented one)
      error_body        raw body text to send instead of the error JSON
      headers           extra response headers, e.g. {"retry-after": "1",
                        "retry-after-ms": "20", "x-should-retry": "false"}
      delay_ms          wait before answering at all
      reply             reply text instead of the default one
      chunk_delay_ms    wait between streamed events
      stream_error      {"type": "overloaded_error", "message": "Overloaded"}:
                        after error_after text deltas (default 0) send an
                        "event: error" (Anthropic) or a data: {"error": ...}
                        chunk (OpenAI) and end the stream
      error_after       see stream_error
      cut               "clean": end the body normally but before
                        message_stop / finish_reason; "drop": close the
                        connection mid-body. After cut_after deltas (default 1).
      cut_after         see cut
      no_usage          OpenAI: omit usage (plain) or the usage chunk (stream)
      no_done           OpenAI: omit the final "data: [DONE]"
      content_type      content type of a 200 answer (e.g. to answer a stream
                        request with plain JSON)
      tool_use          {"name": ..., "input": {...}}: answer with a call of that
                        tool: Anthropic a tool_use block (id "toolu_fake_<n>")
                        after the text, stop_reason "tool_use" (streamed:
                        content_block_start with the block, its input in
                        input_json_delta pieces); OpenAI the assistant's
                        tool_calls (id "call_fake_<n>", arguments a JSON
                        string; streamed in delta.tool_calls pieces by index),
                        finish_reason "tool_calls"
      thinking          Anthropic: a thinking block with this text (and a
                        signature) before the others (streamed: thinking_delta
                        then signature_delta)
  GET  /_admin/requests  {"requests": [{"method", "path", "headers" (names in
                         lower case), "body" (parsed JSON, or text), "time",
                         "client_port" (same port: a kept-alive connection)}]}
  POST /_admin/mode      body: {"long_summaries": true|false}: answer every
                         summary request of ctxd (a system prompt beginning
                         "You maintain a running summary") with text that
                         fills its max_tokens, like a model that honours
                         max_tokens but writes long summaries
  POST /_admin/reset     clears the queue, the recorded requests, the mode and
                         the prompt cache

Prompt caching (Anthropic): blocks with cache_control are breakpoints; the
prompt up to each one is cached once sent, a breakpoint reads the longest
cached prefix ending at it or at one of the 20 block boundaries before it,
and usage says how much of the prompt was written to the cache
(cache_creation_input_tokens) and read from it (cache_read_input_tokens),
input_tokens being the rest.
  GET  /_admin/health    {"ok": true}
"""

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"requests": [], "script": [], "counter": 0, "mode": {}}
SUMMARY_PREFIX = "You maintain a running summary"
KEYS = {"anthropic": None, "openai": None}

ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "There was an issue with the format or content of your request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}

ANTHROPIC_FIELDS = {"model", "messages", "max_tokens", "system", "stream", "metadata",
                    "stop_sequences", "temperature", "top_p", "top_k", "tools",
                    "tool_choice", "thinking", "service_tier"}


def next_id():
    with LOCK:
        STATE["counter"] += 1
        return STATE["counter"]


def take_behaviour():
    with LOCK:
        return STATE["script"].pop(0) if STATE["script"] else {}


def text_of(content):
    """The text of a message content: a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def clip(text, n):
    """At most n characters, marked with '...' when cut (a model's answer
    does not grow with its prompt)."""
    return text if len(text) <= n else text[:n] + "..."


def reply_for(prefix, messages, system):
    users = [m for m in messages if m.get("role") == "user"]
    last = text_of(users[-1].get("content")) if users else ""
    text = "%s reply #%d to: %s" % (prefix, len(users), clip(last, 200))
    if system:
        text += " [system: %s]" % clip(system, 60)
    return text


def pieces(text):
    """Split a reply into word-sized deltas, spaces kept."""
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " " and len(cur) > 1:
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def tokens(text):
    return len(text) // 4 + 1


def prompt_cache(body):
    """Anthropic prompt caching, emulated: the prompt in cache order (tools,
    system, messages' blocks), each block up to a cache_control breakpoint a
    prefix that is cached once sent. Returns (cache_creation_input_tokens,
    cache_read_input_tokens) or None when the request has no breakpoint; at
    most 4 breakpoints are allowed (a 400 otherwise, as the API)."""
    items, marks = [], []

    def add(kind, block):
        b = dict(block) if isinstance(block, dict) else {"type": "text", "text": block}
        if b.pop("cache_control", None):
            marks.append(len(items))
        items.append([kind, b])

    for t in body.get("tools") or []:
        add("tool", t)
    system = body.get("system")
    for b in (system if isinstance(system, list) else [system] if system else []):
        add("system", b)
    for m in body["messages"]:
        c = m.get("content")
        for b in (c if isinstance(c, list) else [c]):
            add(m.get("role"), b)
    if not marks:
        return None
    if len(marks) > 4:
        raise Refusal(400, "A maximum of 4 blocks with cache_control may be provided. Found %d."
                      % len(marks))
    read = 0
    with LOCK:
        cached = STATE.setdefault("cache", set())
        for i in marks:
            # A breakpoint also hits a prefix cached at any of the 20 block
            # boundaries before it (the API's automatic prefix check).
            for j in range(i, max(-1, i - 20), -1):
                key = json.dumps(items[:j + 1], sort_keys=True)
                if key in cached:
                    read = max(read, tokens(key))
                    break
        last = json.dumps(items[:marks[-1] + 1], sort_keys=True)
        for i in marks:
            cached.add(json.dumps(items[:i + 1], sort_keys=True))
    return (max(0, tokens(last) - read), read)


def fill(text, max_tokens):
    """text, then words up to max_tokens by tokens() (cut there, as a model
    stops at max_tokens)."""
    out = text
    while tokens(out) < max_tokens:
        out += " and more detail"
    return out[:(max_tokens - 1) * 4]


class Refusal(Exception):
    def __init__(self, status, message, kind=None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"
    # Headers and body go out in separate sends: without TCP_NODELAY the body
    # would wait for a delayed ACK (~40 ms), which real APIs do not add.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---- plumbing ----
    def read_body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_raw(self, status, ctype, data, headers=None):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self, headers):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def record(self, raw):
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with LOCK:
            STATE["requests"].append({
                "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body, "time": time.time(),
                "client_port": self.client_address[1]})
        return body

    # ---- routes ----
    def do_GET(self):
        if self.path == "/_admin/requests":
            with LOCK:
                reqs = list(STATE["requests"])
            return self.send_json(200, {"requests": reqs})
        if self.path == "/_admin/health":
            return self.send_json(200, {"ok": True})
        self.send_json(404, {"error": {"message": "no route %s" % self.path,
                                       "type": "not_found_error"}})

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/_admin/script":
            items = json.loads(raw or b"[]")
            if isinstance(items, dict):
                items = items.get("items", [items])
            with LOCK:
                STATE["script"].extend(items)
            return self.send_json(200, {"queued": len(items)})
        if self.path == "/_admin/mode":
            with LOCK:
                STATE["mode"].update(json.loads(raw or b"{}"))
            return self.send_json(200, {"mode": STATE["mode"]})
        if self.path == "/_admin/reset":
            with LOCK:
                STATE["script"].clear()
                STATE["requests"].clear()
                STATE["mode"].clear()
                STATE["cache"] = set()
            return self.send_json(200, {"ok": True})
        body = self.record(raw)
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages":
            return self.anthropic(body)
        if path.endswith("/chat/completions"):
            return self.openai(body)
        self.send_json(404, {"error": {"message": "no route %s" % path,
                                       "type": "not_found_error"}})

    # ---- Anthropic ----
    def anthropic_error(self, status, etype, message, headers=None, body=None):
        rid = "req_fake_%d" % next_id()
        h = {"request-id": rid}
        h.update(headers or {})
        if body is not None:
            return self.send_raw(status, "application/json", body.encode(), h)
        self.send_json(status, {"type": "error",
                                "error": {"type": etype, "message": message},
                                "request_id": rid}, h)

    def anthropic_check(self, body):
        key = self.headers.get("x-api-key")
        auth = self.headers.get("authorization") or ""
        if not key and auth.startswith("Bearer "):
            key = auth[7:]  # newer SDKs send the key as a bearer token
        if not key:
            raise Refusal(401, "x-api-key header is required", "authentication_error")
        if KEYS["anthropic"] and key != KEYS["anthropic"]:
            raise Refusal(401, "invalid x-api-key", "authentication_error")
        if not self.headers.get("anthropic-version"):
            raise Refusal(400, "anthropic-version: header is required")
        if not (self.headers.get("content-type") or "").startswith("application/json"):
            raise Refusal(400, "content-type must be application/json")
        if not isinstance(body, dict):
            raise Refusal(400, "request body is not a JSON object")
        extra = sorted(set(body) - ANTHROPIC_FIELDS)
        if extra:
            raise Refusal(400, "%s: Extra inputs are not permitted" % extra[0])
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise Refusal(400, "model: Field required")
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise Refusal(400, "max_tokens: Field required (an integer >= 1)")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise Refusal(400, "stream: Input should be a valid boolean")
        if "system" in body and not isinstance(body["system"], (str, list)):
            raise Refusal(400, "system: Input should be a valid string")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Refusal(400, "messages: at least one message is required")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or set(m) - {"role", "content"}:
                raise Refusal(400, "messages.%d: only role and content are allowed" % i)
            if m.get("role") == "system":
                raise Refusal(400, 'messages: Unexpected role "system". The Messages API '
                              'accepts a top-level `system` parameter, not "system" as an '
                              'input message role.')
            if m.get("role") not in ("user", "assistant"):
                raise Refusal(400, "messages.%d.role: Input should be 'user' or 'assistant'" % i)
            if not isinstance(m.get("content"), (str, list)):
                raise Refusal(400, "messages.%d.content: Field required" % i)

    def anthropic(self, body):
        b = take_behaviour()
        if b.get("delay_ms"):
            time.sleep(b["delay_ms"] / 1000.0)
        try:
            self.anthropic_check(body)
        except Refusal as r:
            return self.anthropic_error(r.status, r.kind or "invalid_request_error", r.message)
        if b.get("status"):
            st = b["status"]
            etype, msg = ANTHROPIC_ERRORS.get(st, ("api_error", "error %d" % st))
            return self.anthropic_error(st, b.get("error_type", etype), b.get("message", msg),
                                        b.get("headers"), b.get("error_body"))
        try:
            self.anthropic_tools_check(body)
        except Refusal as r:
            return self.anthropic_error(r.status, r.kind or "invalid_request_error", r.message)
        n = next_id()
        model = body["model"]
        system = text_of(body.get("system")) if body.get("system") else ""
        text = b.get("reply") or reply_for("fake-anthropic", body["messages"], system)
        if STATE["mode"].get("long_summaries") and system.startswith(SUMMARY_PREFIX):
            text = fill(text, body["max_tokens"])
        itok = tokens(json.dumps(body["messages"]) + system)
        otok = tokens(text)
        try:
            cache = prompt_cache(body)
        except Refusal as r:
            return self.anthropic_error(r.status, r.kind or "invalid_request_error", r.message)
        if cache:
            itok = max(1, itok - cache[0] - cache[1])
        headers = {"request-id": "req_fake_%d" % n, "anthropic-organization-id": "org-fake"}
        headers.update(b.get("headers") or {})
        msg = {"id": "msg_fake_%d" % n, "type": "message", "role": "assistant",
               "content": [], "model": model, "stop_reason": None,
               "stop_sequence": None, "usage": {"input_tokens": itok, "output_tokens": 1}}
        if cache:
            msg["usage"]["cache_creation_input_tokens"] = cache[0]
            msg["usage"]["cache_read_input_tokens"] = cache[1]
        if not body.get("stream"):
            msg["content"] = [{"type": "text", "text": text}]
            msg["stop_reason"] = "end_turn"
            msg["usage"]["output_tokens"] = otok
            if b.get("thinking"):
                msg["content"].insert(0, {"type": "thinking", "thinking": b["thinking"],
                                          "signature": "sig_fake_%d" % n})
            if b.get("tool_use"):
                msg["content"].append({"type": "tool_use", "id": "toolu_fake_%d" % n,
                                       "name": b["tool_use"]["name"],
                                       "input": b["tool_use"].get("input", {})})
                msg["stop_reason"] = "tool_use"
            if b.get("content_type"):
                return self.send_raw(200, b["content_type"], json.dumps(msg).encode(), headers)
            return self.send_json(200, msg, headers)
        if b.get("content_type"):
            msg["content"] = [{"type": "text", "text": text}]
            msg["stop_reason"] = "end_turn"
            msg["usage"]["output_tokens"] = otok
            return self.send_raw(200, b["content_type"], json.dumps(msg).encode(), headers)
        self.anthropic_stream(b, headers, msg, text, otok, n)

    def anthropic_tools_check(self, body):
        """What the Messages API refuses about tools: a malformed tool, or a
        tool_result whose tool_use is not in the assistant message just
        before it."""
        for i, t in enumerate(body.get("tools") or []):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or \
                    not isinstance(t.get("input_schema"), dict):
                raise Refusal(400, "tools.%d: name and input_schema are required" % i)
        msgs = body["messages"]
        for i, m in enumerate(msgs):
            c = m.get("content")
            if not isinstance(c, list):
                continue
            results = [b.get("tool_use_id") for b in c
                       if isinstance(b, dict) and b.get("type") == "tool_result"]
            if not results:
                continue
            prev = msgs[i - 1].get("content") if i else None
            uses = {b.get("id") for b in prev if isinstance(b, dict)
                    and b.get("type") == "tool_use"} if isinstance(prev, list) else set()
            for r in results:
                if r not in uses:
                    raise Refusal(400, "messages.%d.content: unexpected `tool_use_id` found in "
                                  "`tool_result` blocks: %s. Each `tool_result` block must have "
                                  "a corresponding `tool_use` block in the previous message."
                                  % (i, r))

    def anthropic_stream(self, b, headers, msg, text, otok, n=0):
        delay = b.get("chunk_delay_ms", 0) / 1000.0

        def event(name, data):
            self.chunk("event: %s\ndata: %s\n\n" % (name, json.dumps(data)))
            if delay:
                time.sleep(delay)

        self.start_stream(headers)
        event("message_start", {"type": "message_start", "message": msg})
        idx = 0
        if b.get("thinking"):
            event("content_block_start", {"type": "content_block_start", "index": idx,
                                          "content_block": {"type": "thinking", "thinking": ""}})
            for piece in pieces(b["thinking"]):
                event("content_block_delta", {"type": "content_block_delta", "index": idx,
                                              "delta": {"type": "thinking_delta",
                                                        "thinking": piece}})
            event("content_block_delta", {"type": "content_block_delta", "index": idx,
                                          "delta": {"type": "signature_delta",
                                                    "signature": "sig_fake_%d" % n}})
            event("content_block_stop", {"type": "content_block_stop", "index": idx})
            idx += 1
        event("content_block_start", {"type": "content_block_start", "index": idx,
                                      "content_block": {"type": "text", "text": ""}})
        event("ping", {"type": "ping"})
        for i, piece in enumerate(pieces(text)):
            if b.get("stream_error") and i == b.get("error_after", 0):
                return self.anthropic_stream_error(b)
            if b.get("cut") and i == b.get("cut_after", 1):
                return self.cut(b)
            event("content_block_delta", {"type": "content_block_delta", "index": idx,
                                          "delta": {"type": "text_delta", "text": piece}})
        if b.get("stream_error"):
            return self.anthropic_stream_error(b)
        event("content_block_stop", {"type": "content_block_stop", "index": idx})
        stop = "end_turn"
        if b.get("tool_use"):
            idx += 1
            stop = "tool_use"
            event("content_block_start", {"type": "content_block_start", "index": idx,
                                          "content_block": {"type": "tool_use",
                                                            "id": "toolu_fake_%d" % n,
                                                            "name": b["tool_use"]["name"],
                                                            "input": {}}})
            args = json.dumps(b["tool_use"].get("input", {}))
            for k in range(0, len(args), 7):
                event("content_block_delta", {"type": "content_block_delta", "index": idx,
                                              "delta": {"type": "input_json_delta",
                                                        "partial_json": args[k:k + 7]}})
            event("content_block_stop", {"type": "content_block_stop", "index": idx})
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": otok}})
        if b.get("cut"):
            return self.cut(b)
        event("message_stop", {"type": "message_stop"})
        self.end_stream()

    def anthropic_stream_error(self, b):
        err = dict({"type": "overloaded_error", "message": "Overloaded"}, **b["stream_error"])
        self.chunk("event: error\ndata: %s\n\n" % json.dumps({"type": "error", "error": err}))
        self.end_stream()

    def cut(self, b):
        if b.get("cut") == "drop":
            return self.drop()
        self.end_stream()

    # ---- OpenAI ----
    def openai_error(self, status, etype, code, message, headers=None, body=None):
        h = {"x-request-id": "req_fake_%d" % next_id()}
        h.update(headers or {})
        if body is not None:
            return self.send_raw(status, "application/json", body.encode(), h)
        self.send_json(status, {"error": {"message": message, "type": etype,
                                          "param": None, "code": code}}, h)

    def openai_check(self, body):
        auth = self.headers.get("authorization")
        if KEYS["openai"] and auth != "Bearer " + KEYS["openai"]:
            if not auth:
                raise Refusal(401, "You didn't provide an API key. You need to provide your "
                              "API key in an Authorization header using Bearer auth.", "auth")
            raise Refusal(401, "Incorrect API key provided.", "auth")
        if auth is not None and not auth.startswith("Bearer "):
            raise Refusal(401, "Authorization header must use Bearer auth.", "auth")
        if not (self.headers.get("content-type") or "").startswith("application/json"):
            raise Refusal(400, "content-type must be application/json")
        if not isinstance(body, dict):
            raise Refusal(400, "We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise Refusal(400, "you must provide a model parameter")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Refusal(400, "[] is too short - 'messages'")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise Refusal(400, "messages[%d]: not an object" % i)
            if m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                raise Refusal(400, "Invalid value: '%s'. Supported values are: 'system', "
                              "'assistant', 'user', 'tool', 'developer'." % m.get("role"))
            calls = m.get("tool_calls")
            if m.get("role") == "assistant" and calls is not None:
                # Chat Completions: an assistant's tool calls, content optional.
                if not isinstance(calls, list) or not calls or not all(
                        isinstance(c, dict) and c.get("type") == "function"
                        and isinstance(c.get("id"), str)
                        and isinstance((c.get("function") or {}).get("name"), str)
                        and isinstance((c.get("function") or {}).get("arguments"), str)
                        for c in calls):
                    raise Refusal(400, "messages[%d].tool_calls: each needs id, type "
                                  "'function' and function.name / function.arguments (a "
                                  "string)" % i)
                if m.get("content") is not None and not isinstance(m["content"], (str, list)):
                    raise Refusal(400, "messages[%d].content: expected a string" % i)
                continue
            if m.get("role") == "tool":
                k = i - 1
                while k >= 0 and msgs[k].get("role") == "tool":
                    k -= 1
                prev = [c.get("id") for c in (msgs[k].get("tool_calls") or [])] if k >= 0 else []
                if not isinstance(m.get("tool_call_id"), str) or m["tool_call_id"] not in prev:
                    raise Refusal(400, "Invalid parameter: messages with role 'tool' must be a "
                                  "response to a preceeding message with 'tool_calls'.")
            if not isinstance(m.get("content"), (str, list)):
                raise Refusal(400, "messages[%d].content: expected a string" % i)
        for f in ("max_tokens", "max_completion_tokens"):
            v = body.get(f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise Refusal(400, "Invalid '%s': expected an integer >= 1" % f)
        if "stream" in body and not isinstance(body["stream"], bool):
            raise Refusal(400, "Invalid type for 'stream': expected a boolean")
        if body.get("stream_options") is not None and not body.get("stream"):
            raise Refusal(400, "The 'stream_options' parameter is only allowed when "
                          "'stream' is enabled.")

    def openai(self, body):
        b = take_behaviour()
        if b.get("delay_ms"):
            time.sleep(b["delay_ms"] / 1000.0)
        try:
            self.openai_check(body)
        except Refusal as r:
            code = "invalid_api_key" if r.kind == "auth" else None
            return self.openai_error(r.status, "invalid_request_error", code, r.message)
        if b.get("status"):
            st = b["status"]
            etype, code, msg = OPENAI_ERRORS.get(st, ("server_error", None, "error %d" % st))
            return self.openai_error(st, b.get("error_type", etype), b.get("code", code),
                                     b.get("message", msg), b.get("headers"), b.get("error_body"))
        n = next_id()
        model = body["model"]
        msgs = body["messages"]
        system = text_of(msgs[0]["content"]) if msgs[0].get("role") == "system" else ""
        text = b.get("reply") or reply_for("fake-openai", msgs, system)
        ptok, ctok = tokens(json.dumps(msgs)), tokens(text)
        usage = {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok}
        headers = {"x-request-id": "req_fake_%d" % n, "openai-processing-ms": "1"}
        headers.update(b.get("headers") or {})
        cid, created = "chatcmpl-fake%d" % n, int(time.time())
        for i, t in enumerate(body.get("tools") or []):
            if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(
                    (t.get("function") or {}).get("name"), str):
                return self.openai_error(400, "invalid_request_error", None,
                                         "Invalid 'tools[%d]': a function needs a name" % i)
        if not body.get("stream") or b.get("content_type"):
            message = {"role": "assistant", "content": text, "refusal": None}
            finish = "stop"
            if b.get("tool_use"):
                message["tool_calls"] = [{"id": "call_fake_%d" % n, "type": "function",
                                          "function": {"name": b["tool_use"]["name"],
                                                       "arguments": json.dumps(
                                                           b["tool_use"].get("input", {}))}}]
                message["content"] = None
                finish = "tool_calls"
            obj = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                   "choices": [{"index": 0, "message": message,
                                "logprobs": None, "finish_reason": finish}],
                   "usage": usage, "system_fingerprint": "fp_fake"}
            if b.get("no_usage"):
                del obj["usage"]
            return self.send_raw(200, b.get("content_type", "application/json"),
                                 json.dumps(obj).encode(), headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.openai_stream(b, headers, cid, created, model, text, usage, include_usage)

    def openai_stream(self, b, headers, cid, created, model, text, usage, include_usage):
        delay = b.get("chunk_delay_ms", 0) / 1000.0

        def chunk(choices, **extra):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": "fp_fake", "choices": choices}
            if include_usage:
                obj["usage"] = None
            obj.update(extra)
            self.chunk("data: %s\n\n" % json.dumps(obj))
            if delay:
                time.sleep(delay)

        def choice(delta, finish=None):
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        self.start_stream(headers)
        chunk(choice({"role": "assistant", "content": "", "refusal": None}))
        if b.get("tool_use"):
            args = json.dumps(b["tool_use"].get("input", {}))
            chunk(choice({"tool_calls": [{"index": 0, "id": "call_fake_%s" % cid[13:],
                                          "type": "function",
                                          "function": {"name": b["tool_use"]["name"],
                                                       "arguments": ""}}]}))
            for k in range(0, len(args), 5):
                chunk(choice({"tool_calls": [{"index": 0,
                                              "function": {"arguments": args[k:k + 5]}}]}))
            chunk(choice({}, "tool_calls"))
            if include_usage and not b.get("no_usage"):
                chunk([], usage=usage)
            self.chunk("data: [DONE]\n\n")
            return self.end_stream()
        for i, piece in enumerate(pieces(text)):
            if b.get("stream_error") and i == b.get("error_after", 0):
                return self.openai_stream_error(b)
            if b.get("cut") and i == b.get("cut_after", 1):
                return self.cut(b)
            chunk(choice({"content": piece}))
        if b.get("stream_error"):
            return self.openai_stream_error(b)
        if b.get("cut"):
            return self.cut(b)
        chunk(choice({}, "stop"))
        if include_usage and not b.get("no_usage"):
            chunk([], usage=usage)
        if not b.get("no_done"):
            self.chunk("data: [DONE]\n\n")
        self.end_stream()

    def openai_stream_error(self, b):
        err = dict({"message": "The server had an error while processing your request.",
                    "type": "server_error", "param": None, "code": None}, **b["stream_error"])
        self.chunk("data: %s\n\n" % json.dumps({"error": err}))
        self.end_stream()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default 5 drops SYNs under parallel calls

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            return  # a client that hung up (timeouts under test): not news
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="fake Anthropic/OpenAI upstream")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--anthropic-key")
    ap.add_argument("--openai-key")
    args = ap.parse_args()
    KEYS["anthropic"], KEYS["openai"] = args.anthropic_key, args.openai_key
    srv = Server((args.host, args.port), Handler)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
