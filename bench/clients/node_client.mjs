// The official client as a benchmark peer: @microsoft/signalr (+ msgpack protocol) on Node.
// node bench/clients/node_client.mjs URL COUNT PROTOCOL OUT
// The handler writes one JSON line per message ({"target", "arguments"}) to OUT through a WriteStream.
// Measurement window: first ReceiveCarPatches handled -> last line flushed ('finish'); CPU from
// process.cpuUsage() (rusage of the whole process, all threads), as the Python clients do.
import fs from "node:fs";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const [url, countArg, protocol, out, rateArg] = process.argv.slice(2);
const count = Number(countArg);
const rate = Number(rateArg || 0);
const builder = new signalR.HubConnectionBuilder()
  .withUrl(url, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets })
  .configureLogging(signalR.LogLevel.Error);
if (protocol === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
const connection = builder.build();
const stream = fs.createWriteStream(out, { flags: "w", highWaterMark: 1 << 16 });

let n = 0;
let t0 = 0n;
let cpu0 = null;
let first = 0;
const latencies = [];
connection.on("ReceiveCarPatches", (patches, meta) => {
  if (cpu0 === null) {
    t0 = process.hrtime.bigint();
    cpu0 = process.cpuUsage();
    first = n;
  }
  stream.write(JSON.stringify({ target: "ReceiveCarPatches", arguments: meta ? [patches, meta] : [patches] }) + "\n");
  if (meta && meta.sentAtNs !== undefined) {
    // written to the stream's buffer: the same point the daemon's sink measures
    latencies.push(performance.timeOrigin + performance.now() - Number(BigInt(meta.sentAtNs) / 1000n) / 1000);
  }
  n += 1;
  if (n === count) {
    stream.end(() => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      const messages = n - first;
      const result = {
        messages,
        seconds,
        cpu_seconds: cpuSeconds,
        msgs_per_s: messages / seconds,
        cpu_s_per_100k: (cpuSeconds / messages) * 100000,
        max_rss_kib: process.resourceUsage().maxRSS,
      };
      if (latencies.length) result.latencies_ms = latencies;
      const line = JSON.stringify(result) + "\n";
      if (process.env.BENCH_RESULT) {
        fs.appendFileSync(process.env.BENCH_RESULT, line);
        process.exit(0);
      } else {
        process.stdout.write(line, () => process.exit(0));
      }
    });
  }
});

await connection.start();
await connection.send("BenchStream", count, rate, false);
