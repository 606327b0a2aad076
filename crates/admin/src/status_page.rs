//! The status page at `/`: listeners, pools and every backend with its
//! health, ejection, drain state, in-flight count and request rate,
//! refreshing itself every 2 s from `/api/v1/pools`. One self-contained
//! page (no external assets). The page holds no data, so it is served
//! without the token; its data calls send the token, which the operator
//! gives in the URL fragment (`/#token=...`: a fragment never reaches a
//! server or its logs) or in the prompt.

pub(crate) const HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ExpressGateway status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d232a; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  table { border-collapse: collapse; min-width: 40em; }
  th, td { text-align: left; padding: .25em .8em; border-bottom: 1px solid #dde2e7; }
  th { font-weight: 600; background: #f3f5f7; }
  .up { color: #19692c; font-weight: 600; }
  .down { color: #b3261e; font-weight: 600; }
  .muted { color: #68727d; }
  #error { color: #b3261e; }
</style>
</head>
<body>
<h1>ExpressGateway</h1>
<div class="muted">Refreshed every 2 s · <span id="updated">loading…</span></div>
<div id="error"></div>
<h2>Listeners</h2>
<table id="listeners"><thead><tr><th>Name</th><th>Protocol</th><th>Address</th></tr></thead><tbody></tbody></table>
<div id="pools"></div>
<script>
"use strict";
let token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
let last = { at: 0, picked: {} };
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}
function render(data) {
  const now = Date.now();
  const dt = last.at ? (now - last.at) / 1000 : 0;
  const lbody = document.querySelector("#listeners tbody");
  lbody.replaceChildren();
  for (const l of data.listeners || []) {
    const tr = document.createElement("tr");
    cell(tr, l.name); cell(tr, l.protocol); cell(tr, l.address);
    lbody.appendChild(tr);
  }
  const pools = document.getElementById("pools");
  pools.replaceChildren();
  const picked = {};
  for (const p of data.pools || []) {
    const h = document.createElement("h2");
    h.textContent = "Pool " + p.name + " (" + p.policy + ")";
    pools.appendChild(h);
    const table = document.createElement("table");
    const head = document.createElement("tr");
    for (const t of ["Backend", "Health", "Active check", "Ejected", "Drained", "In flight", "Requests/s", "Weight"]) {
      const th = document.createElement("th"); th.textContent = t; head.appendChild(th);
    }
    table.appendChild(head);
    for (const b of p.backends) {
      const key = p.name + " " + b.address;
      picked[key] = b.picked_total;
      const before = last.picked[key];
      const rate = dt > 0 && before !== undefined ? ((b.picked_total - before) / dt).toFixed(1) : "…";
      const tr = document.createElement("tr");
      cell(tr, b.address);
      cell(tr, b.healthy ? "up" : "down", b.healthy ? "up" : "down");
      cell(tr, b.active_check_up ? "passing" : "failing");
      cell(tr, b.ejected_for_ms ? Math.ceil(b.ejected_for_ms / 1000) + " s left" : "no");
      cell(tr, b.drained ? "drained" : "no");
      cell(tr, String(b.in_flight));
      cell(tr, rate);
      cell(tr, String(b.weight));
      table.appendChild(tr);
    }
    pools.appendChild(table);
  }
  last = { at: now, picked };
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
}
async function refresh() {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  try {
    const r = await fetch("/api/v1/pools", { headers, cache: "no-store" });
    if (r.status === 401) {
      const given = prompt("Admin API token");
      if (given) { token = given; return refresh(); }
      document.getElementById("error").textContent = "The admin API needs its token (open /#token=...).";
      return;
    }
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "Cannot reach the admin API: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;
