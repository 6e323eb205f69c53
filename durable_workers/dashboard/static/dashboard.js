// Live updates by polling: every few seconds re-fetch this very page and swap its <main>,
// unless the "live" box is unticked, the tab is hidden, or the user is typing in a form.
(function () {
  "use strict";
  var root = document.getElementById("live-root");
  var box = document.getElementById("live");
  if (!root || !box) { return; }
  var every = (parseInt(root.getAttribute("data-refresh"), 10) || 3) * 1000;
  var busy = false;

  function typing() {
    var el = document.activeElement;
    return el && root.contains(el) && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(el.tagName);
  }

  function refresh() {
    if (busy || !box.checked || document.hidden || typing()) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "poll" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live-root");
        if (fresh && !typing()) {
          root.innerHTML = fresh.innerHTML;
          root.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () { /* the server is away: try again at the next tick */ })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, every);
}());
