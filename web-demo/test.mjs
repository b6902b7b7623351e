// The web demo in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): publish, both groups receive everything, a nack and a
// lease running out redeliver with attempt 2, three attempts make a dead
// letter, the live listener hears every publish; then the same on turso,
// and the 100,000-message button on both. Any console error fails the run.
// Screenshots go to target/web-demo/.
//   node web-demo/test.mjs        (after web-demo/build.sh)
import { chromium } from "playwright-core";
import { mkdir } from "node:fs/promises";
import assert from "node:assert/strict";
import { serve } from "./serve.mjs";

const out = new URL("../target/web-demo/", import.meta.url).pathname;
await mkdir(out, { recursive: true });
const server = await serve(0);
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
  ],
});
const problems = [];
const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

const held = (i) =>
  page.$$eval(`#consumer-${i} li.msg`, (lis) =>
    lis.map((li) => ({ seq: Number(li.dataset.seq), attempt: Number(li.dataset.attempt) })));
const receives = () => page.evaluate(() => Number(document.body.dataset.receives ?? 0));
const receive = async (i) => {
  const before = await held(i);
  const count = await receives();
  await page.click(`#consumer-${i} .receive`);
  await page.waitForFunction((n) => Number(document.body.dataset.receives ?? 0) > n, count);
  const after = await held(i);
  return after.find((d) => !before.some((b) => b.seq === d.seq && b.attempt === d.attempt)) ?? null;
};
const settle = async (i, seq, button) => {
  await page.click(`#consumer-${i} li.msg[data-seq="${seq}"] .${button}`);
  await page.waitForSelector(`#consumer-${i} li.msg[data-seq="${seq}"]`, { state: "detached" });
};
const statsOf = (group) =>
  page.$eval(`#stats tr[data-group="${group}"]`, (tr) =>
    [...tr.children].slice(1).map((td) => Number(td.textContent)));

async function scenario(storage) {
  await page.waitForFunction((s) => document.body.dataset.storage === s, storage);
  // Five messages: billing's A and B share them, shipping's C gets all.
  await page.click("#publish5");
  await page.waitForFunction(() => document.querySelectorAll("#live li").length >= 5);
  const takers = [0, 1, 0, 1, 0];
  const billing = [];
  for (const i of takers) billing.push((await receive(i)).seq);
  assert.equal(await receive(0), null, "billing has nothing more");
  const shipping = [];
  for (let k = 0; k < 5; k++) shipping.push((await receive(2)).seq);
  assert.deepEqual([...billing].sort(), [1, 2, 3, 4, 5], "billing got each once");
  assert.deepEqual(shipping, [1, 2, 3, 4, 5], "shipping got all in order");
  for (let k = 0; k < 5; k++) await settle(takers[k], billing[k], "ack");
  for (const seq of shipping) await settle(2, seq, "ack");
  assert.deepEqual(await statsOf("billing"), [0, 0, 0]);
  assert.deepEqual(await statsOf("shipping"), [0, 0, 0]);

  // A nack brings the message back with attempt 2.
  await page.click("#publish");
  const first = await receive(2);
  assert.deepEqual([first.seq, first.attempt], [6, 1]);
  await settle(2, 6, "nack");
  const again = await receive(2);
  assert.deepEqual([again.seq, again.attempt], [6, 2], "nack redelivers with attempt 2");

  // A lease that runs out: A holds seq 6, time moves, B gets it (attempt 2).
  const taken = await receive(0);
  assert.deepEqual([taken.seq, taken.attempt], [6, 1]);
  await page.click("#advance");
  await page.waitForSelector("#consumer-0 li.expired");
  const redelivered = await receive(1);
  assert.deepEqual([redelivered.seq, redelivered.attempt], [6, 2], "lease expiry redelivers");
  await settle(1, 6, "ack");

  // Shipping's copy: the clock moved, so C's lease ran out too; take it a
  // third time and nack it: three attempts make a dead letter.
  const third = await receive(2);
  assert.deepEqual([third.seq, third.attempt], [6, 3]);
  await settle(2, 6, "nack");
  await page.waitForSelector("#dead li");
  const dead = await page.$$eval("#dead li", (lis) => lis.map((li) => li.textContent));
  assert.equal(dead.length, 1);
  assert.match(dead[0], /seq 6/);
  assert.deepEqual(await statsOf("shipping"), [0, 0, 1]);
  const live = await page.$$eval("#live li", (lis) => lis.length);
  assert.equal(live, 6, "the listener heard every publish");
  await page.screenshot({ path: `${out}${storage}.png`, fullPage: true });

  // Speed: 100,000 messages through the bus in the page.
  await page.click("#bench");
  await page.waitForFunction(() => document.body.dataset.bench, null, { timeout: 300_000 });
  const bench = JSON.parse(await page.evaluate(() => document.body.dataset.bench));
  assert.equal(bench.n, 100000);
  console.log(`${storage}: publish ${bench.publish} msgs/s, consume+ack ${bench.consume} msgs/s`);
  await page.evaluate(() => delete document.body.dataset.bench);
}

try {
  await page.goto(url);
  await scenario("memory");
  await page.selectOption("#storage", "turso");
  await scenario("turso");
  assert.deepEqual(problems, [], "no console errors");
  console.log(`web demo: every step passed in Chromium; screenshots in ${out}`);
} catch (e) {
  await page.screenshot({ path: `${out}failure.png`, fullPage: true }).catch(() => {});
  console.error(problems.join("\n"));
  throw e;
} finally {
  await browser.close();
  server.close();
}
