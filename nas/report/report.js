// y7nas report: builds the trials table from the embedded JSON, sorts tables on a header
// click, and shows a trial's details when its chart point is hovered. No libraries, no network.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var byNumber = {};
  data.trials.forEach(function (t) { byNumber[t.number] = t; });

  function num(v) { return typeof v === "number" && isFinite(v); }
  function show(key, v) {
    if (v === null || v === undefined || v === "") return "";
    if (v === true) return "yes";
    if (v === false) return "no";
    if (num(v)) {
      if (key === "params") return (v / 1e6).toPrecision(3);
      return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
    }
    return String(v);
  }
  function safeHref(h) { return typeof h === "string" && !/^[a-z][a-z0-9+.-]*:/i.test(h) ? h : null; }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function diffText(d) {
    if (!d) return "";
    return d.preset + " (" + d.differ + " of " + d.fields + ")";
  }

  // ---------------------------------------------------------------- trials table
  var table = document.getElementById("trials");
  var keys = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.dataset.key; });
  var tbody = table.tBodies[0];
  data.trials.forEach(function (t) {
    var tr = el("tr", null, "s-" + t.status);
    tr.dataset.n = t.number;
    keys.forEach(function (key) {
      var td = el("td");
      if (key === "model") {
        ["yaml", "onnx"].forEach(function (k) {
          var h = t.links && safeHref(t.links[k]);
          if (h) { var a = el("a", k); a.href = h; td.appendChild(a); td.appendChild(document.createTextNode(" ")); }
        });
      } else if (key === "preset") {
        td.textContent = diffText(t.diff);
        td.dataset.v = t.diff ? t.diff.differ : "";
      } else {
        var v = t[key];
        td.textContent = show(key, v);
        td.dataset.v = num(v) ? v : (v === undefined || v === null ? "" : String(v));
        if (num(v)) td.className = "num";
      }
      if (key.indexOf("param:") === 0) td.className += " dim";
      tr.appendChild(td);
    });
    tr.addEventListener("mouseenter", function () { mark(t.number, true); });
    tr.addEventListener("mouseleave", function () { mark(t.number, false); });
    tbody.appendChild(tr);
  });
  var dims = document.getElementById("show-dims");
  if (dims) dims.addEventListener("change", function () { table.classList.toggle("hide-dims", !dims.checked); });

  // ---------------------------------------------------------------- sorting (every table.sortable)
  function sortBy(tbl, index, th) {
    var asc = !th.classList.contains("asc");
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(tbl.tBodies[0].rows);
    function value(r) {
      var c = r.cells[index];
      var v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
      var f = parseFloat(v);
      return v !== "" && isFinite(f) && String(f) === String(Number(v)) ? f : v;
    }
    rows.sort(function (a, b) {
      var x = value(a), y = value(b);
      if (x === "" && y !== "") return 1;
      if (y === "" && x !== "") return -1;
      var r = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return asc ? r : -r;
    });
    rows.forEach(function (r) { tbl.tBodies[0].appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (tbl) {
    Array.prototype.forEach.call(tbl.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () { sortBy(tbl, i, th); });
    });
  });

  // ---------------------------------------------------------------- chart hover
  var tip = document.getElementById("tip");
  var box = tip && tip.parentNode;
  function mark(n, on) {
    Array.prototype.forEach.call(document.querySelectorAll('.pt[data-n="' + n + '"]'), function (p) {
      p.classList.toggle("hl", on);
    });
  }
  function line(parent, text) { parent.appendChild(el("div", text)); }
  function fill(t) {
    tip.textContent = "";
    tip.appendChild(el("b", "trial " + t.number + " · " + t.status));
    var shown = {};
    data.objectives.concat(["score", "params", "gflops", "latency_ms"]).forEach(function (k) {
      if (shown[k] || t[k] === undefined || t[k] === "") return;
      shown[k] = true;
      var label = {params: "params (M)", gflops: "GFLOPs", latency_ms: "latency ms"}[k] || k;
      line(tip, label + ": " + show(k, t[k]));
    });
    if (t.pruned_reason) line(tip, "pruned at epoch " + t.pruned_at + ": " + t.pruned_reason);
    if (t.fail_reason) line(tip, "failed: " + t.fail_reason);
    if (t.duplicate_of !== "" && t.duplicate_of !== undefined) line(tip, "duplicate of #" + t.duplicate_of);
    var d = t.diff;
    if (d) {
      line(tip, "nearest preset " + d.preset + ": " + d.differ + " of " + d.fields + " fields differ");
      if (d.width_ratio && d.widths_differ) {
        line(tip, d.widths_differ + " widths differ, ×" + d.width_ratio[0] + "–" + d.width_ratio[1]);
      }
      var ul = el("ul");
      d.changes.slice(0, 10).forEach(function (c) { ul.appendChild(el("li", c)); });
      if (d.changes.length > 10) ul.appendChild(el("li", "+" + (d.changes.length - 10) + " more"));
      if (d.changes.length) tip.appendChild(ul);
    }
  }
  function place(evt, target) {
    var rect = box.getBoundingClientRect();
    var x, y;
    if (evt && evt.clientX !== undefined && evt.type !== "focus") { x = evt.clientX - rect.left; y = evt.clientY - rect.top; }
    else { var r = target.getBoundingClientRect(); x = r.right - rect.left; y = r.top - rect.top; }
    tip.style.left = Math.min(x + 14, rect.width - 250) + "px";
    tip.style.top = (y + 14) + "px";
  }
  Array.prototype.forEach.call(document.querySelectorAll(".pareto-chart .pt"), function (p) {
    var t = byNumber[p.getAttribute("data-n")];
    if (!t || !tip) return;
    function enter(evt) { fill(t); tip.hidden = false; place(evt, p); mark(t.number, true); }
    function leave() { tip.hidden = true; mark(t.number, false); }
    p.addEventListener("mouseenter", enter);
    p.addEventListener("mousemove", function (evt) { place(evt, p); });
    p.addEventListener("focus", enter);
    p.addEventListener("mouseleave", leave);
    p.addEventListener("blur", leave);
    p.addEventListener("click", function () {
      var row = tbody.querySelector('tr[data-n="' + t.number + '"]');
      if (!row) return;
      Array.prototype.forEach.call(tbody.querySelectorAll("tr.hl"), function (r) { r.classList.remove("hl"); });
      row.classList.add("hl");
      row.scrollIntoView({block: "center"});
    });
  });
  // #trial-N in the address shows that trial's details, as hovering its point does
  var wanted = /^#trial-(\d+)$/.exec(window.location.hash);
  var point = wanted && document.querySelector('.pareto-chart .pt[data-n="' + wanted[1] + '"]');
  if (point) point.dispatchEvent(new Event("focus"));
  document.body.dataset.ready = "1";
})();
