// The official client as a benchmark peer: @microsoft/signalr (+ msgpack protocol) on Node.
// node bench/clients/node_client.mjs URL COUNT PROTOCOL OUT [RATE]
// The handler writes one JSON line per message ({"target", "arguments"}) to OUT through a WriteStream;
// OUT "-": decode only (the handler counts; nothing is encoded or written; the window ends at the
// COUNTth message).
// Measurement window: first ReceiveCarPatches handled -> last line flushed ('finish'); CPU from
// process.cpuUsage() (rusage of the whole process, all threads), as the Python clients do.
// Latency mode (RATE > 0): the hub's second argument carries sentAtNs (epoch ns). Per message:
// `handled_latencies_ms` = the handler's line handed to the WriteStream, `latencies_ms` = the stream's
// write callback (the line's fs.write completed: in the file) - sentAtNs. Wall clock with µs:
// performance.timeOrigin + performance.now() (CLOCK_REALTIME at start + monotonic offset).
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
const decodeOnly = out === "-";
const stream = decodeOnly
  ? { write() {}, end(cb) { cb(); } }
  : fs.createWriteStream(out, { flags: "w", highWaterMark: 1 << 16 });

let n = 0;
let t0 = 0n;
let cpu0 = null;
let first = 0;
const handled = [];
const written = [];
const nowMs = () => performance.timeOrigin + performance.now();
connection.on("ReceiveCarPatches", (patches, meta) => {
  if (cpu0 === null) {
    t0 = process.hrtime.bigint();
    cpu0 = process.cpuUsage();
    first = n;
  }
  if (decodeOnly) {
    // nothing to encode or write
  } else if (meta && meta.sentAtNs !== undefined) {
    const line = JSON.stringify({ target: "ReceiveCarPatches", arguments: [patches, meta] }) + "\n";
    const sentMs = meta.sentAtNs / 1e6; // a double: sub-µs precision at this magnitude
    stream.write(line, () => written.push(nowMs() - sentMs));
    handled.push(nowMs() - sentMs);
  } else {
    stream.write(JSON.stringify({ target: "ReceiveCarPatches", arguments: meta ? [patches, meta] : [patches] }) + "\n");
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
      if (handled.length) {
        result.latencies_ms = written;
        result.handled_latencies_ms = handled;
      }
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

connection.on("BenchDone", () => {}); // bench/wirehub.py's end-of-stream sentinel

await connection.start();
await connection.send("BenchStream", count, rate, false);
