"""Lossless transcripts: messages of content blocks (Anthropic's shape) are
stored and read back as given, with an id and the client's metadata;
malformed blocks are refused naming the block and field, storing nothing;
turns send blocks to each provider in its own shape."""
import copy
import json
import unittest

from harness import Ctxd, FakeUpstream, Redis, main, sse_events

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8PC9Sb290IDEgMCBSPj4KJSVFT0YK"

USER_BLOCKS = [
    {"type": "text", "text": "What is in these?", "cache_control": {"type": "ephemeral"}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                    "data": PDF}, "title": "a.pdf", "citations": {"enabled": True}},
    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                    "data": "plain words"}},
]
ASSISTANT_BLOCKS = [
    {"type": "thinking", "thinking": "The user wants the weather.",
     "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"},
    {"type": "text", "text": "Let me check."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
     "name": "get_weather", "input": {"location": "Paris", "unit": "celsius", "deep": {"a": [1, 2.5, None, True]}}},
    {"type": "tool_use", "id": "toolu_other", "name": "get_time", "input": {}},
]
RESULT_BLOCKS = [
    {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
     "content": [{"type": "text", "text": "15 degrees"},
                 {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                              "data": PNG}}]},
    {"type": "tool_result", "tool_use_id": "toolu_other", "content": "failed", "is_error": True},
    {"type": "text", "text": "Thanks, go on \u00e9\u4e2d\U0001f600 \"quoted\" \\\\ /slash"},
]


class BlocksTest(unittest.TestCase):
    PROVIDER = "anthropic"

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.fake = FakeUpstream()
        env = {"CTXD_PROVIDER": cls.PROVIDER, "CTXD_UPSTREAM_MAX_RETRIES": "0",
               "CTXD_MAX_MESSAGE_BYTES": "100000"}
        if cls.PROVIDER == "anthropic":
            env.update({"ANTHROPIC_API_KEY": "test-key", "CTXD_ANTHROPIC_URL": cls.fake.url})
        else:
            env.update({"OPENAI_API_KEY": "test-key", "CTXD_OPENAI_URL": cls.fake.url + "/v1",
                        "CTXD_MODEL": "gpt-4o"})
        cls.ctxd = Ctxd(cls.redis.url, env=env).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.fake.stop()
            cls.redis.cleanup()

    def req(self, method, path, body=None, headers=None):
        return self.ctxd.request(method, path, body, headers)

    def create(self):
        r = self.req("POST", "/mcp/context", {})
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    def append(self, cid, messages, expect=201):
        r = self.req("POST", "/mcp/context/%s/messages" % cid, {"messages": messages})
        self.assertEqual(r.status, expect, r)
        return r

    def stored(self, cid):
        r = self.req("GET", "/mcp/context/%s/messages" % cid)
        self.assertEqual(r.status, 200, r)
        return r.json()["messages"]


class AnthropicBlocksTest(BlocksTest):
    def test_every_block_type_round_trips(self):
        cid = self.create()
        sent = [{"role": "user", "content": USER_BLOCKS, "metadata": {"client_id": "u-1",
                                                                       "tags": ["a", "b"]}},
                {"role": "assistant", "content": ASSISTANT_BLOCKS},
                {"role": "user", "content": RESULT_BLOCKS, "metadata": {"n": 3}},
                {"role": "assistant", "content": "plain text still works"}]
        self.append(cid, copy.deepcopy(sent))
        got = self.stored(cid)
        self.assertEqual(len(got), 4)
        for s, g in zip(sent, got):
            self.assertEqual(g["content"], s["content"])  # JSON-equal, unknown fields kept
            self.assertEqual(g.get("metadata"), s.get("metadata"))
            self.assertRegex(g["id"], r"^msg_[0-9A-Za-z]{24}$")
            self.assertEqual(g["role"], s["role"])
        self.assertEqual(len({g["id"] for g in got}), 4)
        self.assertEqual([g["id"] for g in self.stored(cid)], [g["id"] for g in got])  # stable
        full = self.req("GET", "/mcp/context/" + cid).json()["messages"]
        self.assertEqual(full, got)
        # Token estimates cover blocks: the image costs its fixed estimate.
        self.assertGreaterEqual(got[0]["tokens"], 2 * 1600)
        # The listing's preview shows text, not JSON.
        self.append(cid, [{"role": "user", "content": [{"type": "text", "text": "see this"},
                                                       USER_BLOCKS[2]]}])
        items = self.req("GET", "/mcp/contexts?limit=50").json()["contexts"]
        preview = [c for c in items if c["id"] == cid][0]["preview"]
        self.assertEqual(preview, {"role": "user", "text": "see this\n[image]",
                                   "truncated": False})

    def test_images_up_to_the_providers_size(self):
        # CTXD_MAX_MESSAGE_BYTES (100000 here) bounds text; blocks go up to
        # the body's limit (32 MiB by default), an image up to 5 MB.
        cid = self.create()
        big = "A" * (4 * 1024 * 1024 // 3 * 4)  # a 4 MB image, base64
        img = [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": big}}]
        self.append(cid, [{"role": "user", "content": img}])
        self.assertEqual(self.stored(cid)[-1]["content"], img)
        too = [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": "A" * (6 * 1024 * 1024 // 3 * 4)}}]
        r = self.append(cid, [{"role": "user", "content": too}], expect=413)
        self.assertEqual(r.json()["code"], "field_too_large")
        self.assertIn("messages[0].content[0].source.data", r.json()["error"])
        r = self.append(cid, [{"role": "user", "content": "x" * 100001}], expect=413)
        self.assertIn("CTXD_MAX_MESSAGE_BYTES", r.json()["error"])

    def test_malformed_blocks_are_refused_and_nothing_is_stored(self):
        cid = self.create()
        self.append(cid, [{"role": "user", "content": "first"}])
        before = self.redis.snapshot()
        bad = [
            ("user", [{"type": "text"}], "messages[0].content[0].text"),
            ("user", [{"type": "text", "text": "ok"}, {"type": "video"}], "messages[0].content[1].type"),
            ("user", [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp",
                                                   "data": "x"}}],
             "messages[0].content[0].source.media_type"),
            ("user", [{"type": "image", "source": {"type": "url"}}], "messages[0].content[0].source.url"),
            ("user", [{"type": "image"}], "messages[0].content[0].source"),
            ("user", [{"type": "document", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": "x"}}],
             "messages[0].content[0].source.media_type"),
            ("assistant", [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}],
             "messages[0].content[0].input"),
            ("assistant", [{"type": "tool_use", "name": "f", "input": {}}], "messages[0].content[0].id"),
            ("user", [{"type": "tool_result", "tool_use_id": "t", "content": 5}],
             "messages[0].content[0].content"),
            ("user", [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}],
             "messages[0].content[0].is_error"),
            ("user", [{"type": "tool_result", "tool_use_id": "t",
                       "content": [{"type": "tool_use", "id": "x", "name": "y", "input": {}}]}],
             "messages[0].content[0].content[0]"),
            ("assistant", [{"type": "thinking", "thinking": "hm"}], "messages[0].content[0].signature"),
            ("user", [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "messages[0].content[0]"),
            ("assistant", [{"type": "tool_result", "tool_use_id": "t"}], "messages[0].content[0]"),
            ("user", [], "messages[0].content"),
            ("user", ["text"], "messages[0].content[0]"),
            ("user", {"type": "text", "text": "x"}, "messages[0].content"),
        ]
        for role, content, where in bad:
            with self.subTest(where=where, content=content):
                r = self.append(cid, [{"role": role, "content": content}], expect=400)
                self.assertEqual(r.json()["code"], "invalid_field", r)
                self.assertIn(where, r.json()["error"])
        r = self.append(cid, [{"role": "user", "content": "x", "metadata": [1]}], expect=400)
        self.assertIn("messages[0].metadata", r.json()["error"])
        r = self.append(cid, [{"role": "user", "content": "x", "metadata": {"k": "v" * 5000}}],
                        expect=413)
        self.assertEqual(r.json()["code"], "field_too_large")
        r = self.req("POST", "/mcp/context/%s/message" % cid,
                     {"message": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]})
        self.assertEqual(r.status, 400, r)
        self.assertIn("message[0]", r.json()["error"])
        self.assertEqual(self.redis.snapshot(), before)

    def test_a_turn_with_blocks_reaches_anthropic_as_given(self):
        cid = self.create()
        self.fake.reset()
        self.append(cid, [{"role": "user", "content": USER_BLOCKS},
                          {"role": "assistant", "content": ASSISTANT_BLOCKS},
                          {"role": "user", "content": RESULT_BLOCKS},
                          {"role": "assistant", "content": "The weather is mild."}])
        msg = [{"type": "text", "text": "and tomorrow?"},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.png"}}]
        r = self.req("POST", "/mcp/context/%s/message" % cid,
                     {"message": msg, "metadata": {"client_msg": "m-9"}})
        self.assertEqual(r.status, 200, r)
        self.assertIsInstance(r.json()["ai_response"], str)
        self.assertIn("and tomorrow?", r.json()["ai_response"])
        body = self.fake.requests()[-1]["body"]
        self.assertEqual([m["content"] for m in body["messages"]],
                         [USER_BLOCKS, ASSISTANT_BLOCKS, RESULT_BLOCKS, "The weather is mild.", msg])
        got = self.stored(cid)
        self.assertEqual(got[-2]["content"], msg)
        self.assertEqual(got[-2]["metadata"], {"client_msg": "m-9"})
        self.assertRegex(got[-1]["id"], r"^msg_")


def exchange(i, pad):
    """A user question, a tool call, its (long) result and the answer."""
    tid = "toolu_%04d" % i
    return [{"role": "user", "content": "question %d" % i},
            {"role": "assistant", "content": [
                {"type": "text", "text": "looking"},
                {"type": "tool_use", "id": tid, "name": "lookup",
                 "input": {"q": i, "notes": "y" * (700 - pad // 3)}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tid, "content": "x" * pad}]},
            {"role": "assistant", "content": "answer %d" % i}]


def is_tool_result(m):
    return m["role"] == "user" and isinstance(m["content"], list) and any(
        b.get("type") == "tool_result" for b in m["content"])


class ToolWindowTest(BlocksTest):
    def check_pairs(self, msgs):
        """No tool_result without its tool_use just before it; the first
        message a plain user message."""
        self.assertFalse(is_tool_result(msgs[0]), msgs[0])
        self.assertEqual(msgs[0]["role"], "user")
        for k, m in enumerate(msgs):
            if is_tool_result(m):
                prev = msgs[k - 1]
                ids = {b["id"] for b in prev["content"] if b.get("type") == "tool_use"}
                self.assertTrue(ids >= {b["tool_use_id"] for b in m["content"]
                                        if b.get("type") == "tool_result"}, (prev, m))

    def test_windows_never_split_a_tool_exchange(self):
        r = self.req("POST", "/mcp/context", {"strategy": "window", "max_context_tokens": 900})
        cid = r.json()["context_id"]
        self.fake.reset()
        for i in range(12):
            # Results of varying length make every window edge land somewhere else.
            self.append(cid, exchange(i, 200 + (i * 397) % 1400))
            r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "go on %d" % i})
            self.assertEqual(r.status, 200, r)
        sent = [q["body"]["messages"] for q in self.fake.requests()
                if q["path"] == "/v1/messages"]
        self.assertEqual(len(sent), 12)
        self.assertTrue(any(len(m) < 6 for m in sent), "no window ever dropped anything")
        for msgs in sent:
            self.check_pairs(msgs)

    def test_trimming_keeps_tool_exchanges_whole(self):
        r = self.req("POST", "/mcp/context", {"max_messages": 6})
        cid = r.json()["context_id"]
        for i in range(5):
            self.append(cid, exchange(i, 50))
            kept = self.stored(cid)
            self.assertLessEqual(len(kept), 6)
            self.check_pairs(kept)


class OpenAIBlocksTest(BlocksTest):
    PROVIDER = "openai"

    def test_blocks_are_translated_for_openai(self):
        cid = self.create()
        self.fake.reset()
        self.append(cid, [{"role": "user", "content": USER_BLOCKS[:3]},
                          {"role": "assistant", "content": ASSISTANT_BLOCKS},
                          {"role": "user", "content": RESULT_BLOCKS[:1] + RESULT_BLOCKS[2:]},
                          {"role": "assistant", "content": "Mild."}])
        r = self.req("POST", "/mcp/context/%s/message" % cid, {"message": "and tomorrow?"})
        self.assertEqual(r.status, 200, r)
        msgs = self.fake.requests()[-1]["body"]["messages"]
        self.assertEqual(msgs[0], {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]})
        self.assertEqual(msgs[1]["role"], "assistant")
        self.assertEqual(msgs[1]["content"], "Let me check.")  # thinking is not sent to OpenAI
        self.assertEqual(msgs[1]["tool_calls"], [{
            "id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(
                ASSISTANT_BLOCKS[3]["input"], separators=(",", ":"))}},
            {"id": "toolu_other", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}])
        self.assertEqual(json.loads(msgs[1]["tool_calls"][0]["function"]["arguments"]),
                         ASSISTANT_BLOCKS[3]["input"])
        self.assertEqual(msgs[2], {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
                                   "content": "15 degrees"})
        self.assertEqual(msgs[3], {"role": "user", "content": [
            {"type": "text", "text": RESULT_BLOCKS[2]["text"]}]})
        self.assertEqual(msgs[4:], [{"role": "assistant", "content": "Mild."},
                                    {"role": "user", "content": "and tomorrow?"}])
        # The stored form stays the neutral one.
        self.assertEqual(self.stored(cid)[1]["content"], ASSISTANT_BLOCKS)


TOOLS = [{"name": "get_weather", "description": "The weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]


class ToolLoopTest(unittest.TestCase):
    """A tool loop through turns: the model calls a tool, the client sends the
    result, the model answers; on Anthropic, on OpenAI, and switching from
    one to the other mid-conversation (two ctxd processes, one Redis)."""

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.fake = FakeUpstream()
        base = {"CTXD_UPSTREAM_MAX_RETRIES": "0"}
        cls.anthropic = Ctxd(cls.redis.url, env=dict(base, CTXD_PROVIDER="anthropic",
                                                     ANTHROPIC_API_KEY="test-key",
                                                     CTXD_ANTHROPIC_URL=cls.fake.url)).start()
        cls.openai = Ctxd(cls.redis.url, env=dict(base, CTXD_PROVIDER="openai",
                                                  OPENAI_API_KEY="test-key", CTXD_MODEL="gpt-4o",
                                                  CTXD_OPENAI_URL=cls.fake.url + "/v1")).start()

    @classmethod
    def tearDownClass(cls):
        try:
            for c in (cls.anthropic, cls.openai):
                c.stop_ok()
        finally:
            for c in (cls.anthropic, cls.openai):
                c.cleanup()
            cls.fake.stop()
            cls.redis.cleanup()

    def turn(self, ctxd, cid, body, headers=None):
        r = ctxd.request("POST", "/mcp/context/%s/message" % cid, body, headers)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def new(self, ctxd):
        return ctxd.request("POST", "/mcp/context", {}).json()["context_id"]

    def stored(self, cid):
        return self.anthropic.request("GET", "/mcp/context/%s/messages" % cid).json()["messages"]

    def last_body(self):
        return self.fake.requests()[-1]["body"]

    def test_anthropic_tool_loop_with_thinking(self):
        cid = self.new(self.anthropic)
        self.fake.reset()
        self.fake.script({"tool_use": {"name": "get_weather", "input": {"city": "Paris"}},
                          "thinking": "The user wants the weather; call the tool."})
        key = {"Idempotency-Key": "tool-" + cid}
        j = self.turn(self.anthropic, cid, {"message": "Weather in Paris?", "tools": TOOLS,
                                            "tool_choice": {"type": "auto"}}, key)
        self.assertEqual(j["stop_reason"], "tool_use")
        self.assertEqual([b["type"] for b in j["content"]], ["thinking", "text", "tool_use"])
        call = j["content"][2]
        self.assertEqual((call["name"], call["input"]), ("get_weather", {"city": "Paris"}))
        self.assertEqual(j["ai_response"], j["content"][1]["text"])
        self.assertEqual(self.last_body()["tools"], TOOLS)
        self.assertEqual(self.last_body()["tool_choice"], {"type": "auto"})
        self.assertEqual(self.stored(cid)[-1]["content"], j["content"])
        # A retry with the same key replays the whole reply, blocks included.
        again = self.turn(self.anthropic, cid, {"message": "Weather in Paris?", "tools": TOOLS,
                                                "tool_choice": {"type": "auto"}}, key)
        self.assertEqual(again, j)
        # The client runs the tool and sends the result.
        result = [{"type": "tool_result", "tool_use_id": call["id"], "content": "15 C, sunny"}]
        j2 = self.turn(self.anthropic, cid, {"message": result, "tools": TOOLS})
        self.assertEqual(j2["stop_reason"], "end_turn")
        self.assertNotIn("content", j2)
        sent = self.last_body()["messages"]
        self.assertEqual([m["role"] for m in sent], ["user", "assistant", "user"])
        self.assertEqual(sent[1]["content"], j["content"])  # thinking and its signature unchanged
        self.assertEqual(sent[2]["content"], result)
        self.assertEqual(len(self.stored(cid)), 4)

    def test_openai_tool_loop(self):
        cid = self.new(self.openai)
        self.fake.reset()
        self.fake.script({"tool_use": {"name": "get_weather", "input": {"city": "Oslo"}}})
        j = self.turn(self.openai, cid, {"message": "Weather in Oslo?", "tools": TOOLS,
                                         "tool_choice": {"type": "tool", "name": "get_weather"}})
        body = self.last_body()
        self.assertEqual(body["tools"], [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": TOOLS[0]["input_schema"]}}])
        self.assertEqual(body["tool_choice"], {"type": "function",
                                               "function": {"name": "get_weather"}})
        self.assertEqual(j["stop_reason"], "tool_use")
        self.assertRegex(j["content"][0]["id"], r"^call_fake_\d+$")  # OpenAI's call id, kept
        self.assertEqual(j["content"], [{"type": "tool_use", "id": j["content"][0]["id"],
                                         "name": "get_weather", "input": {"city": "Oslo"}}])
        result = [{"type": "tool_result", "tool_use_id": j["content"][0]["id"],
                   "content": [{"type": "text", "text": "-3 C"}]}]
        j2 = self.turn(self.openai, cid, {"message": result, "tools": TOOLS})
        self.assertEqual(j2["stop_reason"], "stop")
        sent = self.last_body()["messages"]
        self.assertEqual(sent[1]["tool_calls"][0]["id"], j["content"][0]["id"])
        self.assertEqual(json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]),
                         {"city": "Oslo"})
        self.assertEqual(sent[2], {"role": "tool", "tool_call_id": j["content"][0]["id"],
                                   "content": "-3 C"})
        # Stored in the neutral shape.
        self.assertEqual(self.stored(cid)[1]["content"], j["content"])
        self.assertEqual(self.stored(cid)[2]["content"], result)

    def test_a_context_switches_provider_mid_tool_loop(self):
        cid = self.new(self.anthropic)
        self.fake.reset()
        self.fake.script({"tool_use": {"name": "get_weather", "input": {"city": "Rome"}}})
        j = self.turn(self.anthropic, cid, {"message": "Weather in Rome?", "tools": TOOLS})
        tid = j["content"][-1]["id"]
        # The result goes through the OpenAI-configured process.
        j2 = self.turn(self.openai, cid, {"message": [
            {"type": "tool_result", "tool_use_id": tid, "content": "20 C"}], "tools": TOOLS})
        self.assertIn("fake-openai reply", j2["ai_response"])
        sent = self.last_body()["messages"]
        self.assertEqual(sent[0], {"role": "user", "content": "Weather in Rome?"})
        self.assertEqual(sent[1]["tool_calls"][0]["id"], tid)
        self.assertEqual(sent[2], {"role": "tool", "tool_call_id": tid, "content": "20 C"})
        # And back to Anthropic: the history still means the same.
        self.turn(self.anthropic, cid, {"message": "thanks"})
        sent = self.last_body()["messages"]
        self.assertEqual(sent[1]["content"], j["content"])
        self.assertEqual(sent[2]["content"][0]["tool_use_id"], tid)

    def stream_turn(self, ctxd, cid, body):
        r = ctxd.request("POST", "/mcp/context/%s/message" % cid, dict(body, stream=True))
        self.assertEqual(r.status, 200, r)
        events = sse_events(r.body)
        done = [d for e, d in events if e == "done"]
        self.assertEqual(len(done), 1, events)
        text = "".join(d["text"] for e, d in events if e == "delta")
        return done[0], text

    def test_streamed_tool_loops(self):
        for name, ctxd, thinking in (("anthropic", self.anthropic, "Think first."),
                                     ("openai", self.openai, None)):
            with self.subTest(provider=name):
                cid = self.new(ctxd)
                self.fake.reset()
                b = {"tool_use": {"name": "get_weather", "input": {"city": "Lima", "days": [1, 2]}}}
                if thinking:
                    b["thinking"] = thinking
                self.fake.script(b)
                done, text = self.stream_turn(ctxd, cid, {"message": "Weather in Lima?",
                                                          "tools": TOOLS})
                self.assertTrue(self.last_body()["stream"])
                self.assertEqual(done["stop_reason"], "tool_use")
                call = done["content"][-1]
                self.assertEqual((call["type"], call["name"], call["input"]),
                                 ("tool_use", "get_weather", {"city": "Lima", "days": [1, 2]}))
                if thinking:
                    self.assertEqual(done["content"][0], {"type": "thinking",
                                                          "thinking": thinking,
                                                          "signature": done["content"][0]
                                                          ["signature"]})
                    self.assertTrue(done["content"][0]["signature"].startswith("sig_fake_"))
                    self.assertEqual(text, done["content"][1]["text"])
                self.assertEqual(self.stored(cid)[-1]["content"], done["content"])
                result = [{"type": "tool_result", "tool_use_id": call["id"], "content": "9 C"}]
                done2, _ = self.stream_turn(ctxd, cid, {"message": result, "tools": TOOLS})
                self.assertNotEqual(done2["stop_reason"], "tool_use")
                sent = self.last_body()["messages"]
                if name == "anthropic":
                    self.assertEqual(sent[1]["content"], done["content"])  # signature as streamed
                    self.assertEqual(sent[2]["content"], result)
                else:
                    self.assertEqual(sent[1]["tool_calls"][0]["id"], call["id"])
                    self.assertEqual(sent[2], {"role": "tool", "tool_call_id": call["id"],
                                               "content": "9 C"})

    def test_tools_as_a_context_setting(self):
        r = self.anthropic.request("POST", "/mcp/context",
                                   {"tools": TOOLS, "tool_choice": {"type": "any"}})
        self.assertEqual(r.status, 201, r)
        cid = r.json()["context_id"]
        g = self.anthropic.request("GET", "/mcp/context/" + cid).json()
        self.assertEqual((g["tools"], g["tool_choice"]), (TOOLS, {"type": "any"}))
        self.fake.reset()
        self.turn(self.anthropic, cid, {"message": "hi"})
        body = self.last_body()
        self.assertEqual((body["tools"], body["tool_choice"]), (TOOLS, {"type": "any"}))
        # A turn's own tools win over the context's.
        own = [dict(TOOLS[0], name="other")]
        self.turn(self.anthropic, cid, {"message": "again", "tools": own})
        self.assertEqual(self.last_body()["tools"], own)
        self.assertNotIn("tool_choice", self.last_body())
        # OpenAI gets them too, translated.
        self.turn(self.openai, cid, {"message": "and you?"})
        self.assertEqual(self.last_body()["tools"][0]["function"]["name"], "get_weather")
        self.assertEqual(self.last_body()["tool_choice"], "required")
        # PATCH "tools": [] takes them away.
        r = self.anthropic.request("PATCH", "/mcp/context/" + cid, {"tools": []})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("tools", r.json())
        self.turn(self.anthropic, cid, {"message": "bye"})
        self.assertNotIn("tools", self.last_body())
        r = self.anthropic.request("PATCH", "/mcp/context/" + cid, {"tools": [{"name": "x"}]})
        self.assertEqual(r.status, 400, r)
        self.assertIn("tools[0].input_schema", r.json()["error"])

    def test_tools_are_checked(self):
        cid = self.new(self.anthropic)
        before = self.redis.snapshot()
        for body, where in [({"message": "x", "tools": []}, "tools must be an array"),
                            ({"message": "x", "tools": [{"name": "a b", "input_schema": {}}]},
                             "tools[0].name"),
                            ({"message": "x", "tools": [{"name": "a"}]}, "tools[0].input_schema"),
                            ({"message": "x", "tools": TOOLS, "tool_choice": {"type": "all"}},
                             "tool_choice.type"),
                            ({"message": "x", "tools": TOOLS, "tool_choice": {"type": "tool"}},
                             "tool_choice.name"),
                            ({"message": "x", "tool_choice": {"type": "auto"}}, "needs tools")]:
            with self.subTest(body=body):
                r = self.anthropic.request("POST", "/mcp/context/%s/message" % cid, body)
                self.assertEqual(r.status, 400, r)
                self.assertIn(where, r.json()["error"])
        self.assertEqual(self.redis.snapshot(), before)


if __name__ == "__main__":
    main()
