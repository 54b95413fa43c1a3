// mcp_client.mjs: drive ctxd's MCP endpoint with the official TypeScript SDK client over
// Streamable HTTP, its consecutive requests alternating between ctxd processes.
//   node mcp_client.mjs run    BASE1,BASE2[,...] [KEY]
//   node mcp_client.mjs resume BASE1,BASE2[,...] SESSION_ID [KEY]
// "run" initializes, lists and calls every tool, reads the resources and gets the prompt;
// "resume" continues a session started earlier (no initialize) and then ends it. Prints one
// JSON line of results for tests/e2e/test_mcp.py; exits non-zero on the first mismatch.
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ResourceListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const [mode, bases, third, fourth] = process.argv.slice(2);
const urls = bases.split(',');
const sessionId = mode === 'resume' ? third : undefined;
const key = mode === 'resume' ? fourth : third;

// Each request goes to the next process in turn: the session lives in Redis, not in one of them.
const seen = [];
let next = 0;
const alternating = (url, init) => {
  const target = new URL(url);
  const base = new URL(urls[next++ % urls.length]);
  target.host = base.host;
  seen.push({ method: init?.method ?? 'GET', port: Number(target.port) });
  return fetch(target, init);
};

const transport = new StreamableHTTPClientTransport(new URL(urls[0] + '/mcp'), {
  fetch: alternating,
  sessionId,
  requestInit: key ? { headers: { Authorization: `Bearer ${key}` } } : undefined,
});
const client = new Client({ name: 'ctxd-e2e', version: '1.0.0' });
// ctxd says the resource list changed on the answer's stream of the call that changed it.
let listChanged = 0;
client.setNotificationHandler(ResourceListChangedNotificationSchema, () => { listChanged++; });
await client.connect(transport);
const out = { seen };

const call = async (name, args) => {
  const r = await client.callTool({ name, arguments: args });
  if (r.isError) throw new Error(`${name} failed: ${r.content[0].text}`);
  assert.deepEqual(JSON.parse(r.content[0].text), r.structuredContent, `${name}: text = structured`);
  return r.structuredContent;
};

if (mode === 'run') {
  out.session_id = transport.sessionId;
  out.server = client.getServerVersion();
  out.protocol_version = client.getServerCapabilities() && transport.protocolVersion;
  assert.ok(out.session_id, 'no Mcp-Session-Id after initialize');
  assert.equal(out.server.name, 'ctxd');
  const caps = client.getServerCapabilities();
  assert.ok(caps.tools && caps.resources && caps.prompts, JSON.stringify(caps));
  await client.ping();

  const { tools } = await client.listTools();
  out.tools = Object.fromEntries(tools.map((t) => [t.name, t.annotations]));
  for (const t of tools) {
    assert.equal(t.inputSchema.type, 'object', t.name);
    assert.equal(t.outputSchema.type, 'object', t.name);
    assert.equal(typeof t.annotations.readOnlyHint, 'boolean', t.name);
  }

  // Every tool, in the order a conversation uses them.
  assert.equal(client.getServerCapabilities().resources.listChanged, true);
  const created = await call('create_context', { system: 'You are terse.', state: { trip: 'NYC' } });
  out.list_changed_after_create = listChanged;
  const id = created.context_id;
  out.context_id = id;
  out.add = await call('add_messages', { context_id: id, messages: [
    { role: 'user', content: 'Can you book me a flight to New York?' },
    { role: 'assistant', content: 'Sure, which day? ' + 'I can look at hotels too. '.repeat(8) }] });
  out.send = await call('send_message', { context_id: id, message: 'Next Tuesday, window seat.' });
  out.read = await call('read_messages', { context_id: id, limit: 3 });
  out.read_older = await call('read_messages', { context_id: id, limit: 3, before: out.read.next_before });
  out.get_state = await call('get_state', { context_id: id });
  out.set_state = await call('set_state', { context_id: id, state: { trip: 'NYC', seat: 'window' } });
  out.patch_state = await call('patch_state', { context_id: id, state: { trip: null, day: 'Tuesday' } });
  out.recall = await call('recall', { context_id: id, max_tokens: 64 });
  out.recall_all = await call('recall', { context_id: id });
  out.list = await call('list_contexts', { limit: 10 });
  const doomed = (await call('create_context', {})).context_id;
  const before = listChanged;
  out.deleted = await call('delete_context', { context_id: doomed });
  out.list_changed_by_delete = listChanged - before;
  out.deleted_id = doomed;

  // Tool errors are results with isError, never exceptions.
  const missing = await client.callTool({ name: 'get_state', arguments: { context_id: doomed } });
  assert.equal(missing.isError, true);
  out.missing_error = missing.content[0].text;
  const bad = await client.callTool({ name: 'send_message', arguments: { context_id: id } });
  assert.equal(bad.isError, true);
  out.bad_error = bad.content[0].text;
  // A protocol error (unknown tool) is a JSON-RPC error.
  await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), /-32602|Unknown tool/);

  // Resources: the list (paged), the templates, a context and its state.
  const { resources } = await client.listResources();
  out.resources = resources.map((r) => r.uri);
  const { resourceTemplates } = await client.listResourceTemplates();
  out.templates = resourceTemplates.map((t) => t.uriTemplate);
  const ctx = await client.readResource({ uri: `ctxd://contexts/${id}` });
  out.resource = JSON.parse(ctx.contents[0].text);
  const st = await client.readResource({ uri: `ctxd://contexts/${id}/state` });
  out.resource_state = JSON.parse(st.contents[0].text);
  await assert.rejects(client.readResource({ uri: `ctxd://contexts/${doomed}` }), /-32002|not found/i);

  // The prompt.
  const { prompts } = await client.listPrompts();
  out.prompts = prompts.map((p) => p.name);
  out.prompt = await client.getPrompt({ name: 'continue_conversation', arguments: { context_id: id } });
} else {
  // A session started by another run (and another process) goes on.
  await client.ping();
  out.read = await call('read_messages', { context_id: process.env.CTXD_CONTEXT_ID, limit: 2 });
  await transport.terminateSession();
  out.ended = transport.sessionId === undefined;
}
await client.close();
console.log(JSON.stringify(out));
