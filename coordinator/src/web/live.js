// Keeps the page live (server-sent events) and shows a timeline item's details on a click.
// The page works without it: the tables are plain HTML, the timeline has hover titles.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (live && window.EventSource) {
    var source = new EventSource(live.getAttribute("data-live"));
    source.addEventListener("update", function (event) {
      var parts = JSON.parse(event.data);
      Object.keys(parts).forEach(function (id) {
        var node = document.getElementById(id);
        if (node) node.innerHTML = parts[id];
      });
      document.body.setAttribute("data-updated", String(Date.now()));
      keepSelection();
    });
    source.addEventListener("gone", function () { source.close(); });
  }
  var selected = null;
  function keepSelection() {
    if (selected === null) return;
    var node = document.querySelector('#timeline [data-seq="' + selected + '"]');
    if (node) node.classList.add("selected");
  }
  document.addEventListener("click", function (event) {
    var node = event.target.closest ? event.target.closest("#timeline [data-seq]") : null;
    var detail = document.getElementById("detail");
    if (!node || !detail) return;
    document.querySelectorAll("#timeline .selected").forEach(function (n) { n.classList.remove("selected"); });
    selected = node.getAttribute("data-seq");
    node.classList.add("selected");
    var title = node.querySelector("title");
    var row = document.getElementById("e" + selected);
    detail.querySelector("pre").textContent =
      (title ? title.textContent : "") +
      (row ? "\n" + Array.from(row.cells).map(function (c) { return c.textContent; }).join("  ") : "");
    var link = document.getElementById("data-link");
    var id = node.getAttribute("data-id");
    var kind = node.getAttribute("data-kind") || "";
    if (id && /send|wait/.test(kind)) {
      var group = location.pathname.split("/")[2];
      link.href = "/group/" + group + "/data?id=" + encodeURIComponent(id);
      link.hidden = false;
    } else {
      link.hidden = true;
    }
    detail.hidden = false;
  });
})();
