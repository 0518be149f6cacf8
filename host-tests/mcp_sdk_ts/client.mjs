// The official MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned in package.json) as a client through the
// gateway: what it surfaces to its caller for an allowed call, a deny, a step-up, an invalid argument and a missing
// token (error class, code, message, data), and its OAuth discovery (an auth provider that stops at the redirect to
// the browser). Prints one JSON object; host-tests/tests/it/mcp_sdk_ts.rs asserts on it.
//
//   node client.mjs URL TOKEN
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);

function surfaced(e) {
  return { class: e?.constructor?.name, code: e?.code, message: String(e?.message ?? e), data: e?.data ?? null };
}

async function connected(options) {
  const client = new Client({ name: "warden-test", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), options));
  return client;
}

const out = { calls: {} };

const client = await connected({ requestInit: { headers: { authorization: `Bearer ${token}` } } });
out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
const lookup = await client.callTool({ name: "lookup", arguments: { order: "o-1" } });
out.lookup = lookup.content?.[0]?.text ?? null;
for (const [what, name, args] of [
  ["deny", "wipe", {}],
  ["step_up", "refund", { order: "o-1", amount: 250 }],
  ["invalid_argument", "refund", { order: "o-1" }],
]) {
  try {
    const r = await client.callTool({ name, arguments: args });
    out.calls[what] = { result: r };
  } catch (e) {
    out.calls[what] = surfaced(e);
  }
}
await client.close();

// No token, no auth provider: what an agent without OAuth sees.
try {
  await connected({});
  out.missing_token = { connected: true };
} catch (e) {
  out.missing_token = surfaced(e);
}

// No token, with an OAuth client provider: the SDK's discovery from the 401, stopped at the browser redirect.
const discovery = {};
const provider = {
  get redirectUrl() {
    return "http://127.0.0.1:9/callback";
  },
  get clientMetadata() {
    return { client_name: "warden-test", redirect_uris: ["http://127.0.0.1:9/callback"] };
  },
  clientInformation: () => discovery.client,
  saveClientInformation: (info) => {
    discovery.client = info;
  },
  tokens: () => undefined,
  saveTokens: () => {},
  saveCodeVerifier: () => {},
  codeVerifier: () => "unused",
  saveDiscoveryState: (state) => {
    discovery.state = state;
  },
  redirectToAuthorization: (authorizationUrl) => {
    discovery.authorize = authorizationUrl.href;
  },
};
try {
  await connected({ authProvider: provider });
  out.discovery = { connected: true };
} catch (e) {
  out.discovery = {
    error: surfaced(e),
    // The URL the transport read from the 401's WWW-Authenticate (resource_metadata), not a guessed well-known one.
    resource_metadata_url: discovery.state?.resourceMetadataUrl ?? null,
    resource_metadata: discovery.state?.resourceMetadata ?? null,
    authorization_server: discovery.state?.authorizationServerUrl ?? null,
    issuer: discovery.state?.authorizationServerMetadata?.issuer ?? null,
    client_id: discovery.client?.client_id ?? null,
    authorize: discovery.authorize ?? null,
  };
}

console.log(JSON.stringify(out));
