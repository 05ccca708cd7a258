/* Feature browser written by vsae.browser: a Tabulator table of latents and a detail panel.
 *
 * Data: one script per SAE (data_<name>.js) fills window.VSAE_BROWSER[name]; it is loaded with a
 * <script> tag (works from file://, where fetch() is refused) the first time the SAE is selected.
 * A latent's record: {id, density, n_fires, mean, max, decoder_norm, contexts, boosted, suppressed,
 * neighbours}; a context is [peak activation, peak offset, [token ids], [activations]]; token ids
 * index the SAE's vocabulary slice (data.vocab). The URL hash (#sae=NAME&latent=ID) links a latent.
 * Once the first table is drawn, window.VSAE_READY = {sae, rows, ms} (ms: since navigation start).
 */
"use strict";
(function () {
  const manifest = JSON.parse(document.getElementById("vsae-manifest").textContent);
  const store = (window.VSAE_BROWSER = window.VSAE_BROWSER || {});
  const $ = (id) => document.getElementById(id);
  let table = null;
  let data = null;
  let byId = new Map();

  // ---------------------------------------------------------------- numbers and tokens
  function fmt(x, digits = 3) {
    if (x === null || x === undefined || Number.isNaN(x)) return "";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a < 1e-3 || a >= 1e5) return x.toExponential(digits - 1);
    return String(Number(x.toPrecision(digits)));
  }
  function pct(density) {
    return density >= 0.001 ? fmt(100 * density, 3) + "%" : fmt(100 * density, 2) + "%";
  }
  function tok(id) {
    const s = data.vocab[String(id)];
    return s === undefined ? "#" + id : s;
  }
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.append(c);
    return e;
  }

  // ---------------------------------------------------------------- data loading
  function load(entry) {
    if (store[entry.name]) return Promise.resolve(store[entry.name]);
    return new Promise((resolve, reject) => {
      const s = el("script", { src: entry.file });
      s.onload = () => (store[entry.name] ? resolve(store[entry.name]) : reject(new Error(entry.file + " set no data")));
      s.onerror = () => reject(new Error("could not load " + entry.file + " (is it next to index.html?)"));
      document.head.append(s);
    });
  }

  // ---------------------------------------------------------------- the table
  function rows(d) {
    return d.latents.map((r) => ({
      id: r.id, density: r.density, n_fires: r.n_fires, mean: r.mean, max: r.max, decoder_norm: r.decoder_norm,
      peak_token: r.contexts.length ? tok(r.contexts[0][2][r.contexts[0][1]]) : "",
      boosted_token: r.boosted.length ? tok(r.boosted[0][0]) : "",
    }));
  }
  function idFilter(headerValue, rowValue) {
    const ids = String(headerValue).split(/[\s,;]+/).filter((t) => t !== "");
    return ids.length === 0 || ids.includes(String(rowValue));
  }
  const num = (title, field, tip, formatter) => ({
    title, field, sorter: "number", hozAlign: "right", headerTooltip: tip, headerFilter: "number",
    headerFilterFunc: ">=", headerFilterPlaceholder: "min", headerFilterLiveFilter: true,
    formatter: (cell) => (formatter || fmt)(cell.getValue()),
  });
  function columns() {
    return [
      { title: "latent", field: "id", sorter: "number", width: 92, headerFilter: "input",
        headerFilterFunc: idFilter, headerFilterPlaceholder: "id, id…", headerTooltip: "latent index in the SAE" },
      num("density", "density", "fraction of tokens on which the latent fires", pct),
      num("mean act.", "mean", "mean activation when firing (" + data.units + ")"),
      num("max act.", "max", "maximum activation (" + data.units + ")"),
      num("decoder norm", "decoder_norm", "L2 norm of the latent's decoder row"),
      { title: "peak token", field: "peak_token", headerFilter: "input", headerFilterFunc: "like",
        headerFilterPlaceholder: "text", headerTooltip: "token at the latent's highest activation",
        formatter: (cell) => tokenCell(cell.getValue()) },
      { title: "top boosted", field: "boosted_token", headerFilter: "input", headerFilterFunc: "like",
        headerFilterPlaceholder: "text", headerTooltip: "token whose logit the decoder row raises most",
        formatter: (cell) => tokenCell(cell.getValue()) },
    ];
  }
  function tokenCell(s) {
    return el("span", { class: "tokname", text: s });
  }
  function buildTable() {
    if (table) table.destroy();
    byId = new Map(data.latents.map((r) => [r.id, r]));
    table = new Tabulator("#table", {
      data: rows(data), index: "id", layout: "fitColumns", height: "72vh", selectableRows: 1,
      initialSort: [{ column: "density", dir: "desc" }], placeholder: "no latent matches the filters",
      columnDefaults: { headerWordWrap: true }, columnHeaderVertAlign: "bottom", columns: columns(),
    });
    table.on("rowClick", (e, row) => show(row.getData().id, false));
    return new Promise((resolve) => table.on("tableBuilt", resolve));
  }

  // ---------------------------------------------------------------- the detail panel
  function statList(r) {
    const items = [
      ["density", pct(r.density) + " of tokens (" + r.n_fires + " of " + data.n_tokens + ")"],
      ["mean activation when firing", fmt(r.mean, 4)],
      ["max activation", fmt(r.max, 4)],
      ["decoder norm", fmt(r.decoder_norm, 4)],
    ];
    return el("dl", { class: "stats" }, items.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }
  function contextLine(c, vmax) {
    const [peakAct, peak, ids, acts] = c;
    const spans = ids.map((t, j) => {
      const a = Math.max(0, Math.min(1, acts[j] / vmax));
      const s = el("span", { class: "tok" + (j === peak ? " peak" : ""), title: "activation " + fmt(acts[j], 4),
                             "data-act": String(acts[j]), text: tok(t) });
      if (acts[j] > 0) s.style.backgroundColor = "rgba(255, 140, 0, " + (0.08 + 0.92 * a).toFixed(2) + ")";
      return s;
    });
    return el("div", { class: "ctx" }, [el("span", { class: "ctx-act", text: fmt(peakAct, 3) }),
                                        el("span", { class: "ctx-tokens" }, spans)]);
  }
  function effectTable(title, list, cls) {
    const vmax = Math.max(1e-12, ...list.map((e) => Math.abs(e[1])));
    const body = list.map(([t, v]) => el("tr", {}, [
      el("td", {}, [el("span", { class: "tokname", text: tok(t) })]),
      el("td", { class: "num", text: fmt(v, 3) }),
      el("td", { class: "bar" }, [el("span", { class: cls, style: "width:" + (100 * Math.abs(v) / vmax).toFixed(0) + "%" })]),
    ]));
    return el("table", { class: "effects" }, [
      el("caption", { text: title }),
      el("thead", {}, [el("tr", {}, [el("th", { text: "token" }), el("th", { text: "effect" }), el("th")])]),
      el("tbody", {}, body)]);
  }
  function neighbourList(r) {
    if (!r.neighbours.length) return el("p", { class: "note", text: "no other latent shown" });
    return el("ul", { class: "neighbours" }, r.neighbours.map(([id, c]) => {
      const b = el("button", { type: "button", class: "nb", text: "latent " + id, title: "open latent " + id });
      b.addEventListener("click", () => show(id, true));
      return el("li", {}, [b, el("span", { class: "cos", text: " cos " + fmt(c, 3) })]);
    }));
  }
  function show(id, selectRow) {
    const r = byId.get(Number(id));
    const panel = $("detail");
    panel.replaceChildren();
    if (!r) {
      panel.append(el("p", { class: "error", text: "latent " + id + " is not in this browser (dead or capped)" }));
      return;
    }
    history.replaceState(null, "", "#sae=" + encodeURIComponent(data.name) + "&latent=" + r.id);
    if (selectRow && table) {
      table.deselectRow();
      table.selectRow(r.id);
      table.scrollToRow(r.id, "center", false).catch(() => {});
    }
    const vmax = Math.max(r.max, 1e-12);
    panel.append(
      el("h2", { text: data.name + " · latent " + r.id }),
      statList(r),
      el("h3", { text: "Top activating contexts" }),
      el("p", { class: "note", text: "Highest activation first, at most one per context. A token's background is its " +
        "activation relative to the latent's max (" + fmt(r.max, 3) + "); the peak token is boxed; hover a token " +
        "for its activation. Left: the peak activation. ↵ is a newline." }),
      r.contexts.length ? el("div", { class: "contexts" }, r.contexts.map((c) => contextLine(c, vmax)))
                        : el("p", { class: "note", text: "no context (the latent did not fire on these tokens)" }),
      el("h3", { text: "Logit effects" }),
      el("p", { class: "note", text: "Decoder row through the unembedding (W_dec[i] · W_U): the tokens whose " +
        "next-token logits the latent raises and lowers most, per unit of activation." }),
      el("div", { class: "effects-pair" }, [effectTable("boosted", r.boosted, "pos"),
                                            effectTable("suppressed", r.suppressed, "neg")]),
      el("h3", { text: "Nearest latents (decoder cosine)" }),
      neighbourList(r),
    );
  }

  // ---------------------------------------------------------------- SAE switch and start-up
  function summary() {
    $("summary").textContent = data.architecture + ", k = " + data.k + ", " + data.d_sae + " latents, " +
      data.n_alive + " alive on " + data.n_tokens + " tokens" +
      (data.n_latents_shown < data.n_alive ? " (" + data.n_latents_shown + " densest shown)" : "");
    $("units").textContent = "Activations: " + data.units + "; norm factor " + fmt(data.norm_factor, 4) +
      ". Hook " + (data.hook || "?") + " of " + (data.lm || "?") + ".";
  }
  function fail(err) {
    $("detail").replaceChildren(el("p", { class: "error", text: String(err && err.message ? err.message : err) }));
  }
  async function select(name, latent) {
    const entry = manifest.saes.find((s) => s.name === name) || manifest.saes[0];
    $("sae-select").value = entry.name;
    data = await load(entry);
    summary();
    await buildTable();
    $("detail").replaceChildren(el("p", { class: "hint", text: "Click a latent in the table to see its top " +
      "activating contexts, logit effects and nearest latents." }));
    if (latent !== undefined && latent !== null) show(latent, true);
    if (!window.VSAE_READY) window.VSAE_READY = { sae: entry.name, rows: data.latents.length, ms: performance.now() };
  }
  function fromHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    return [p.get("sae"), p.get("latent")];
  }
  function start() {
    const sel = $("sae-select");
    for (const s of manifest.saes) {
      sel.append(el("option", { value: s.name, text: s.name + " (" + s.architecture + ", k = " + s.k + ", " +
        s.n_alive + " alive)" }));
    }
    sel.addEventListener("change", () => select(sel.value).catch(fail));
    const [sae, latent] = fromHash();
    select(sae || manifest.saes[0].name, latent).catch(fail);
  }
  if (typeof Tabulator === "undefined") fail(new Error("tabulator/tabulator.min.js did not load"));
  else start();
})();
