"use strict";
(function () {
  var POOL = JSON.parse(document.getElementById("image-pool").textContent);
  function data(id) { return JSON.parse(document.getElementById(id).textContent); }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { e.appendChild(c); });
    return e;
  }
  function thumb(pool, i, cls, title) {
    var img = el("img", {"class": cls || "thumb", alt: "image " + i, title: title || ("image " + i)});
    var src = (POOL[pool] || {})[i];
    if (src) img.src = src;
    return img;
  }
  function fillImages(root) {
    root.querySelectorAll("img[data-pool]").forEach(function (img) {
      var src = (POOL[img.dataset.pool] || {})[img.dataset.i];
      if (src) img.src = src;
    });
  }

  // ---------------------------------------------------------------- sortable tables
  function cellValue(td) {
    var t = td.textContent.trim(), x = parseFloat(t);
    return (t !== "" && !isNaN(x) && isFinite(t)) ? x : t.toLowerCase();
  }
  function makeSortable(table) {
    var ths = table.querySelectorAll("thead th");
    ths.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("asc");
        ths.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  // ---------------------------------------------------------------- split viewer
  function splitViewer(root) {
    var d = data(root.dataset.src), at = 0;
    var title = el("span", {"class": "viewer-title"});
    var count = el("span", {"class": "viewer-count note"});
    var prev = el("button", {"class": "viewer-prev", type: "button", text: "\u2190 previous"});
    var next = el("button", {"class": "viewer-next", type: "button", text: "next \u2192"});
    var select = el("select", {"class": "viewer-select"});
    d.splits.forEach(function (s, i) { select.appendChild(el("option", {value: i, text: s.name})); });
    var body = el("div", {"class": "viewer-body"});
    root.appendChild(el("div", {"class": "viewer-bar"}, [prev, next, select, count]));
    root.appendChild(title);
    root.appendChild(body);
    var headings = {train: "Train side: columns = true class",
                    test: "Test side: columns = true class",
                    mistakes: "The learner's mistakes on the test side: columns = predicted class"};
    function show(i) {
      at = Math.max(0, Math.min(d.splits.length - 1, i));
      var s = d.splits[at];
      select.value = String(at);
      count.textContent = (at + 1) + " / " + d.splits.length;
      prev.disabled = at === 0; next.disabled = at === d.splits.length - 1;
      title.textContent = s.name + " \u2014 " + s.info;
      body.innerHTML = "";
      ["train", "test", "mistakes"].forEach(function (side) {
        if (!s.panels[side]) return;
        var panel = el("div", {"class": "panel " + side}, [el("h4", {text: headings[side]})]);
        var cols = el("div", {"class": "classes"});
        s.panels[side].forEach(function (pair) {
          var c = pair[0], idx = pair[1], total = pair[2];
          var col = el("div", {"class": "classcol" + (s.positive.indexOf(c) >= 0 ? " pos" : "")},
                       [el("div", {"class": "cname", text: (s.positive.indexOf(c) >= 0 ? "+ " : "") + d.classes[c] + " (" + total + ")"})]);
          idx.forEach(function (i) { col.appendChild(thumb(d.pool, i)); });
          cols.appendChild(col);
        });
        panel.appendChild(cols);
        body.appendChild(panel);
      });
      root.dataset.current = s.name;
    }
    prev.addEventListener("click", function () { show(at - 1); });
    next.addEventListener("click", function () { show(at + 1); });
    select.addEventListener("change", function () { show(parseInt(select.value, 10)); });
    show(0);
  }

  // ---------------------------------------------------------------- quiz
  var quizzes = [], activeQuiz = null;
  function quiz(root) {
    var d = data(root.dataset.src), state = {};
    d.tasks.forEach(function (t) { state[t.name] = {answers: []}; });
    var select = el("select", {"class": "quiz-task-select"});
    d.tasks.forEach(function (t, i) { select.appendChild(el("option", {value: i, text: t.name + " (" + t.kind + ")"})); });
    var box = el("div", {"class": "quiz-box"});
    var scores = el("table", {"class": "data quiz-scores"});
    scores.appendChild(el("thead", {}, [el("tr", {}, ["task", "kind", "answered", "correct", "score"].map(function (h) { return el("th", {text: h}); }))]));
    var sbody = el("tbody");
    d.tasks.forEach(function (t) {
      var tr = el("tr", {"data-task": t.name});
      [t.name, t.kind, "0 / " + t.questions.length, "0", ""].forEach(function (v, j) {
        tr.appendChild(el("td", {"class": ["q-name", "q-kind", "q-answered", "q-correct", "q-score"][j], text: v}));
      });
      sbody.appendChild(tr);
    });
    scores.appendChild(sbody);
    var kinds = el("p", {"class": "quiz-kinds note"});
    root.appendChild(el("div", {"class": "viewer-bar"}, [el("span", {text: "task"}), select]));
    root.appendChild(box);
    root.appendChild(scores);
    root.appendChild(kinds);
    var current = 0;
    function task() { return d.tasks[current]; }
    function updateScores() {
      var byKind = {};
      d.tasks.forEach(function (t) {
        var a = state[t.name].answers, ok = a.filter(function (x) { return x.correct; }).length;
        var tr = sbody.querySelector('tr[data-task="' + t.name + '"]');
        tr.querySelector(".q-answered").textContent = a.length + " / " + t.questions.length;
        tr.querySelector(".q-correct").textContent = String(ok);
        tr.querySelector(".q-score").textContent = a.length ? (ok / a.length).toFixed(2) : "";
        if (a.length) { (byKind[t.kind] = byKind[t.kind] || []).push(ok / a.length); }
      });
      kinds.textContent = Object.keys(byKind).map(function (k) {
        var v = byKind[k]; return k + ": " + (v.reduce(function (s, x) { return s + x; }, 0) / v.length).toFixed(2);
      }).join(" \u00b7 ");
    }
    function render(feedback) {
      var t = task(), st = state[t.name], n = st.answers.length;
      box.innerHTML = "";
      var ex = el("div", {"class": "quiz-examples"});
      t.classes.forEach(function (c) {
        var col = el("div", {}, [el("div", {"class": "note", text: "examples of " + c})]);
        t.examples[c].forEach(function (i) { col.appendChild(thumb(d.pool, i)); });
        ex.appendChild(col);
      });
      box.appendChild(ex);
      var status = el("p", {"class": "quiz-status"});
      if (n < t.questions.length) {
        var q = t.questions[n];
        var buttons = t.classes.map(function (c) {
          var b = el("button", {"class": "quiz-answer quiz-" + c, type: "button", text: String(c)});
          b.addEventListener("click", function () { answer(c); });
          return b;
        });
        box.appendChild(el("div", {"class": "quiz-question"}, [thumb(d.pool, q.i, "big", "which class?")].concat(buttons)));
        status.textContent = "image " + (n + 1) + " of " + t.questions.length + ": press " + t.classes.join(" or ") + " (keys or buttons)" + (feedback ? " \u2014 " + feedback : "");
      } else {
        var ok = st.answers.filter(function (x) { return x.correct; }).length;
        status.className = "quiz-status quiz-done";
        status.textContent = "done: " + ok + " of " + n + " correct (" + (ok / n).toFixed(2) + ")" + (feedback ? " \u2014 " + feedback : "");
      }
      box.appendChild(status);
      root.dataset.task = t.name;
    }
    function answer(c) {
      var t = task(), st = state[t.name], n = st.answers.length;
      if (n >= t.questions.length) return;
      var right = t.questions[n].label === c;
      st.answers.push({answer: c, correct: right});
      updateScores();
      render(right ? "last answer correct" : "last answer wrong (it was " + t.questions[n].label + ")");
    }
    select.addEventListener("change", function () { current = parseInt(select.value, 10); render(""); });
    root.addEventListener("mousedown", function () { activeQuiz = api; });
    root.addEventListener("focusin", function () { activeQuiz = api; });
    var api = {answer: answer, root: root, classes: function () { return task().classes; }};
    quizzes.push(api);
    updateScores();
    render("");
  }
  document.addEventListener("keydown", function (ev) {
    var q = activeQuiz || quizzes[0];
    if (!q || ev.target.tagName === "SELECT" || ev.target.tagName === "INPUT") return;
    var c = parseInt(ev.key, 10);
    if (!isNaN(c) && q.classes().indexOf(c) >= 0) { q.answer(c); ev.preventDefault(); }
  });

  fillImages(document);
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  document.querySelectorAll(".split-viewer").forEach(splitViewer);
  document.querySelectorAll(".quiz").forEach(quiz);
  document.body.dataset.ready = "1";
})();
