// densevlm review page: one region at a time, verdicts by keyboard or mouse, JSON API on the same origin.
(function () {
  "use strict";

  const REVIEWER_KEY = "densevlm.review.reviewer";
  const FILTER_KEY = "densevlm.review.filters";
  const QUICK_KEY = "densevlm.review.quick";
  const QUICK_KEYS = ["6", "7", "8", "9", "0"]; // typed categories, newest pinned last, oldest dropped
  const MAX_STAGE_W = 560;
  const MAX_STAGE_H = 440;
  const ZOOM = 256;

  const $ = (id) => document.getElementById(id);
  const state = {
    reviewer: "",
    region: null,
    classes: [],
    names: new Map(), // lower-case name or synonym -> class name
    skipped: new Set(),
    conflicts: [],
    busy: false,
  };

  function setBusy(busy) {
    state.busy = busy;
    document.body.dataset.busy = busy ? "1" : "0";
  }

  function say(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "";
  }

  function percent(p) {
    return (100 * p).toFixed(p < 0.1 ? 1 : 0) + "%";
  }

  async function api(path, body) {
    const options = { headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (e) {
      throw new Error("the review server does not answer (" + e.message + ")");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      let detail = data && data.detail !== undefined ? data.detail : response.statusText;
      if (Array.isArray(detail)) {
        detail = detail.map((d) => (d.loc ? d.loc.slice(-1)[0] + ": " : "") + d.msg).join("; ");
      }
      if (response.status === 401) {
        detail = "not authorised: open the URL printed by `densevlm review serve` (it carries the token)";
      }
      throw new Error(String(detail));
    }
    return data;
  }

  // ---- reviewer ---------------------------------------------------------------------------

  function askReviewer() {
    const dialog = $("reviewer-dialog");
    $("reviewer-input").value = state.reviewer;
    if (!dialog.open) dialog.showModal();
    $("reviewer-input").focus();
  }

  function setReviewer(name) {
    state.reviewer = name.trim().split(/\s+/).join(" ");
    localStorage.setItem(REVIEWER_KEY, state.reviewer);
    $("reviewer-name").textContent = state.reviewer;
  }

  // ---- vocabulary and filters -------------------------------------------------------------

  async function loadVocabulary() {
    const data = await api("/api/vocabulary");
    state.classes = data.classes;
    state.names = new Map();
    const list = $("vocabulary-list");
    const select = $("filter-category");
    const chosen = select.value;
    list.replaceChildren();
    select.replaceChildren(new Option("all", ""));
    for (const cls of state.classes) {
      for (const name of cls.synonyms) {
        state.names.set(name.toLowerCase(), cls.name);
        const option = document.createElement("option");
        option.value = name;
        option.label = name === cls.name ? (cls.thing ? "thing" : "stuff") : "synonym of " + cls.name;
        list.appendChild(option);
      }
      select.appendChild(new Option(cls.name, cls.name));
    }
    select.value = chosen;
    renderQuick();
  }

  // ---- quick keys: a category typed once is then one key press ----------------------------

  function quickNames() {
    let saved = [];
    try {
      saved = JSON.parse(localStorage.getItem(QUICK_KEY) || "[]");
    } catch (e) {
      saved = [];
    }
    const known = Array.isArray(saved) ? saved.filter((n) => typeof n === "string" && state.names.has(n.toLowerCase())) : [];
    return known.map((n) => state.names.get(n.toLowerCase())).slice(-QUICK_KEYS.length);
  }

  function pin(name) {
    const names = quickNames().filter((n) => n.toLowerCase() !== name.toLowerCase());
    names.push(name);
    localStorage.setItem(QUICK_KEY, JSON.stringify(names.slice(-QUICK_KEYS.length)));
    renderQuick();
  }

  function renderQuick() {
    const box = $("quick");
    box.replaceChildren();
    quickNames().forEach((name, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.category = name;
      const key = document.createElement("kbd");
      key.textContent = QUICK_KEYS[i];
      button.append(key, " " + name);
      button.addEventListener("click", () => quick(i));
      box.appendChild(button);
    });
    box.hidden = box.childElementCount === 0;
  }

  function quick(index) {
    const name = quickNames()[index];
    if (!state.region || name === undefined) return;
    run(() => submit("category", name));
  }

  function filters() {
    return {
      category: $("filter-category").value,
      max_conf: $("filter-max-conf").value,
      order: $("filter-order").value,
    };
  }

  function restoreFilters() {
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(FILTER_KEY) || "{}");
    } catch (e) {
      saved = {};
    }
    if (saved.category) $("filter-category").value = saved.category;
    if (saved.max_conf) $("filter-max-conf").value = saved.max_conf;
    if (saved.order) $("filter-order").value = saved.order;
  }

  function onFilterChange() {
    localStorage.setItem(FILTER_KEY, JSON.stringify(filters()));
    state.skipped.clear();
    run(loadNext);
  }

  // ---- showing a region -------------------------------------------------------------------

  function show(region) {
    state.region = region;
    $("conflicts").hidden = true;
    if (!region) {
      $("review").hidden = true;
      $("done").hidden = false;
      return;
    }
    $("done").hidden = true;
    $("review").hidden = false;
    $("region-key").textContent = region.key;
    $("region-image").textContent = region.image + " (" + region.width + "×" + region.height + ")";
    $("region-conf").textContent = percent(region.confidence);
    const mine = $("my-verdict");
    if (region.my_verdict) {
      mine.hidden = false;
      mine.textContent = "Your current verdict: " + describe(region.my_verdict) + ". A new verdict replaces it.";
    } else {
      mine.hidden = true;
      mine.textContent = "";
    }
    const list = $("candidates");
    list.replaceChildren();
    region.candidates.forEach((cand, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.index = String(i);
      button.dataset.category = cand.category;
      const key = document.createElement("kbd");
      key.textContent = String(i + 1);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = cand.category;
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = cand.thing ? "thing" : "stuff";
      name.appendChild(kind);
      const prob = document.createElement("span");
      prob.className = "prob";
      prob.textContent = percent(cand.prob);
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = cand.prob;
      button.append(key, name, prob, bar);
      button.addEventListener("click", () => accept(i));
      const item = document.createElement("li");
      item.appendChild(button);
      list.appendChild(item);
    });
    resetCategoryForm();
    const img = $("full-image");
    if (img.getAttribute("src") !== region.image_url) {
      img.setAttribute("src", region.image_url); // the load handler draws
    } else if (img.complete && img.naturalWidth > 0) {
      draw(region);
    }
  }

  function describe(verdict) {
    if (verdict.status === "accepted" || verdict.status === "corrected") {
      return verdict.category + " (" + verdict.status + ")";
    }
    return verdict.status === "rejected" ? "not a region" : "unsure";
  }

  function maskCanvas(region, color) {
    // mask_runs: COCO run lengths over pixels in column-major order, background first
    const w = region.width;
    const h = region.height;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(w, h);
    let k = 0;
    region.mask_runs.forEach((run, i) => {
      if (i % 2 === 1) {
        for (let j = k; j < k + run; j++) {
          const x = Math.floor(j / h);
          const y = j % h;
          const o = (y * w + x) * 4;
          pixels.data[o] = color[0];
          pixels.data[o + 1] = color[1];
          pixels.data[o + 2] = color[2];
          pixels.data[o + 3] = 255;
        }
      }
      k += run;
    });
    ctx.putImageData(pixels, 0, 0);
    return canvas;
  }

  function outline(ctx, x, y, w, h) {
    ctx.lineWidth = 4;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
    ctx.strokeRect(x, y, w, h);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ffd400";
    ctx.strokeRect(x, y, w, h);
  }

  function draw(region) {
    const img = $("full-image");
    const w = region.width;
    const h = region.height;
    let scale = Math.min(MAX_STAGE_W / w, MAX_STAGE_H / h);
    if (scale >= 1) scale = Math.floor(scale); // whole pixels for small images
    $("stage").classList.toggle("upscaled", scale >= 1);
    const cssW = Math.round(w * scale);
    const cssH = Math.round(h * scale);
    img.style.width = cssW + "px";
    img.style.height = cssH + "px";
    const ratio = window.devicePixelRatio || 1;
    const overlay = $("overlay");
    overlay.style.width = cssW + "px";
    overlay.style.height = cssH + "px";
    overlay.width = Math.round(cssW * ratio);
    overlay.height = Math.round(cssH * ratio);
    const ctx = overlay.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.imageSmoothingEnabled = false;
    const mask = region.mask_runs ? maskCanvas(region, [0, 190, 255]) : null;
    if (mask) {
      ctx.globalAlpha = 0.45;
      ctx.drawImage(mask, 0, 0, cssW, cssH);
      ctx.globalAlpha = 1;
    }
    const [x1, y1, x2, y2] = region.box;
    outline(ctx, x1 * scale, y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale);
    drawZoom(region, img, mask);
    $("stage").dataset.region = region.key; // which region the canvases show
  }

  function drawZoom(region, img, mask) {
    const canvas = $("zoom");
    const ratio = window.devicePixelRatio || 1;
    canvas.width = ZOOM * ratio;
    canvas.height = ZOOM * ratio;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#222";
    ctx.fillRect(0, 0, ZOOM, ZOOM);
    const [x1, y1, x2, y2] = region.box;
    const bw = Math.max(x2 - x1, 1);
    const bh = Math.max(y2 - y1, 1);
    const side = Math.max(bw, bh) * 1.5 + 8;
    const cx = (x1 + x2) / 2;
    const cy = (y1 + y2) / 2;
    const sx = Math.max(0, Math.min(cx - side / 2, region.width - side));
    const sy = Math.max(0, Math.min(cy - side / 2, region.height - side));
    const sw = Math.min(side, region.width);
    const sh = Math.min(side, region.height);
    const scale = ZOOM / Math.max(sw, sh);
    ctx.drawImage(img, sx, sy, sw, sh, 0, 0, sw * scale, sh * scale);
    if (mask) {
      ctx.globalAlpha = 0.3;
      ctx.drawImage(mask, sx, sy, sw, sh, 0, 0, sw * scale, sh * scale);
      ctx.globalAlpha = 1;
    }
    outline(ctx, (x1 - sx) * scale, (y1 - sy) * scale, (x2 - x1) * scale, (y2 - y1) * scale);
  }

  // ---- verdicts ---------------------------------------------------------------------------

  async function run(action) {
    if (state.busy) return;
    setBusy(true);
    try {
      await action();
    } catch (e) {
      say(e.message, "error");
    } finally {
      setBusy(false);
    }
  }

  async function loadNext() {
    const f = filters();
    const params = new URLSearchParams({ reviewer: state.reviewer, order: f.order });
    if (f.category) params.set("category", f.category);
    if (f.max_conf !== "") params.set("max_conf", f.max_conf);
    if (state.skipped.size) params.set("exclude", Array.from(state.skipped).join(","));
    const data = await api("/api/next?" + params.toString());
    show(data.region);
    await refreshSide();
  }

  async function refreshSide() {
    const who = encodeURIComponent(state.reviewer);
    const [progress, history, conflicts] = await Promise.all([
      api("/api/progress?reviewer=" + who),
      api("/api/history?limit=10&reviewer=" + who),
      api("/api/conflicts"),
    ]);
    $("progress-bar").max = Math.max(progress.total, 1);
    $("progress-bar").value = progress.reviewed;
    $("progress-text").textContent =
      progress.reviewed + " / " + progress.total + " reviewed · " + progress.mine + " by you";
    const rows = $("category-rows");
    rows.replaceChildren();
    for (const c of progress.by_category) {
      const tr = document.createElement("tr");
      for (const text of [c.category, c.reviewed, c.mine, c.total]) {
        const td = document.createElement("td");
        td.textContent = String(text);
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      const bar = document.createElement("progress");
      bar.max = Math.max(c.total, 1);
      bar.value = c.reviewed;
      td.appendChild(bar);
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    const list = $("history");
    list.replaceChildren();
    for (const v of history.verdicts) {
      const li = document.createElement("li");
      li.textContent = v.key + ": " + describe(v);
      list.appendChild(li);
    }
    $("conflict-count").textContent = String(conflicts.conflicts.length);
    state.conflicts = conflicts.conflicts;
  }

  async function submit(verdict, category, thing) {
    if (!state.region) return;
    const body = { region_id: state.region.id, reviewer: state.reviewer, verdict: verdict };
    if (category !== undefined) body.category = category;
    if (thing !== undefined) body.thing = thing;
    const saved = await api("/api/verdict", body);
    if (saved.new_class) await loadVocabulary();
    say("Saved " + state.region.key + ": " + describe(saved), "ok");
    await loadNext();
  }

  function accept(index) {
    const region = state.region;
    if (!region || index >= region.candidates.length) return;
    run(() => submit("category", region.candidates[index].category));
  }

  function resetCategoryForm() {
    $("category-input").value = "";
    $("new-class").hidden = true;
  }

  function submitTyped(thing, defect) {
    const typed = $("category-input").value.trim().split(/\s+/).join(" ");
    if (!typed) {
      say("Type a category first.", "error");
      return;
    }
    if (!state.names.has(typed.toLowerCase()) && thing === undefined) {
      $("new-class-name").textContent = typed;
      $("new-class").hidden = false;
      $("new-thing").focus();
      say("“" + typed + "” is not in the vocabulary: choose part, defect or stuff to add it.", "");
      return;
    }
    run(async () => {
      let name = state.names.get(typed.toLowerCase());
      if (name === undefined) {
        const added = await api("/api/classes", { name: typed, thing: thing, defect: defect === true,
                                                  reviewer: state.reviewer });
        name = added.class.name;
        await loadVocabulary();
      }
      pin(name);
      await submit("category", name);
      $("category-input").blur();
    });
  }

  function undo() {
    run(async () => {
      const data = await api("/api/undo", { reviewer: state.reviewer });
      if (!data.undone) {
        say("Nothing to undo.", "");
        return;
      }
      state.skipped.delete(data.undone.region_id);
      show(data.region);
      say("Undone your verdict on " + data.region.key + " (" + describe(data.undone) + ").", "ok");
      await refreshSide();
    });
  }

  function skip() {
    if (!state.region) return;
    state.skipped.add(state.region.id);
    run(loadNext);
  }

  // ---- conflicts --------------------------------------------------------------------------

  function showConflicts() {
    const rows = $("conflict-rows");
    rows.replaceChildren();
    for (const c of state.conflicts) {
      const tr = document.createElement("tr");
      const key = document.createElement("td");
      key.textContent = c.key;
      const verdicts = document.createElement("td");
      verdicts.textContent = c.verdicts.map((v) => v.reviewer + ": " + describe(v)).join(" · ");
      const open = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "review";
      button.addEventListener("click", () =>
        run(async () => {
          const data = await api("/api/regions/" + c.region_id + "?reviewer=" + encodeURIComponent(state.reviewer));
          show(data.region);
        })
      );
      open.appendChild(button);
      tr.append(key, verdicts, open);
      rows.appendChild(tr);
    }
    $("review").hidden = true;
    $("done").hidden = true;
    $("conflicts").hidden = false;
  }

  // ---- keyboard ---------------------------------------------------------------------------

  function onKey(event) {
    if ($("reviewer-dialog").open) return;
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    const undoKey = (event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "z";
    if (!undoKey && (event.ctrlKey || event.metaKey || event.altKey)) return;
    if (undoKey || event.key === "u") {
      event.preventDefault();
      undo();
      return;
    }
    if (state.busy || !state.region || !$("conflicts").hidden) return;
    if (event.key >= "1" && event.key <= "5") {
      event.preventDefault();
      accept(Number(event.key) - 1);
    } else if (QUICK_KEYS.includes(event.key)) {
      event.preventDefault();
      quick(QUICK_KEYS.indexOf(event.key));
    } else if (event.key === "t" || event.key === "/") {
      event.preventDefault();
      $("category-input").focus();
    } else if (event.key === "x") {
      event.preventDefault();
      run(() => submit("rejected"));
    } else if (event.key === "q") {
      event.preventDefault();
      run(() => submit("unsure"));
    } else if (event.key === "s") {
      event.preventDefault();
      skip();
    }
  }

  // ---- start ------------------------------------------------------------------------------

  function wire() {
    document.addEventListener("keydown", onKey);
    $("full-image").addEventListener("load", () => {
      if (state.region) draw(state.region);
    });
    $("full-image").addEventListener("error", () => say("The image of this region could not be loaded.", "error"));
    $("reviewer-form").addEventListener("submit", () => {
      const name = $("reviewer-input").value.trim();
      if (!name) return;
      setReviewer(name);
      state.skipped.clear();
      run(loadNext);
    });
    $("reviewer-dialog").addEventListener("cancel", (event) => {
      if (!state.reviewer) event.preventDefault();
    });
    $("change-reviewer").addEventListener("click", askReviewer);
    $("category-form").addEventListener("submit", (event) => {
      event.preventDefault();
      submitTyped(undefined);
    });
    $("category-input").addEventListener("input", () => {
      $("new-class").hidden = true;
    });
    $("new-thing").addEventListener("click", () => submitTyped(true));
    $("new-defect").addEventListener("click", () => submitTyped(true, true));
    $("new-stuff").addEventListener("click", () => submitTyped(false));
    $("btn-reject").addEventListener("click", () => run(() => submit("rejected")));
    $("btn-unsure").addEventListener("click", () => run(() => submit("unsure")));
    $("btn-skip").addEventListener("click", skip);
    $("btn-undo").addEventListener("click", undo);
    $("btn-undo-done").addEventListener("click", undo);
    $("show-conflicts").addEventListener("click", showConflicts);
    $("close-conflicts").addEventListener("click", () => run(loadNext));
    for (const id of ["filter-category", "filter-max-conf", "filter-order"]) {
      $(id).addEventListener("change", onFilterChange);
    }
  }

  async function start() {
    wire();
    setBusy(true);
    try {
      await loadVocabulary();
      restoreFilters();
      const saved = localStorage.getItem(REVIEWER_KEY);
      if (saved) {
        setReviewer(saved);
        setBusy(false);
        await run(loadNext);
      } else {
        setBusy(false);
        askReviewer();
      }
    } catch (e) {
      setBusy(false);
      say(e.message, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
