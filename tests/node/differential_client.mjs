// Differential oracle: Microsoft's official @microsoft/signalr client records what its handlers receive.
//
// usage: node differential_client.mjs <hubUrl> <json|messagepack> <group> <Method,Method,...>
// Prints one JSON line per observation on stdout:
//   {"ready": true}                         after start() and invoke("JoinGroup", group)
//   {"method": "<name>", "args": [...]}     for every invocation of a listed method, in arrival order
//   {"done": true}                          when the "Done" method arrives (then the client stops)
// bigint values (MessagePack int64) are printed as numbers; the differential payloads stay within
// ±2^53 so that nothing is lost.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const [url, protocol, group, methodList] = process.argv.slice(2);

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, (_k, v) => (typeof v === "bigint" ? Number(v) : v)) + "\n");
}

let builder = new signalR.HubConnectionBuilder().withUrl(url).configureLogging(signalR.LogLevel.None);
if (protocol === "messagepack") {
  builder = builder.withHubProtocol(new MessagePackHubProtocol());
}
const connection = builder.build();
for (const method of methodList.split(",")) {
  connection.on(method, (...args) => emit({ method, args }));
}
connection.on("Done", async () => {
  emit({ done: true });
  await connection.stop(); // no process.exit(): it could cut off stdout still being flushed to the pipe
});
connection.onclose((error) => {
  if (error) {
    emit({ error: String(error) });
    process.exitCode = 1;
  }
});

try {
  await connection.start();
  await connection.invoke("JoinGroup", group);
  emit({ ready: true });
} catch (e) {
  emit({ error: String(e) });
  process.exitCode = 1;
  await connection.stop();
}
