// sdk_clients.mjs: the official SDKs pointed at ctxd's drop-in routes (/v1/messages,
// /v1/chat/completions, /v1/models). Run by tests/e2e/test_sdk.py:
//   node sdk_clients.mjs <scenario>
// with CTXD_A (a ctxd whose provider is anthropic), CTXD_O (one whose provider is
// openai) and FAKE (the fake upstream both call) in the environment. Each scenario
// checks what the SDK sees (assert: non-zero exit on a mismatch) and prints one JSON
// line for the Python side to check what ctxd stored and what the upstream received.
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const CALLER_KEY = 'caller-key-never-forwarded';
const anthropic = new Anthropic({ apiKey: CALLER_KEY, baseURL: process.env.CTXD_A, maxRetries: 0 });
const openai = new OpenAI({ apiKey: CALLER_KEY, baseURL: process.env.CTXD_O + '/v1', maxRetries: 0 });
const fake = (path, body) => fetch(process.env.FAKE + '/_admin/' + path, {
  method: 'POST', body: JSON.stringify(body) }).then((r) => r.json());
const ctx = (id) => ({ headers: { 'ctxd-context-id': id } });

// A first call names no context: ctxd makes one and says its id.
async function anthropicFirst(params) {
  const { data, response } = await anthropic.messages.create(params).withResponse();
  const id = response.headers.get('ctxd-context-id');
  assert.match(id, /^[0-9a-f-]{36}$/);
  return { id, msg: data };
}

async function openaiFirst(params) {
  const { data, response } = await openai.chat.completions.create(params).withResponse();
  const id = response.headers.get('ctxd-context-id');
  assert.match(id, /^[0-9a-f-]{36}$/);
  return { id, msg: data };
}

const scenarios = {
  // Three turns, each sending only the new user message.
  async anthropic_three_turns() {
    const base = { model: 'claude-test', max_tokens: 200, system: 'be brief' };
    const { id, msg } = await anthropicFirst({ ...base, messages: [{ role: 'user', content: 'first question' }] });
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.match(msg.id, /^msg_[0-9A-Za-z]{24}$/);
    const texts = [msg.content[0].text];
    for (const q of ['second question', 'third question']) {
      const m = await anthropic.messages.create({ ...base, messages: [{ role: 'user', content: q }] }, ctx(id));
      assert.equal(m.stop_reason, 'end_turn');
      assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);
      texts.push(m.content[0].text);
    }
    return { id, texts, ids: [msg.id] };
  },

  // The same through the stream helper: text events, then the final message.
  async anthropic_stream() {
    const base = { model: 'claude-test', max_tokens: 200 };
    const { id } = await anthropicFirst({ ...base, messages: [{ role: 'user', content: 'first question' }] });
    const texts = [], finals = [];
    for (const q of ['second question', 'third question']) {
      const stream = anthropic.messages.stream({ ...base, messages: [{ role: 'user', content: q }] }, ctx(id));
      let streamed = '';
      stream.on('text', (t) => { streamed += t; });
      const final = await stream.finalMessage();
      assert.equal(final.content[0].text, streamed);
      assert.equal(final.stop_reason, 'end_turn');
      assert.ok(final.usage.output_tokens > 0, JSON.stringify(final.usage));
      texts.push(streamed);
      finals.push(final.id);
    }
    return { id, texts, ids: finals };
  },

  // A tool loop: the model calls a tool, the client sends only the tool_result.
  async anthropic_tools() {
    const tools = [{ name: 'get_weather', description: 'Weather of a city',
      input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
    await fake('script', [{ tool_use: { name: 'get_weather', input: { city: 'Paris' } } }, {},
                          { tool_use: { name: 'get_weather', input: { city: 'Rome' } },
                            thinking: 'Rome: call the tool again.' }, {}]);
    const base = { model: 'claude-test', max_tokens: 200, tools };
    const { id, msg } = await anthropicFirst({ ...base, messages: [{ role: 'user', content: 'weather in Paris?' }] });
    assert.equal(msg.stop_reason, 'tool_use');
    const call = msg.content.find((b) => b.type === 'tool_use');
    assert.deepEqual(call.input, { city: 'Paris' });
    const done = await anthropic.messages.create({ ...base, messages: [{ role: 'user', content: [
      { type: 'tool_result', tool_use_id: call.id, content: '15 degrees' }] }] }, ctx(id));
    assert.equal(done.stop_reason, 'end_turn');
    // Streamed, through the helper: the tool_use block arrives whole.
    const s = anthropic.messages.stream({ ...base, messages: [{ role: 'user', content: 'and Rome?' }] }, ctx(id));
    const streamed = await s.finalMessage();
    assert.equal(streamed.stop_reason, 'tool_use');
    assert.deepEqual(streamed.content.map((b) => b.type), ['thinking', 'text', 'tool_use']);
    assert.equal(streamed.content[0].thinking, 'Rome: call the tool again.');
    assert.ok(streamed.content[0].signature.length > 10);
    const call2 = streamed.content.find((b) => b.type === 'tool_use');
    assert.deepEqual(call2.input, { city: 'Rome' });
    const s2 = anthropic.messages.stream({ ...base, messages: [{ role: 'user', content: [
      { type: 'tool_result', tool_use_id: call2.id, content: '18 degrees' }] }] }, ctx(id));
    const end = await s2.finalMessage();
    assert.equal(end.stop_reason, 'end_turn');
    return { id, call_ids: [call.id, call2.id], texts: [done.content[0].text, end.content[0].text],
             thinking: streamed.content[0] };
  },

  // Upstream failures come back as the SDK's own error classes.
  async anthropic_errors() {
    const base = { model: 'claude-test', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] };
    const { id } = await anthropicFirst(base);
    const seen = {};
    await fake('script', [{ status: 429, headers: { 'retry-after': '7' } }]);
    await assert.rejects(anthropic.messages.create(base, ctx(id)), (e) => {
      assert.ok(e instanceof Anthropic.RateLimitError, String(e));
      seen.rate = { status: e.status, type: e.error.error.type, retry: e.headers.get('retry-after') };
      return true;
    });
    await fake('script', [{ status: 529 }]);
    await assert.rejects(anthropic.messages.create(base, ctx(id)), (e) => {
      assert.ok(e instanceof Anthropic.OverloadedError, String(e));
      seen.overloaded = { status: e.status, type: e.error.error.type };
      return true;
    });
    await fake('script', [{ status: 400, message: 'max_tokens: too large for this model' }]);
    await assert.rejects(anthropic.messages.create(base, ctx(id)), (e) => {
      assert.ok(e instanceof Anthropic.BadRequestError, String(e));
      seen.bad = { status: e.status, type: e.error.error.type, message: e.error.error.message };
      return true;
    });
    // ctxd's own refusals too: an unknown context, a malformed request.
    await assert.rejects(anthropic.messages.create(base, ctx('00000000-0000-4000-8000-000000000000')),
      (e) => { assert.ok(e instanceof Anthropic.NotFoundError, String(e)); seen.unknown = e.error.error.type; return true; });
    await assert.rejects(anthropic.messages.create({ ...base, messages: [{ role: 'user', content: [{ type: 'image' }] }] }, ctx(id)),
      (e) => { assert.ok(e instanceof Anthropic.BadRequestError, String(e)); seen.malformed = e.error.error.message; return true; });
    return { id, seen };
  },

  // A client that sends the whole history every time, as most code does.
  async anthropic_full_history() {
    const base = { model: 'claude-test', max_tokens: 200 };
    const messages = [{ role: 'user', content: 'first question' }];
    const { id, msg } = await anthropicFirst({ ...base, messages });
    messages.push({ role: 'assistant', content: msg.content });
    for (const q of ['second question', 'third question']) {
      messages.push({ role: 'user', content: q });
      const m = await anthropic.messages.create({ ...base, messages }, ctx(id));
      messages.push({ role: 'assistant', content: m.content });
    }
    return { id, texts: messages.filter((m) => m.role === 'assistant').map((m) => m.content[0].text) };
  },

  // The beta namespace: ?beta=true and anthropic-beta, which ctxd sends on.
  async anthropic_beta() {
    const { data, response } = await anthropic.beta.messages.create({ model: 'claude-test',
      max_tokens: 50, betas: ['interleaved-thinking-2025-05-14'],
      messages: [{ role: 'user', content: 'beta question' }] }).withResponse();
    return { id: response.headers.get('ctxd-context-id'), text: data.content[0].text };
  },

  async anthropic_models() {
    const page = await anthropic.models.list();
    const one = await anthropic.models.retrieve(page.data[0].id);
    assert.equal(one.id, page.data[0].id);
    await assert.rejects(anthropic.models.retrieve('no-such-model'),
      (e) => e instanceof Anthropic.NotFoundError);
    return { ids: page.data.map((m) => m.id) };
  },

  async openai_three_turns() {
    const base = { model: 'gpt-test' };
    const sys = { role: 'system', content: 'be brief' };
    const { id, msg } = await openaiFirst({ ...base, messages: [sys, { role: 'user', content: 'first question' }] });
    assert.equal(msg.object, 'chat.completion');
    assert.match(msg.id, /^chatcmpl-[0-9A-Za-z]{24}$/);
    const texts = [msg.choices[0].message.content];
    for (const q of ['second question', 'third question']) {
      const c = await openai.chat.completions.create({ ...base, messages: [sys, { role: 'user', content: q }] }, ctx(id));
      assert.equal(c.choices[0].finish_reason, 'stop');
      assert.ok(c.usage.prompt_tokens > 0 && c.usage.completion_tokens > 0);
      texts.push(c.choices[0].message.content);
    }
    return { id, texts };
  },

  async openai_stream() {
    const base = { model: 'gpt-test' };
    const { id } = await openaiFirst({ ...base, messages: [{ role: 'user', content: 'first question' }] });
    const texts = [];
    // The stream helper, and a raw stream with include_usage.
    const helper = openai.chat.completions.stream({ ...base, messages: [{ role: 'user', content: 'second question' }] }, ctx(id));
    let streamed = '';
    helper.on('content', (d) => { streamed += d; });
    const final = await helper.finalChatCompletion();
    assert.equal(final.choices[0].message.content, streamed);
    assert.equal(final.choices[0].finish_reason, 'stop');
    texts.push(streamed);
    const raw = await openai.chat.completions.create({ ...base, stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'third question' }] }, ctx(id));
    let text = '', usage = null, finish = null;
    for await (const chunk of raw) {
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(finish, 'stop');
    assert.ok(usage && usage.completion_tokens > 0, JSON.stringify(usage));
    texts.push(text);
    return { id, texts };
  },

  async openai_tools() {
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
    await fake('script', [{ tool_use: { name: 'get_weather', input: { city: 'Paris' } } }, {},
                          { tool_use: { name: 'get_weather', input: { city: 'Rome' } } }, {}]);
    const base = { model: 'gpt-test', tools };
    const { id, msg } = await openaiFirst({ ...base, messages: [{ role: 'user', content: 'weather in Paris?' }] });
    assert.equal(msg.choices[0].finish_reason, 'tool_calls');
    const call = msg.choices[0].message.tool_calls[0];
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
    const done = await openai.chat.completions.create({ ...base, messages: [
      { role: 'tool', tool_call_id: call.id, content: '15 degrees' }] }, ctx(id));
    assert.equal(done.choices[0].finish_reason, 'stop');
    // Streamed through the helper: the call comes in delta.tool_calls.
    const s = openai.chat.completions.stream({ ...base, messages: [{ role: 'user', content: 'and Rome?' }] }, ctx(id));
    const streamed = await s.finalChatCompletion();
    assert.equal(streamed.choices[0].finish_reason, 'tool_calls');
    const call2 = streamed.choices[0].message.tool_calls[0];
    assert.deepEqual(JSON.parse(call2.function.arguments), { city: 'Rome' });
    const end = await openai.chat.completions.create({ ...base, messages: [
      { role: 'tool', tool_call_id: call2.id, content: '18 degrees' }] }, ctx(id));
    assert.equal(end.choices[0].finish_reason, 'stop');
    return { id, call_ids: [call.id, call2.id], texts: [done.choices[0].message.content, end.choices[0].message.content] };
  },

  async openai_errors() {
    const base = { model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] };
    const { id } = await openaiFirst(base);
    const seen = {};
    await fake('script', [{ status: 429, headers: { 'retry-after': '7' } }]);
    await assert.rejects(openai.chat.completions.create(base, ctx(id)), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, String(e));
      seen.rate = { status: e.status, code: e.code, retry: e.headers.get('retry-after') };
      return true;
    });
    for (const status of [503, 529]) {
      await fake('script', [{ status }]);
      await assert.rejects(openai.chat.completions.create(base, ctx(id)), (e) => {
        assert.ok(e instanceof OpenAI.InternalServerError, String(e));
        seen['overloaded' + status] = { status: e.status, code: e.code };
        return true;
      });
    }
    await fake('script', [{ status: 400, message: 'Invalid value for temperature' }]);
    await assert.rejects(openai.chat.completions.create(base, ctx(id)), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      seen.bad = { status: e.status, code: e.code, message: e.message };
      return true;
    });
    await assert.rejects(openai.chat.completions.create(base, ctx('00000000-0000-4000-8000-000000000000')),
      (e) => { assert.ok(e instanceof OpenAI.NotFoundError, String(e)); seen.unknown = e.code; return true; });
    return { id, seen };
  },

  async openai_models() {
    const page = await openai.models.list();
    const one = await openai.models.retrieve(page.data[0].id);
    assert.equal(one.id, page.data[0].id);
    await assert.rejects(openai.models.retrieve('no-such-model'),
      (e) => e instanceof OpenAI.NotFoundError);
    return { ids: page.data.map((m) => m.id) };
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; one of: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
console.log(JSON.stringify(await scenarios[name]()));
