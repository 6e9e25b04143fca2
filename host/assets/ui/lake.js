// The dashboard's own script: small behaviours around htmx. No inline script anywhere; this
// file is served from the lake itself under a hashed URL.
"use strict";
(function () {
  function flash(html) {
    var f = document.getElementById("flash");
    if (f) { f.innerHTML = html; }
  }

  // A refused or failed partial update shows the server's message (it is HTML the server
  // escaped) instead of doing nothing.
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    var target = e.detail.target;
    var html = xhr.responseText || ("<p class=\"problem\" role=\"alert\">" + xhr.status + " " + xhr.statusText + "</p>");
    var near = target && target.id && /-result$/.test(target.id) ? target : null;
    if (near) { near.innerHTML = html; } else { flash(html); }
  });
  document.addEventListener("htmx:sendError", function () {
    flash("<p class=\"problem\" role=\"alert\">The lake did not answer; is it still running?</p>");
  });
  document.addEventListener("htmx:beforeRequest", function () { flash(""); });

  // The promotion asks once more, saying what the target layer implies.
  document.addEventListener("click", function (e) {
    var ask = e.target.closest("[data-confirm]");
    if (ask) {
      var box = document.getElementById(ask.getAttribute("data-confirm"));
      var form = ask.closest("form");
      if (form && !form.reportValidity()) { return; }
      var sel = form && form.querySelector("select[name=target_layer]");
      var opt = sel && sel.options[sel.selectedIndex];
      var text = document.getElementById("promote-implies");
      if (text && opt) {
        text.textContent = "Promote into " + opt.value + "? " + (opt.getAttribute("data-implies") || "");
      }
      if (box) { box.hidden = false; var go = box.querySelector("button[type=submit]"); if (go) { go.focus(); } }
      return;
    }
    var cancel = e.target.closest("[data-cancel]");
    if (cancel) {
      var b = document.getElementById(cancel.getAttribute("data-cancel"));
      if (b) { b.hidden = true; }
    }
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var box = document.getElementById("promote-confirm");
    if (box && e.detail.elt && e.detail.elt.id === "promote") { box.hidden = true; }
  });

  // Upload progress.
  document.addEventListener("htmx:xhr:progress", function (e) {
    var p = document.getElementById("upload-progress");
    if (p && e.detail.total) {
      p.hidden = false;
      p.value = Math.round(100 * e.detail.loaded / e.detail.total);
    }
  });

  // A merge's key columns: those both files have.
  function columnsOf(sel) {
    var o = sel && sel.options[sel.selectedIndex];
    return o ? (o.getAttribute("data-columns") || "").split(",").filter(Boolean) : [];
  }
  function fillKeys() {
    var on = document.getElementById("on");
    if (!on) { return; }
    var left = columnsOf(document.getElementById("left"));
    var right = columnsOf(document.getElementById("right"));
    var both = left.filter(function (c) { return right.indexOf(c) >= 0; });
    on.innerHTML = "";
    both.forEach(function (c) {
      var o = document.createElement("option");
      o.value = c; o.textContent = c; on.appendChild(o);
    });
  }
  document.addEventListener("change", function (e) {
    if (e.target.hasAttribute && e.target.hasAttribute("data-columns-for")) { fillKeys(); }
  });

  // Copy buttons next to code snippets.
  function addCopyButtons() {
    document.querySelectorAll("pre.snippet").forEach(function (pre) {
      if (pre.previousElementSibling && pre.previousElementSibling.classList.contains("copy")) { return; }
      var b = document.createElement("button");
      b.type = "button"; b.className = "copy"; b.textContent = "Copy";
      b.addEventListener("click", function () {
        if (navigator.clipboard) {
          navigator.clipboard.writeText(pre.textContent).then(function () { b.textContent = "Copied"; });
        }
      });
      pre.parentNode.insertBefore(b, pre);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    fillKeys();
    addCopyButtons();
  });
  document.addEventListener("htmx:afterSettle", function () { fillKeys(); addCopyButtons(); });
})();
