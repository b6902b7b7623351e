// The page's side of the demo: every button calls the wasm `Demo`, which is
// the real litebus Bus. The memory-only build loads first; the turso build
// (larger) is fetched only when the page switches to it.
const builds = {
  memory: "./pkg/litebus_web_demo.js",
  turso: "./pkg-turso/litebus_web_demo.js",
};
const loaded = {};

async function load(storage) {
  const path = storage === "turso" ? builds.turso : builds.memory;
  if (!loaded[path]) {
    const module = await import(path);
    await module.default();
    loaded[path] = module;
  }
  return loaded[path];
}

const $ = (id) => document.getElementById(id);
let demo = null;
let wasm = null;
let seconds = 0;
let counter = 0;
const benchResults = {};

function log(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("log").prepend(li);
}

async function open(storage) {
  $("status").textContent = `opening ${storage}…`;
  wasm = await load(storage);
  demo = await wasm.Demo.open(storage);
  seconds = 0;
  $("live").innerHTML = "";
  $("dead").innerHTML = "";
  $("log").innerHTML = "";
  $("status").textContent = `running on ${demo.storage}`;
  document.body.dataset.storage = demo.storage;
  buildConsumers();
  await refresh();
}

function buildConsumers() {
  const names = wasm.Demo.consumers();
  $("consumers").innerHTML = "";
  names.forEach((name, i) => {
    const card = document.createElement("div");
    card.className = "card";
    card.id = `consumer-${i}`;
    card.innerHTML = `<h3>${name}</h3>
      <button class="receive">Receive</button>
      <ul class="held"></ul>
      <small class="note"></small>`;
    card.querySelector(".receive").onclick = () => receive(i);
    $("consumers").append(card);
  });
}

async function receive(i) {
  const d = await demo.receive(i);
  const note = $(`consumer-${i}`).querySelector(".note");
  if (d) {
    log(`${d.group}/${d.consumer} received seq ${d.seq} (attempt ${d.attempt}): ${d.payload}`);
    note.textContent = "";
  } else {
    note.textContent = "nothing for this consumer now";
  }
  await refresh();
  document.body.dataset.receives = Number(document.body.dataset.receives ?? 0) + 1;
}

async function settle(i, seq, ok) {
  await demo.settle(i, seq, ok);
  log(`${wasm.Demo.consumers()[i]} ${ok ? "acked" : "nacked"} seq ${seq}`);
  await refresh();
}

async function refresh() {
  const held = demo.held();
  held.forEach((list, i) => {
    const ul = $(`consumer-${i}`).querySelector(".held");
    ul.innerHTML = "";
    for (const d of list) {
      const li = document.createElement("li");
      li.className = "msg" + (d.expired ? " expired" : "");
      li.dataset.seq = d.seq;
      li.dataset.attempt = d.attempt;
      li.innerHTML = `seq ${d.seq} · attempt <b>${d.attempt}</b> · ${d.payload}
        ${d.expired ? "(lease ran out)" : ""}
        <button class="ack">ack</button> <button class="nack">nack</button>`;
      li.querySelector(".ack").onclick = () => settle(i, d.seq, true);
      li.querySelector(".nack").onclick = () => settle(i, d.seq, false);
      ul.append(li);
    }
  });
  const stats = await demo.stats();
  $("stats").innerHTML =
    "<tr><th>group</th><th>ready</th><th>in flight</th><th>dead</th></tr>" +
    stats
      .map(
        (g) =>
          `<tr data-group="${g.group}"><td>${g.group}</td><td>${g.ready}</td><td>${g.in_flight}</td><td>${g.dead_lettered}</td></tr>`,
      )
      .join("");
  for (const line of demo.live()) {
    const li = document.createElement("li");
    li.textContent = line;
    $("live").append(li);
  }
  const dead = await demo.dead_letters();
  $("dead").innerHTML = dead.map((d) => `<li>${d}</li>`).join("");
  $("clock").textContent = `bus clock: +${seconds} s`;
}

async function publish(n) {
  for (let k = 0; k < n; k++) {
    counter += 1;
    const text = `${$("text").value} #${counter}`;
    const seq = await demo.publish(text);
    log(`published seq ${seq}: ${text}`);
  }
  await refresh();
}

$("publish").onclick = () => publish(1);
$("publish5").onclick = () => publish(5);
$("advance").onclick = async () => {
  demo.advance(6);
  seconds += 6;
  log("the clock moved 6 s: leases taken before have run out");
  await refresh();
};
$("storage").onchange = () => open($("storage").value);
$("bench").onclick = async () => {
  const storage = demo.storage;
  $("benchResult").textContent = "running…";
  const r = await wasm.bench(storage, 100000);
  benchResults[storage] =
    `${storage}: published ${r.n.toLocaleString("en")} at ${r.publish.toLocaleString("en")} msgs/s, ` +
    `consumed and acked at ${r.consume.toLocaleString("en")} msgs/s`;
  $("benchResult").innerHTML = Object.values(benchResults).join("<br>");
  document.body.dataset.bench = JSON.stringify({ storage, ...r });
};

open("memory").catch((e) => {
  $("status").textContent = `failed: ${e}`;
  throw e;
});
