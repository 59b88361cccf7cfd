// ringman status page: refreshes the server-rendered page from the JSON API
// every 2 s, draws each ring as a circle, and answers the lookup form in
// place. Data reaches the DOM only as text and attribute values (append of
// strings, textContent, setAttribute), never as markup.
"use strict";

(() => {
  const PERIOD_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#3b6ea8", "#d08c2f", "#4d9a6a", "#b9504f", "#7a62a8", "#3f9aa3", "#a86a9a", "#8a8f3c"];
  const seen = {}; // JSON last rendered per section, to leave unchanged ones alone
  let lookupQuery = new URLSearchParams(location.search).has("key") ? lookupParams(new URLSearchParams(location.search)) : null;
  let refreshes = 0;

  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    e.append(...children);
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    e.append(...children);
    return e;
  }

  const percent = (share) => (share * 100).toFixed(1) + " %";
  const utc = (iso) => new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  const servicesText = (services) =>
    Object.keys(services).sort().map((s) => s + ": " + services[s].join(", ")).join("; ");

  // get fetches a JSON route: {ok, data} or {ok: false, error}.
  async function get(path) {
    const resp = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    const data = await resp.json().catch(() => ({}));
    return resp.ok ? { ok: true, data } : { ok: false, error: data.error || resp.status + " " + resp.statusText };
  }

  function changed(section, value) {
    const json = JSON.stringify(value);
    if (seen[section] === json) return false;
    seen[section] = json;
    return true;
  }

  function renderMembers(members) {
    const rows = members.map((m) =>
      el("tr", { "data-name": m.name },
        el("td", {}, m.name), el("td", {}, m.addr),
        el("td", {}, el("span", { class: "status", "data-status": m.status }, m.status)),
        el("td", {}, servicesText(m.services)), el("td", {}, m.version || "")));
    $("#members tbody").replaceChildren(...rows);
  }

  // ringFigure draws one ring: an arc per instance whose length is its share
  // of the partitions (pathLength 100 makes dash lengths percentages), and
  // the legend table the server renders, with a colour key.
  function ringFigure(service, ring) {
    const picture = svg("svg", { viewBox: "0 0 120 120", role: "img", "aria-label": `ring of ${service}` },
      svg("circle", { class: "track", cx: 60, cy: 60, r: 48 }));
    let start = 0;
    const rows = ring.instances.map((inst, i) => {
      const length = inst.share * 100;
      picture.append(svg("circle", {
        class: "arc", cx: 60, cy: 60, r: 48, pathLength: 100, stroke: COLORS[i % COLORS.length],
        "stroke-dasharray": `${length} ${100 - length}`, "stroke-dashoffset": -start,
        transform: "rotate(-90 60 60)", "data-instance": inst.instance, "data-partitions": inst.partitions,
      }, svg("title", {}, `${inst.instance}: ${inst.partitions} partitions, ${percent(inst.share)}`)));
      start += length;
      const key = el("span", { class: "key", "aria-hidden": "true" });
      key.style.background = COLORS[i % COLORS.length];
      return el("tr", { "data-instance": inst.instance },
        el("td", {}, key, inst.instance), el("td", {}, String(inst.weight)), el("td", {}, String(inst.partitions)), el("td", {}, percent(inst.share)));
    });
    const legend = el("table", { class: "legend" },
      el("thead", {}, el("tr", {}, ...["Instance", "Weight", "Partitions", "Share"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows));
    return el("figure", { class: "ring", "data-service": service },
      el("figcaption", {}, el("h3", {}, service), ` ${ring.instances.length} instance${ring.instances.length === 1 ? "" : "s"}, ${ring.partitions} partitions`),
      picture, legend);
  }

  function renderRings(rings) {
    const services = Object.keys(rings).sort();
    const figures = services.map((s) => ringFigure(s, rings[s]));
    $("#rings").replaceChildren(...(figures.length ? figures : [el("p", { class: "empty" }, "No service has a live instance.")]));
    const known = new Set(services);
    known.add($("#lookup-form [name=service]").placeholder);
    $("#services").replaceChildren(...[...known].sort().map((s) => el("option", { value: s })));
  }

  function renderOverrides(res) {
    if (!res.ok) {
      $("#overrides").replaceChildren(el("p", { class: "empty" }, res.error));
      return;
    }
    const rows = res.data.map((o) =>
      el("tr", { "data-host": o.host }, el("td", {}, o.host), el("td", {}, o.backend), el("td", {}, utc(o.updated_at)), el("td", {}, o.node)));
    const head = el("tr", {}, ...["Host", "Backend", "Updated", "Node"].map((h) => el("th", { scope: "col" }, h)));
    const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No overrides."))];
    $("#overrides").replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  function renderAnswer(res) {
    if (!res.ok) {
      $("#answer").replaceChildren(el("p", { class: "problem" }, res.error));
      return;
    }
    const l = res.data;
    $("#answer").replaceChildren(
      el("p", {}, `${l.key} on ${l.service}: `, el("strong", { class: "owner" }, l.backend), " ",
        el("span", { class: "source" }, "from the " + l.source)),
      el("ol", { class: "candidates" }, ...l.candidates.map((c) => el("li", {}, c))));
  }

  // lookupParams keeps the lookup's own parameters, without empty ones.
  function lookupParams(from) {
    const q = new URLSearchParams();
    for (const name of ["key", "service", "n"]) if (from.get(name)) q.set(name, from.get(name));
    return q;
  }

  async function lookup() {
    const res = await get("/v1/lookup?" + lookupQuery);
    if (changed("answer", res)) renderAnswer(res);
  }

  async function refresh() {
    const [members, rings, overrides] = await Promise.all([get("/v1/members"), get("/v1/rings"), get("/entries.json")]);
    if (!members.ok || !rings.ok) throw new Error(members.error || rings.error);
    if (changed("members", members.data)) renderMembers(members.data);
    if (changed("rings", rings.data)) renderRings(rings.data);
    if (changed("overrides", overrides)) renderOverrides(overrides);
    if (lookupQuery) await lookup();
  }

  // tick refreshes unless the page is hidden, then schedules the next one;
  // a failure keeps the last data on the page and says so.
  async function tick() {
    if (!document.hidden) {
      const status = $("#updated");
      try {
        await refresh();
        status.textContent = "Updated " + new Date().toLocaleTimeString() + ", every " + PERIOD_MS / 1000 + " s.";
        status.classList.remove("stale");
      } catch (err) {
        status.textContent = "Update failed at " + new Date().toLocaleTimeString() + " (" + err.message + "); showing the last data.";
        status.classList.add("stale");
      }
      status.dataset.refreshes = ++refreshes;
    }
    setTimeout(tick, PERIOD_MS);
  }

  document.documentElement.classList.add("js");
  $("#lookup-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    lookupQuery = lookupParams(new FormData(event.target));
    history.replaceState(null, "", "/ui?" + lookupQuery);
    try {
      await lookup();
    } catch (err) {
      renderAnswer({ ok: false, error: "lookup failed: " + err.message });
    }
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh().catch(() => {}); });
  tick();
})();
