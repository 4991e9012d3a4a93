// spamgate console: live history updates (polling) and confirmations. No inline script anywhere:
// the Content-Security-Policy allows only this file. Everything from mail goes in with textContent.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fmtTime(ts) {
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function historyRow(r) {
  const tr = el("tr");
  tr.className = "fresh";
  const t = el("td");
  const ts = el("span", fmtTime(r.ts).slice(11));
  ts.title = fmtTime(r.ts) + " UTC";
  t.appendChild(ts);
  tr.appendChild(t);
  const refTd = el("td");
  const a = el("a", r.ref);
  a.href = "/console/tx/" + encodeURIComponent(r.ref);
  refTd.appendChild(a);
  tr.appendChild(refTd);
  const client = el("td", r.ip);
  if (r.name) { client.appendChild(el("br")); client.appendChild(el("small", r.name)); }
  tr.appendChild(client);
  tr.appendChild(el("td", r.helo));
  tr.appendChild(el("td", r.sender));
  const rc = el("td");
  r.rcpts.forEach((x, i) => { if (i) rc.appendChild(el("br")); rc.appendChild(document.createTextNode(x.to)); });
  tr.appendChild(rc);
  tr.appendChild(el("td", r.stage));
  const act = el("td");
  act.appendChild(el("span", r.action, "badge " + r.action));
  tr.appendChild(act);
  tr.appendChild(el("td", r.score));
  const sy = el("td");
  r.symbols.forEach((s, i) => {
    if (i) sy.appendChild(document.createTextNode(" "));
    const ev = s.evidence ? "{" + s.evidence + "}" : "";
    sy.appendChild(el("span", (s.observe ? "~" : "") + s.name + "(" + s.score + ")" + ev, "sym"));
  });
  tr.appendChild(sy);
  tr.appendChild(el("td", r.downstream_reply || r.reply || ""));
  tr.addEventListener("click", (ev) => {
    if (ev.target.tagName !== "A") window.location = a.href;
  });
  return tr;
}

function liveHistory(table) {
  const body = table.tBodies[0];
  const live = document.getElementById("live");
  let after = parseInt(table.dataset.after || "0", 10);
  const query = table.dataset.query;
  async function poll() {
    try {
      const resp = await fetch("/console/api/history?after=" + after + (query ? "&" + query : ""),
                               {credentials: "same-origin"});
      if (!resp.ok) throw new Error(String(resp.status));
      const rows = await resp.json();
      for (let i = rows.length - 1; i >= 0; i--) {
        body.insertBefore(historyRow(rows[i]), body.firstChild);
        after = Math.max(after, rows[i].id);
      }
      while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
      if (live) { live.textContent = "live"; live.className = ""; }
    } catch (e) {
      if (live) { live.textContent = "not updating (" + e.message + ")"; live.className = "error"; }
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
  Array.from(body.rows).forEach((tr) => {
    const a = tr.querySelector("a");
    if (a) tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") window.location = a.href; });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("history");
  if (table) liveHistory(table);
  document.querySelectorAll("input[type=file][data-target]").forEach((input) => {
    input.addEventListener("change", () => {
      const f = input.files[0];
      if (!f) return;
      f.text().then((t) => { document.getElementById(input.dataset.target).value = t; });
    });
  });
});
