// A thin Playwright driver for the page tests: Debian's chromium via playwright-core, driven by the
// Python test over stdin/stdout JSON lines ({id, cmd, ...} -> {id, ok, result | error}). The
// assertions live in the Python test; this only does what it is told.
import { chromium } from "playwright-core";
import readline from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let context = null;
let page = null;
const consoleErrors = [];

// The test sends function source text; Playwright treats a plain string as an expression, so turn it
// back into a function (which Playwright serialises and calls with `arg` in the page).
const fnOf = (source) => new Function(`return (${source});`)();

const commands = {
  async open({ url, width, height }) {
    if (context) await context.close();
    context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    await page.goto(url);
    return true;
  },
  async wait({ fn, arg, ms }) {
    const handle = await page.waitForFunction(fnOf(fn), arg ?? null, { timeout: ms, polling: 50 });
    return (await handle.jsonValue()) ?? null;
  },
  async eval({ fn, arg }) { return await page.evaluate(fnOf(fn), arg ?? null); },
  async fill({ selector, value }) { await page.fill(selector, value); return true; },
  async check({ selector, value }) { await page.setChecked(selector, value); return true; },
  async select({ selector, value }) { await page.selectOption(selector, value); return true; },
  async screenshot({ path, fullPage }) { await page.screenshot({ path, fullPage: !!fullPage }); return path; },
  async errors() { return consoleErrors.filter((e) => !/ERR_CONNECTION_REFUSED|EventSource|Failed to load/.test(e)); },
};

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line);
  if (msg.cmd === "quit") break;
  try {
    const result = await commands[msg.cmd](msg);
    process.stdout.write(JSON.stringify({ id: msg.id, ok: true, result: result ?? null }) + "\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ id: msg.id, ok: false, error: String(err && err.message || err) }) + "\n");
  }
}
await browser.close();
