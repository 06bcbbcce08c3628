// Test IdP: oauth2-mock-server@8 on 127.0.0.1, random port. Started by tests/auth/conftest.py.
// argv[2]: JSON {"script": [step, ...], "ttl": seconds}. Each token request consumes the next step
// (after the script runs out, requests succeed):
//   {"status": 429, "retry_after": "2"}   -> 429 with that Retry-After header and an OAuth error body
//   {"status": 503}                       -> 503 with a JSON error body
//   {"status": 200}                       -> the normal token response
// Prints {"ready": issuer} once listening, then one line per token request:
//   {"token": {"t": ms, "status": n, "grant": ..., "username": ..., "client_id": ..., "basic": bool}}
import { OAuth2Server } from "oauth2-mock-server";

const opts = JSON.parse(process.argv[2] ?? "{}");
const script = opts.script ?? [];
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");

server.service.on("beforeTokenSigning", (token) => {
  if (opts.ttl !== undefined) token.payload.exp = token.payload.iat + opts.ttl;
});
server.service.on("beforeResponse", (response, req) => {
  const step = script.shift() ?? { status: 200 };
  if (step.status === 429) {
    req.res.set("Retry-After", String(step.retry_after ?? "1"));
    response.statusCode = 429;
    response.body = { error: "temporarily_unavailable", error_description: "slow down" };
  } else if (step.status !== 200) {
    response.statusCode = step.status;
    response.body = { error: "server_error" };
  } else if (opts.omit_expires_in) {
    delete response.body.expires_in;
  }
  const body = req.body ?? {};
  const basic = (req.headers.authorization ?? "").startsWith("Basic ");
  process.stdout.write(JSON.stringify({ token: {
    t: Date.now(), status: response.statusCode, grant: body.grant_type ?? null,
    username: body.username ?? null, client_id: body.client_id ?? null, basic,
    password_ok: body.password === opts.expect_password,
  } }) + "\n");
});
await server.start(0, "127.0.0.1");
process.stdout.write(JSON.stringify({ ready: server.issuer.url }) + "\n");
process.on("SIGTERM", () => server.stop().then(() => process.exit(0)));
