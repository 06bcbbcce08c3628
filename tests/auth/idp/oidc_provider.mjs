// Test IdP: npm oidc-provider on 127.0.0.1, random port. Started by tests/auth/conftest.py.
// argv[2]: JSON {"clients": [...], "ttl": seconds}. Prints {"ready": issuer} once listening, then one
// JSON line per token request: {"token": {"t": ms, "status": n, "auth": "basic"|"post"|"none", "grant": ..., "client_id": ...}}.
import http from "node:http";
import Provider, { errors } from "oidc-provider";

// oidc-provider 9 has no RFC 8693 token exchange grant. This registers one through its public
// registerGrantType API (client authentication, parameter parsing and token storage are the library's):
// the subject must be a valid client_credentials token this provider issued to the same client; the
// answer is a new client_credentials-format token (opaque tokens carry no subject, so
// requested_subject is only logged). Enough to test a client's wire format against a real server.
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";

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
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    async (ctx) => {
      const { subject_token, subject_token_type, requested_subject } = ctx.oidc.params;
      if (subject_token_type !== "urn:ietf:params:oauth:token-type:access_token") {
        throw new errors.InvalidRequest("unsupported subject_token_type");
      }
      const subject = await provider.ClientCredentials.find(subject_token);
      ctx.oidc.exchange = { subject_valid: !!subject, requested_subject: requested_subject ?? null };
      if (!subject || subject.clientId !== ctx.oidc.client.clientId) {
        throw new errors.InvalidGrant("subject token invalid, expired or not this client's");
      }
      const token = new provider.ClientCredentials({ client: ctx.oidc.client, scope: subject.scope });
      const value = await token.save();
      ctx.body = {
        access_token: value,
        issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
        token_type: "Bearer",
        expires_in: token.expiration,
      };
    },
    ["subject_token", "subject_token_type", "requested_subject"],
  );
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === "POST" && ctx.path === "/token") {
      const body = ctx.oidc?.params ?? {};
      const auth = ctx.get("authorization").startsWith("Basic ") ? "basic" : body.client_secret ? "post" : "none";
      const basic = ctx.get("authorization").startsWith("Basic ")
        ? decodeURIComponent(Buffer.from(ctx.get("authorization").slice(6), "base64").toString().split(":")[0].replace(/\+/g, " "))
        : null;
      const client_id = ctx.oidc?.client?.clientId ?? basic ?? body.client_id ?? null;
      const exchange = ctx.oidc?.exchange ?? null;
      process.stdout.write(JSON.stringify({ token: { t: Date.now(), status: ctx.status, auth, grant: body.grant_type ?? null, client_id, exchange } }) + "\n");
    }
  });
  server.on("request", provider.callback());
  process.stdout.write(JSON.stringify({ ready: issuer }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
