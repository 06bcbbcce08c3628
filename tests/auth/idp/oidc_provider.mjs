// Test IdP: npm oidc-provider on 127.0.0.1, random port. Started by tests/auth/conftest.py.
// argv[2]: JSON {"clients": [...], "ttl": seconds}. Prints {"ready": issuer} once listening, then one
// JSON line per token request: {"token": {"t": ms, "status": n, "auth": "basic"|"post"|"none", "grant": ..., "client_id": ...}}.
import http from "node:http";
import Provider from "oidc-provider";

const opts = JSON.parse(process.argv[2] ?? "{}");
const ttl = opts.ttl ?? 300;

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: opts.clients ?? [],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
    },
    scopes: ["openid", "offline_access", "api:read"],
    ttl: { ClientCredentials: ttl, AccessToken: ttl },
  });
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === "POST" && ctx.path === "/token") {
      const body = ctx.oidc?.params ?? {};
      const auth = ctx.get("authorization").startsWith("Basic ") ? "basic" : body.client_secret ? "post" : "none";
      const basic = ctx.get("authorization").startsWith("Basic ")
        ? decodeURIComponent(Buffer.from(ctx.get("authorization").slice(6), "base64").toString().split(":")[0].replace(/\+/g, " "))
        : null;
      const client_id = ctx.oidc?.client?.clientId ?? basic ?? body.client_id ?? null;
      process.stdout.write(JSON.stringify({ token: { t: Date.now(), status: ctx.status, auth, grant: body.grant_type ?? null, client_id } }) + "\n");
    }
  });
  server.on("request", provider.callback());
  process.stdout.write(JSON.stringify({ ready: issuer }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
