/* anomalib-divass report: sort, filter and page the rows; pictures load lazily and open large on click.
   The view is in the address's hash (e.g. report.html#label=anomalous&type=crack&page=2), so a view can be
   bookmarked or shared, and a headless browser can open one directly. No network access, no libraries. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var rows = data.rows;
  var defaults = { label: "all", type: "all", truth: "all", sort: "score-desc", page: "1", size: String(data.pageSize) };
  var state = {};
  var current = [];
  var shownIndex = -1;
  var body = document.getElementById("row-body");
  var controls = {
    label: document.getElementById("f-label"),
    type: document.getElementById("f-type"),
    truth: document.getElementById("f-truth"),
    sort: document.getElementById("f-sort")
  };

  function labelName(value) {
    return value === 1 ? "anomalous" : value === 0 ? "normal" : "unknown";
  }

  function hasOption(select, value) {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === value) { return true; }
    }
    return false;
  }

  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    Object.keys(defaults).forEach(function (key) {
      state[key] = params.has(key) ? params.get(key) : defaults[key];
    });
    Object.keys(controls).forEach(function (key) {
      if (!hasOption(controls[key], state[key])) { state[key] = defaults[key]; }
      controls[key].value = state[key];
    });
    var size = parseInt(state.size, 10);
    state.size = String(size > 0 ? size : data.pageSize);
  }

  function hashOf(view) {
    var params = new URLSearchParams();
    Object.keys(defaults).forEach(function (key) {
      if (view[key] !== defaults[key]) { params.set(key, view[key]); }
    });
    return params.toString();
  }

  function go(changes) {
    var view = {};
    Object.keys(defaults).forEach(function (key) { view[key] = key in changes ? changes[key] : state[key]; });
    var hash = hashOf(view);
    if (hash === location.hash.replace(/^#/, "")) { render(); } else { location.hash = hash; }
  }

  function filtered() {
    var list = rows.filter(function (row) {
      if (state.label !== "all" && labelName(row.p) !== state.label) { return false; }
      if (state.type !== "all" && row.t !== state.type) { return false; }
      if (state.truth !== "all" && labelName(row.g) !== state.truth) { return false; }
      return true;
    });
    var byName = function (a, b) { return a.n < b.n ? -1 : a.n > b.n ? 1 : 0; };
    var sign = state.sort === "score-asc" ? 1 : -1;
    list.sort(state.sort === "name" ? byName : function (a, b) {
      if (a.s === null || b.s === null) { return (a.s === null) - (b.s === null) || byName(a, b); }
      return sign * (a.s - b.s) || byName(a, b);
    });
    return list;
  }

  function cell(row, className, content) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (content !== undefined) { td.appendChild(content instanceof Node ? content : document.createTextNode(content)); }
    row.appendChild(td);
    return td;
  }

  function badge(value) {
    var span = document.createElement("span");
    span.className = "label label-" + labelName(value);
    span.textContent = labelName(value);
    return span;
  }

  function rowElement(row, rank, position) {
    var tr = document.createElement("tr");
    tr.className = "row" + (row.g !== null && row.p !== null && row.g !== row.p ? " wrong" : "");
    tr.setAttribute("data-index", row.i);
    tr.setAttribute("data-label", labelName(row.p));
    tr.setAttribute("data-truth", labelName(row.g));
    tr.setAttribute("data-type", row.t);
    tr.setAttribute("data-score", row.s === null ? "" : row.s.toFixed(4));
    cell(tr, "rank", String(rank));
    var pictures = cell(tr, "pictures");
    if (row.th) {
      var img = document.createElement("img");
      img.className = "thumb";
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = row.n;
      img.title = "Enlarge";
      img.onload = function () { img.setAttribute("data-loaded", "1"); };
      img.onerror = function () { img.setAttribute("data-loaded", "error"); };
      img.src = row.th;
      img.addEventListener("click", function () { openLarge(position); });
      pictures.appendChild(img);
    } else {
      pictures.appendChild(document.createTextNode(row.e ? "" : "no picture"));
      if (row.e) {
        var error = document.createElement("span");
        error.className = "error";
        error.textContent = row.e;
        pictures.appendChild(error);
      }
    }
    cell(tr, "score", row.s === null ? "\u2013" : row.s.toFixed(4));
    cell(tr, "predicted", badge(row.p));
    cell(tr, "truth", row.g === null ? "\u2013" : badge(row.g));
    cell(tr, "type", row.t || "\u2013");
    cell(tr, "name", row.n);
    return tr;
  }

  function pager(element, page, pages) {
    element.textContent = "";
    if (pages <= 1) { return; }
    var link = function (text, target) {
      var node;
      if (target < 1 || target > pages || target === page) {
        node = document.createElement("span");
        node.className = "off";
      } else {
        node = document.createElement("a");
        node.href = "#" + hashOf(Object.assign({}, state, { page: String(target) }));
      }
      node.textContent = text;
      element.appendChild(node);
    };
    link("\u00ab first", 1);
    link("\u2039 previous", page - 1);
    var where = document.createElement("span");
    where.textContent = "page " + page + " of " + pages;
    element.appendChild(where);
    link("next \u203a", page + 1);
    link("last \u00bb", pages);
  }

  function render() {
    readHash();
    current = filtered();
    var size = parseInt(state.size, 10);
    var pages = Math.max(1, Math.ceil(current.length / size));
    var page = Math.min(Math.max(parseInt(state.page, 10) || 1, 1), pages);
    var start = (page - 1) * size;
    var slice = current.slice(start, start + size);
    var fragment = document.createDocumentFragment();
    slice.forEach(function (row, offset) { fragment.appendChild(rowElement(row, start + offset + 1, start + offset)); });
    body.textContent = "";
    body.appendChild(fragment);
    document.getElementById("shown").textContent = current.length
      ? "showing " + (start + 1) + "\u2013" + (start + slice.length) + " of " + current.length +
        (current.length < rows.length ? " (" + rows.length + " in all)" : "")
      : "no image matches (" + rows.length + " in all)";
    pager(document.getElementById("pager-top"), page, pages);
    pager(document.getElementById("pager-bottom"), page, pages);
    document.body.setAttribute("data-shown", String(current.length));
    document.body.setAttribute("data-ready", "1");
  }

  var lightbox = document.getElementById("lightbox");
  var large = document.getElementById("lightbox-image");
  var caption = document.getElementById("lightbox-caption");

  function openLarge(position) {
    var row = current[position];
    if (!row || !row.lg) { return; }
    shownIndex = position;
    large.src = row.lg;
    large.alt = row.n;
    caption.textContent = row.n + "  \u00b7  score " + (row.s === null ? "\u2013" : row.s.toFixed(4)) +
      "  \u00b7  predicted " + labelName(row.p) + (row.g === null ? "" : "  \u00b7  true " + labelName(row.g)) +
      (row.t ? "  \u00b7  " + row.t : "") + "   (\u2190 \u2192 to move, Esc to close)";
    lightbox.hidden = false;
  }

  function closeLarge() {
    lightbox.hidden = true;
    large.removeAttribute("src");
    shownIndex = -1;
  }

  document.getElementById("lightbox-close").addEventListener("click", closeLarge);
  lightbox.addEventListener("click", function (event) { if (event.target === lightbox) { closeLarge(); } });
  document.addEventListener("keydown", function (event) {
    if (lightbox.hidden) { return; }
    if (event.key === "Escape") { closeLarge(); }
    if (event.key === "ArrowRight" && shownIndex + 1 < current.length) { openLarge(shownIndex + 1); }
    if (event.key === "ArrowLeft" && shownIndex > 0) { openLarge(shownIndex - 1); }
  });
  Object.keys(controls).forEach(function (key) {
    controls[key].addEventListener("change", function () {
      var changes = { page: "1" };
      changes[key] = controls[key].value;
      go(changes);
    });
  });
  window.addEventListener("hashchange", render);
  render();
}());
