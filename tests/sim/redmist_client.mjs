// Acceptance driver: Microsoft's official @microsoft/signalr client against the simulator's RedMist hub.
// Usage: node redmist_client.mjs '<json config>'
//   {"hubUrl", "tokenUrl", "clientId", "clientSecret", "protocol": "json"|"messagepack",
//    "skipNegotiation": bool, "eventId": n, "carBatches": n, "sessionPatches": n,
//    "privateEventId": n|null, "accessCode": "..."}
// Prints one JSON object per line: {"event": "token"}, {"event": "ReceiveCarPatches", "args": [...]},
// {"event": "ReceiveSessionPatch", "args": [...]}, {"event": "private", ...}, {"event": "done"}.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const cfg = JSON.parse(process.argv[2]);
const emit = (o) =>
  process.stdout.write(JSON.stringify(o, (_k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n");

let tokenFetches = 0;
async function fetchToken() {
  const basic = Buffer.from(`${cfg.clientId}:${cfg.clientSecret}`).toString("base64");
  const resp = await fetch(cfg.tokenUrl, {
    method: "POST",
    headers: { Authorization: `Basic ${basic}`, "Content-Type": "application/x-www-form-urlencoded" },
    body: "grant_type=client_credentials",
  });
  if (!resp.ok) throw new Error(`token endpoint answered ${resp.status}`);
  tokenFetches += 1;
  emit({ event: "token", status: resp.status, fetches: tokenFetches });
  return (await resp.json()).access_token;
}

const options = { accessTokenFactory: fetchToken };
if (cfg.skipNegotiation) {
  options.skipNegotiation = true;
  options.transport = signalR.HttpTransportType.WebSockets;
}
let builder = new signalR.HubConnectionBuilder().withUrl(cfg.hubUrl, options).configureLogging(signalR.LogLevel.None);
if (cfg.protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
const connection = builder.build();

let cars = 0;
let sessions = 0;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
const check = () => {
  if (cars >= cfg.carBatches && sessions >= cfg.sessionPatches) finish();
};
connection.on("ReceiveCarPatches", (...args) => {
  if (cars < cfg.carBatches) emit({ event: "ReceiveCarPatches", args });
  cars += 1;
  check();
});
connection.on("ReceiveSessionPatch", (...args) => {
  if (sessions < cfg.sessionPatches) emit({ event: "ReceiveSessionPatch", args });
  sessions += 1;
  check();
});

const timer = setTimeout(() => {
  emit({ event: "timeout", cars, sessions });
  process.exit(3);
}, cfg.timeoutMs || 20000);

try {
  await connection.start();
  emit({ event: "connected", connectionId: connection.connectionId });
  if (cfg.privateEventId !== undefined && cfg.privateEventId !== null) {
    for (const code of [null, "wrong", cfg.accessCode]) {
      try {
        await connection.invoke("SubscribeToEventV2WithCode", cfg.privateEventId, code);
        emit({ event: "private", code, ok: true });
      } catch (e) {
        emit({ event: "private", code, ok: false, error: e.message });
      }
    }
    try {
      await connection.invoke("SubscribeToEventV2WithCode", cfg.eventId);
      emit({ event: "short", ok: true });
    } catch (e) {
      emit({ event: "short", ok: false, error: e.message });
    }
  }
  await connection.invoke("SubscribeToEventV2", cfg.eventId);
  emit({ event: "subscribed", eventId: cfg.eventId });
  await finished;
  await connection.stop();
  emit({ event: "done" });
  clearTimeout(timer);
} catch (e) {
  emit({ event: "error", error: String(e && e.message ? e.message : e) });
  process.exit(2);
}
