"""The dashboard: one HTML page served by the API at ``/dashboard``; no build step.

Plain HTML with a little JavaScript that calls the same HTTP API the CLI does: the cluster
(``/v1/status``, ``/v1/members``), the fleet by zone (``/v1/fleet/nodes``), operations in flight
(``/v1/fleet/operations`` and the CLI's operation records under ``coreplane/ops/``) and health
drilled down from what (``/health``) to where (``/health/where``) to why
(``/health/why/<kind>/<id>``), refreshed every two seconds.

The page itself holds no data and needs no token; its script sends the operator's bearer
token with every call. The token is given once in the URL *fragment*
(``/dashboard#token=...``, which browsers never send to a server, so it lands in no access
log), or typed into the page; it is kept in the tab's sessionStorage and removed from the
address bar at once. `register(server)` mounts the page through the server's app hook.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["PAGE", "register"]

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>coreplane dashboard</title>
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:center}
 header h1{font-size:18px;margin:0} #updated{margin-left:auto;opacity:.7;font-size:12px}
 main{display:grid;grid-template-columns:1fr 1fr;gap:14px;padding:14px}
 section{background:#fff;border-radius:6px;padding:12px 14px;box-shadow:0 1px 2px #0002}
 h2{font-size:15px;margin:0 0 8px} table{border-collapse:collapse;width:100%}
 td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;font-size:13px}
 .pill{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600}
 .ok{background:#d7f5dd;color:#11602a} .bad{background:#fde0de;color:#8d1c12}
 .warn{background:#fff1cc;color:#7a5400}
 .zones{display:flex;flex-wrap:wrap;gap:10px} .zone{border:1px solid #ddd;border-radius:6px;
 padding:6px 10px;min-width:140px} .zone h3{margin:0 0 4px;font-size:13px}
 .node{font-family:monospace;font-size:12px} .alive{color:#11602a} .suspect{color:#7a5400}
 .dead,.decommissioned{color:#8d1c12} .draining,.cordoned{color:#4b4bb5}
 #health-where li{cursor:pointer;margin:3px 0} #health-where li:hover{text-decoration:underline}
 #health-what{cursor:pointer} pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
 .wide{grid-column:1 / span 2} #login{padding:30px} .muted{opacity:.6}
</style></head>
<body>
<header><h1>coreplane</h1><span id="cluster-name">…</span>
 <span id="health-what" class="pill" title="click: where">…</span>
 <span id="updated"></span></header>
<form id="login" hidden><p>Bearer token: <input id="token" type="password" size="40"
 autocomplete="off"> <button id="go">Open</button></p></form>
<main id="main">
 <section><h2>Cluster</h2><table id="cluster"></table>
  <h2 style="margin-top:10px">Voters</h2><table id="voters"><thead><tr><th>id</th><th>role</th>
  <th>reachable</th><th>API</th></tr></thead><tbody></tbody></table></section>
 <section><h2>Health</h2><div id="health-summary" class="muted">loading…</div>
  <ul id="health-where"></ul><div id="health-why"></div></section>
 <section class="wide"><h2>Fleet by zone</h2><div id="zones" class="zones">
  <span class="muted">no fleet</span></div></section>
 <section class="wide"><h2>Operations in flight</h2><table id="ops"><thead><tr><th>id</th>
  <th>kind</th><th>what</th><th>state</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const REFRESH_MS = 2000;
let token = "", whereOpen = false, whyThing = "";
(function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem("coreplane-token", decodeURIComponent(m[1]));
           history.replaceState(null, "", location.pathname); }
  token = sessionStorage.getItem("coreplane-token") || "";
})();
const $ = (id) => document.getElementById(id);
function esc(s) { return String(s ?? "").replace(/[&<>"']/g,
  (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c])); }
function bytes(n) {
  const units = [["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  for (const [u, k] of units) {
    if (n >= k) { return (n / k).toFixed(1).replace(".0", "") + " " + u; }
  }
  return n + " B";
}
async function api(path, body) {
  const init = {headers: {"Authorization": "Bearer " + token, "Accept": "application/json"}};
  if (body !== undefined) { init.method = "POST"; init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, init);
  if (r.status === 401) { $("login").hidden = false; throw new Error("unauthorized"); }
  const data = await r.json().catch(() => null);
  return {status: r.status, data};
}
function row(cells) {
  return "<tr>" + cells.map((c) => "<td>" + esc(c) + "</td>").join("") + "</tr>";
}
async function cluster() {
  const [st, mem, name] = await Promise.all([api("/v1/status"), api("/v1/members"),
    api("/v1/kv/get", {key: "coreplane/cluster/name"})]);
  const s = st.data || {}, m = mem.data || {};
  $("cluster-name").textContent =
    name.data && name.data.found ? atob(name.data.value) : "coreplane";
  $("cluster").innerHTML = [["leader", m.leader || "none"], ["term", s.term],
    ["commit index", s.commit_index], ["answered by", s.node_id],
    ["quorum", s.has_quorum]].map(row).join("");
  $("voters").querySelector("tbody").innerHTML = (m.members ? Object.keys(m.members).concat(
      [m.node_id]).filter((v, i, a) => a.indexOf(v) === i).sort() : [])
    .map((id) => row([id, id === m.leader ? "leader" : "follower",
      id === s.node_id ? "yes" : ((s.peers || {})[id] || {}).connected ? "yes" : "NO",
      (m.api || {})[id] || ""]))
    .join("");
}
async function fleet() {
  const n = await api("/v1/fleet/nodes");
  if (n.status !== 200) { return; }
  const zones = {};
  for (const node of n.data.nodes) { (zones[node.zone] = zones[node.zone] || []).push(node); }
  $("zones").innerHTML = Object.keys(zones).sort().map((z) =>
    "<div class='zone' data-zone='" + esc(z) + "'><h3>" + esc(z) + " (" + zones[z].length +
    ")</h3>" + zones[z].map((x) => "<div class='node " + esc(x.state) + "'>" + esc(x.id) +
    " " + esc(x.state) + " · " + esc(x.replicas) + " replicas" +
    (x.size_bytes ? " · " + esc(bytes(x.size_bytes)) : "") + "</div>").join("") + "</div>")
    .join("") || "<span class='muted'>no nodes</span>";
}
async function operations() {
  const rows = [];
  const o = await api("/v1/fleet/operations");
  if (o.status === 200) {
    for (const m of o.data.operations) {
      rows.push([m.id, "move", m.partition + ": " + (m.source || "-") + " → " + (m.target || "-"),
                 m.step + " (attempt " + m.attempt + ")"]);
    }
  }
  const r = await api("/v1/kv/range", {prefix: "coreplane/ops/"});
  if (r.status === 200) {
    for (const it of r.data.items) {
      try { const rec = JSON.parse(atob(it.value));
        if (rec.state === "running") { rows.push([rec.id, rec.verb, rec.subject, rec.state]); }
      } catch (e) { /* not an operation record */ }
    }
  }
  $("ops").querySelector("tbody").innerHTML = rows.map(row).join("") ||
    "<tr><td colspan=4 class='muted'>none</td></tr>";
}
async function health() {
  const w = await api("/health");
  const d = w.data || {};
  const el = $("health-what");
  el.textContent = d.healthy ? "healthy" : "unhealthy";
  el.className = "pill " + (d.healthy ? "ok" : "bad");
  $("health-summary").textContent = d.summary || "";
  if (whereOpen) { await where(); }
  if (whyThing) { await why(whyThing); }
}
async function where() {
  whereOpen = true;
  const w = await api("/health/where");
  const places = (w.data && w.data.places) || [];
  $("health-where").innerHTML = places.map((p) => "<li data-thing='" + esc(p.kind + "/" + p.id) +
    "'><span class='pill " + (p.severity === "critical" ? "bad" : "warn") + "'>" +
    esc(p.severity) + "</span> " + esc(p.kind + " " + p.id) + ": " + esc(p.what.join("; ")) +
    "</li>").join("") || "<li class='muted'>nowhere: all healthy</li>";
}
async function why(thing) {
  whyThing = thing;
  const w = await api("/health/why/" + thing);
  const d = w.data || {};
  $("health-why").innerHTML = "<h2>why: " + esc(thing) + "</h2>" + (d.findings || []).map((f) =>
    "<div class='finding'><b>" + esc(f.what) + "</b><br>why: " + esc(f.why) +
    "<br>fix: <code>" + esc(f.fix) + "</code></div>").join("") +
    "<pre>" + esc(JSON.stringify(d.state || d, null, 1)) + "</pre>";
}
$("health-what").addEventListener("click", () => where().catch(() => {}));
$("health-summary").addEventListener("click", () => where().catch(() => {}));
$("health-where").addEventListener("click", (ev) => {
  const li = ev.target.closest("li[data-thing]");
  if (li) { why(li.dataset.thing).catch(() => {}); }
});
$("login").addEventListener("submit", (ev) => { ev.preventDefault(); token = $("token").value;
  sessionStorage.setItem("coreplane-token", token); $("login").hidden = true; tick(); });
async function tick() {
  if (!token) { $("login").hidden = false; return; }
  const parts = [cluster(), fleet(), operations(), health()];
  await Promise.allSettled(parts);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}
async function loop() { await tick(); setTimeout(loop, REFRESH_MS); }
loop();
</script></body></html>
"""


async def _page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers=_HEADERS)


def register(server: Any) -> None:
    """Serve the page at ``/dashboard`` on `server` (an `ApiServer`, before its start())."""
    server.add_app_hook(lambda app: app.router.add_get("/dashboard", _page))
