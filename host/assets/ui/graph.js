// The lineage graph on a dataset's page: cytoscape with the dagre layout, data from
// /ui/datasets/{id}/graph. Upstream and downstream are told apart by line style as well as
// colour; restricted datasets show only their layer.
"use strict";
(function () {
  var cy = null;
  function status(text) {
    var s = document.getElementById("graph-status");
    if (s) { s.textContent = text; }
  }
  function load(box, depth) {
    var id = box.getAttribute("data-dataset");
    status("Loading…");
    fetch("/ui/datasets/" + encodeURIComponent(id) + "/graph?depth=" + depth, { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("the lake answered " + r.status); }
        return r.json();
      })
      .then(function (g) { draw(box, g); })
      .catch(function (e) { status("The graph could not be loaded: " + e.message); });
  }
  function draw(box, g) {
    var elements = [];
    g.nodes.forEach(function (n) {
      var cls = n.restricted ? "restricted" : (n.distance < 0 ? "up" : (n.distance > 0 ? "down" : "self"));
      elements.push({ data: { id: n.id, label: n.restricted ? "restricted (" + n.layer + ")" : n.name + "\n" + n.layer, restricted: n.restricted }, classes: cls });
    });
    g.edges.forEach(function (e, i) {
      elements.push({ data: { id: "e" + i, source: e.from, target: e.to, label: e.action } });
    });
    if (cy) { cy.destroy(); }
    if (window.cytoscapeDagre && window.cytoscape && !window.cytoscape.__lakeDagre) {
      try { window.cytoscape.use(window.cytoscapeDagre); } catch (e) { /* registered already */ }
      window.cytoscape.__lakeDagre = true;
    }
    cy = window.cytoscape({
      container: box,
      elements: elements,
      wheelSensitivity: 0.3,
      style: [
        { selector: "node", style: { "label": "data(label)", "text-wrap": "wrap", "text-max-width": 160, "font-size": 11,
          "text-valign": "bottom", "text-margin-y": 4, "background-color": "#fff", "border-width": 3,
          "border-color": "#0072b2", "width": 26, "height": 26 } },
        { selector: "node.self", style: { "border-color": "#1b1f24", "border-width": 5, "background-color": "#56b4e9" } },
        { selector: "node.down", style: { "border-color": "#009e73", "border-style": "dashed" } },
        { selector: "node.restricted", style: { "border-color": "#888", "border-style": "dotted", "background-color": "#eee" } },
        { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 2,
          "line-color": "#8a96a3", "target-arrow-color": "#8a96a3", "label": "data(label)", "font-size": 9, "color": "#5a6270" } },
        { selector: ".faded", style: { "opacity": 0.25 } }
      ],
      layout: { name: window.cytoscapeDagre ? "dagre" : "breadthfirst", rankDir: "LR", nodeSep: 30, rankSep: 80 }
    });
    cy.on("tap", "node", function (e) {
      var n = e.target;
      if (!n.data("restricted") && n.id() !== box.getAttribute("data-dataset")) {
        window.location.href = "/ui/datasets/" + encodeURIComponent(n.id());
      }
    });
    cy.on("mouseover", "node", function (e) {
      var keep = e.target.predecessors().union(e.target.successors()).union(e.target);
      cy.elements().difference(keep).addClass("faded");
    });
    cy.on("mouseout", "node", function () { cy.elements().removeClass("faded"); });
    box.setAttribute("data-nodes", String(g.nodes.length));
    box.setAttribute("data-edges", String(g.edges.length));
    status(g.nodes.length + " datasets, " + g.edges.length + " links, depth " + g.depth +
      (g.hidden ? "; " + g.hidden + " restricted" : "") + ". Click a dataset to open it.");
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("graph");
    if (!box || !window.cytoscape) { return; }
    var depth = document.getElementById("depth");
    load(box, depth ? depth.value : 2);
    if (depth) {
      depth.addEventListener("change", function () { load(box, depth.value); });
    }
  });
})();
