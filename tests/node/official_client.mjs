// Scenario driver for Microsoft's official SignalR client (@microsoft/signalr), driven from pytest.
//
// Protocol: one JSON command per stdin line, one JSON observation per stdout line.
//   {"id": 1, "op": "start", "url": ..., "protocol": "json"|"messagepack", "skipNegotiation": bool,
//    "token": "..." (accessTokenFactory), "automaticReconnect": [ms, ...], "statefulReconnect": bool,
//    "serverTimeoutMs": n, "keepAliveMs": n, "listen": ["Method", ...], "results": {"Method": value}}
//   {"id": 2, "op": "invoke", "method": "Add", "args": [1, 2]}         -> {"id": 2, "ok": true, "result": 3}
//   {"id": 3, "op": "send", "method": "Log", "args": []}               -> {"id": 3, "ok": true}
//   {"id": 4, "op": "stream", "method": "Count", "args": [100], "take": 3}
//        -> {"event": "item", "stream": 4, "item": ...} x take, then {"id": 4, "ok": true, "items": [...]}
//           (after `take` items the subscription is disposed, which sends CancelInvocation)
//   {"id": 5, "op": "state"}                                           -> {"id": 5, "ok": true, "state": ...}
//   {"id": 6, "op": "stop"}
// Events: {"event": "message", "method": m, "args": [...]}, {"event": "reconnecting", "error": ...},
//         {"event": "reconnected", "connectionId": ...}, {"event": "closed", "error": ...}
// Failures: {"id": n, "ok": false, "error": "<message of the rejected promise>"}
import * as readline from "node:readline";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

let connection = null;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, (_k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n");
}

function errorText(e) {
  return e && e.message !== undefined ? e.message : String(e);
}

async function start(cmd) {
  const options = {};
  if (cmd.skipNegotiation) {
    options.skipNegotiation = true;
    options.transport = signalR.HttpTransportType.WebSockets;
  }
  if (cmd.token !== undefined) {
    options.accessTokenFactory = () => cmd.token;
  }
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(cmd.url, options)
    .configureLogging(cmd.logLevel !== undefined ? cmd.logLevel : signalR.LogLevel.None);
  if (cmd.protocol === "messagepack") {
    builder = builder.withHubProtocol(new MessagePackHubProtocol());
  }
  if (cmd.automaticReconnect) {
    builder = builder.withAutomaticReconnect(cmd.automaticReconnect);
  }
  if (cmd.statefulReconnect) {
    builder = builder.withStatefulReconnect();
  }
  if (cmd.serverTimeoutMs !== undefined) {
    builder = builder.withServerTimeout(cmd.serverTimeoutMs);
  }
  if (cmd.keepAliveMs !== undefined) {
    builder = builder.withKeepAliveInterval(cmd.keepAliveMs);
  }
  connection = builder.build();
  for (const method of cmd.listen || []) {
    connection.on(method, (...args) => emit({ event: "message", method, args }));
  }
  for (const [method, value] of Object.entries(cmd.results || {})) {
    connection.on(method, (...args) => {
      emit({ event: "client_result", method, args });
      return value;
    });
  }
  connection.onreconnecting((e) => emit({ event: "reconnecting", error: e ? errorText(e) : null }));
  connection.onreconnected((id) => emit({ event: "reconnected", connectionId: id }));
  connection.onclose((e) => emit({ event: "closed", error: e ? errorText(e) : null }));
  await connection.start();
  return { connectionId: connection.connectionId };
}

async function stream(cmd) {
  const items = [];
  const take = cmd.take === undefined ? Infinity : cmd.take;
  await new Promise((resolve, reject) => {
    const subscription = connection.stream(cmd.method, ...(cmd.args || [])).subscribe({
      next: (item) => {
        items.push(item);
        emit({ event: "item", stream: cmd.id, item });
        if (items.length >= take) {
          subscription.dispose();
          resolve();
        }
      },
      complete: () => resolve(),
      error: (e) => reject(e),
    });
  });
  return { items };
}

async function handle(cmd) {
  try {
    let extra = {};
    switch (cmd.op) {
      case "start":
        extra = await start(cmd);
        break;
      case "invoke":
        extra = { result: await connection.invoke(cmd.method, ...(cmd.args || [])) };
        break;
      case "send":
        await connection.send(cmd.method, ...(cmd.args || []));
        break;
      case "stream":
        extra = await stream(cmd);
        break;
      case "state":
        extra = { state: connection.state, connectionId: connection.connectionId };
        break;
      case "stop":
        await connection.stop();
        break;
      default:
        throw new Error(`unknown op ${cmd.op}`);
    }
    emit({ id: cmd.id, ok: true, ...extra });
  } catch (e) {
    emit({ id: cmd.id, ok: false, error: errorText(e) });
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim()) {
    handle(JSON.parse(line));
  }
});
lines.on("close", async () => {
  if (connection) {
    await connection.stop().catch(() => {});
  }
  process.exit(0);
});
