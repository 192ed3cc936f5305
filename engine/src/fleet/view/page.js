// Draws /fleet.json (see engine/src/fleet/view.rs) and redraws it every 2 s.
"use strict";

function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children || []) {
    e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

// A time in ms since the epoch, or the number itself when no Date can hold it
// (toISOString throws past the year 275760; a feed's times are the publisher's word).
function when(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) + " ms" : d.toISOString();
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function percent(p) { return (p * 100).toFixed(1) + " %"; }

// A count cell, coloured by what it counts unless it is zero.
function count(n, what) {
  return el("td", { class: "num " + (n === 0 ? "zero" : what) }, [n]);
}

function placeTable(places) {
  const head = el("tr", {}, [el("th", {}, ["dc"]), el("th", {}, ["rack"]),
    el("th", { class: "num" }, ["done"]), el("th", { class: "num" }, ["downloading"]),
    el("th", { class: "num" }, ["missing"])]);
  const rows = places.map(p => el("tr", { class: "place", "data-dc": p.dc, "data-rack": p.rack }, [
    el("td", {}, [p.dc || "?"]), el("td", {}, [p.rack || "?"]),
    count(p.done, "done"), count(p.downloading, "downloading"), count(p.missing, "missing")]));
  return el("table", { class: "places" }, [el("thead", {}, [head]), el("tbody", {}, rows)]);
}

function hostTable(hosts, cls) {
  const head = el("tr", {}, ["host", "dc", "rack", "state", "progress", "rate"].map(h => el("th", {}, [h])));
  const rows = hosts.map(h => el("tr", { class: "host " + h.state, "data-addr": h.addr }, [
    el("td", {}, [h.addr]), el("td", {}, [h.dc || "?"]), el("td", {}, [h.rack || "?"]),
    el("td", { class: h.state }, [h.state]),
    el("td", {}, [el("span", { class: "bar" }, [el("i", { style: "width:" + (h.progress * 100).toFixed(1) + "%" })]),
      " " + percent(h.progress)]),
    el("td", { class: "num" }, [h.state === "downloading" ? bytes(h.rate) + "/s" : ""])]));
  return el("table", { class: cls }, [el("thead", {}, [head]), el("tbody", {}, rows)]);
}

function release(r) {
  const title = el("h2", {}, [el("span", { class: "name" }, [r.name]), " ",
    el("span", { class: "version" }, [r.version]), r.newest ? "" : " (previous)"]);
  const totals = el("p", { class: "totals" }, [
    el("span", { class: "done" }, [r.done + " done"]),
    el("span", { class: "downloading" }, [r.downloading + " downloading"]),
    el("span", { class: "missing" }, [r.missing + " missing"]),
    el("span", {}, [bytes(r.rate) + "/s"]),
    el("span", { class: "note" }, [bytes(r.size) + ", " + r.info_hash.slice(0, 12) + "…, published " +
      when(r.published_ms)])]);
  const parts = [title, totals];
  if (r.error) {
    const asOf = r.swarm_fetched_ms
      ? "counts as of " + when(r.swarm_fetched_ms)
      : "never fetched";
    parts.push(el("p", { class: "error" }, ["tracker: " + r.error + " (" + asOf + "; missing not counted)"]));
  }
  parts.push(placeTable(r.places));
  if (r.slowest.length > 0) {
    parts.push(el("h3", {}, ["slowest hosts"]), hostTable(r.slowest, "slowest"));
  }
  parts.push(el("h3", {}, ["hosts"]), hostTable(r.hosts, "hosts"));
  if (r.hosts_truncated || r.peers_truncated) {
    parts.push(el("p", { class: "note" }, ["only part of the hosts is listed; the counts are complete"]));
  }
  return el("section", {
    class: "release" + (r.newest ? "" : " old"), "data-name": r.name, "data-version": r.version,
    "data-done": r.done, "data-downloading": r.downloading, "data-missing": r.missing }, parts);
}

function draw(view) {
  const status = document.getElementById("status");
  const asOf = when(view.generated_ms);
  status.textContent = view.error
    ? "tracker: " + view.error + " (as of " + asOf + ")"
    : view.releases.length + (view.releases.length === 1 ? " live release, " : " live releases, ") + bytes(view.throughput) + "/s in all, as of " + asOf;
  status.className = view.error ? "error" : "";
  document.getElementById("releases").replaceChildren(...view.releases.map(release));
}

async function refresh() {
  try {
    const resp = await fetch("fleet.json", { cache: "no-store" });
    if (!resp.ok) throw new Error("fleet.json: HTTP " + resp.status);
    draw(await resp.json());
  } catch (e) {
    const status = document.getElementById("status");
    status.textContent = "cannot load fleet.json: " + e.message;
    status.className = "error";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  refresh();
  setInterval(refresh, 2000);
});
