/*
 * dashboard.js: moi server's pages (my jobs, a job, submit, operations). No build step.
 *
 * Live data comes over the websocket (moi.connect in moi.js) for the user's own tree,
 * and from the HTTP API (/api/v1/, the login cookie plus Tornado's XSRF token) for the
 * rest. Every text goes in with textContent, never as HTML; links to a job's own
 * result page go through moi.siteLink (this site only, nothing a browser would rewrite).
 *
 * The jobs table draws only the rows in view (fixed row height), so it stays quick
 * with thousands of jobs; it re-draws at most once per animation frame.
 */
(function (global) {
  "use strict";

  var doc = global.document;
  var FINISHED = { Success: true, Failed: true, Cancelled: true, Archived: true, Expired: true };
  var PHASES = { Queued: true, Paused: true, Preprocessing: true, Running: true, Postprocessing: true };
  var ROW_HEIGHT = 36;   // px; the CSS sets the same (.moi-viewport .moi-row)
  var OVERSCAN = 8;      // rows drawn beyond the view on each side

  // helpers ---------------------------------------------------------------------

  function el(tag, className, text) {
    var node = doc.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function button(text, className, onClick) {
    var node = el("button", className, text);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  }

  // What cannot be undone asks once more on the button itself: a first click arms it, a second acts.
  function confirmButton(text, className, onConfirm) {
    var node = button(text, className, function () {
      if (node.dataset.armed === "true") { onConfirm(); return; }
      node.dataset.armed = "true";
      node.textContent = text + "? (click again to confirm)";
      global.setTimeout(function () { node.dataset.armed = "false"; node.textContent = text; }, 8000);
    });
    return node;
  }

  function xsrf() {
    var found = /(?:^|;\s*)_xsrf=([^;]*)/.exec(doc.cookie);
    return found ? decodeURIComponent(found[1]) : "";
  }

  // One API call; resolves with the JSON answer (null for 204), rejects with an Error holding the API's text.
  function api(method, path, body) {
    var init = { method: method, headers: { "X-XSRFToken": xsrf() }, credentials: "same-origin" };
    if (body instanceof global.FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    return global.fetch("/api/v1" + path, init).then(function (answer) {
      if (answer.status === 204) { return null; }
      return answer.json().then(function (value) {
        if (!answer.ok) {
          var error = new Error(value && value.error ? value.error : answer.statusText);
          error.status = answer.status;
          throw error;
        }
        return value;
      });
    });
  }

  // moi writes its times as the server's local time without a zone ("2015-06-01 15:46:49.977480"); the page
  // is told the server's UTC offset (minutes, base.html), so a reader elsewhere sees the right moment.
  var SERVER_OFFSET = Number(doc.body.dataset.utcOffset);
  var NAIVE_TIME = /^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?$/;

  function parseDate(text) {
    if (typeof text !== "string" || !text) { return null; }
    var found = NAIVE_TIME.exec(text), date;
    if (found && isFinite(SERVER_OFFSET)) {
      var parts = found.slice(1, 7).map(Number), millis = Number(((found[7] || "") + "000").slice(0, 3));
      date = new Date(Date.UTC(parts[0], parts[1] - 1, parts[2], parts[3], parts[4], parts[5], millis) - SERVER_OFFSET * 60000);
    } else {
      date = new Date(text.replace(" ", "T").slice(0, 23));
    }
    return isNaN(date.getTime()) ? null : date;
  }

  // A time as the reader's local time with its zone ("21:40:03 CET"; another day's with its date).
  function localTime(date) {
    var today = new Date();
    var time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
    return date.toDateString() === today.toDateString() ? time : date.toLocaleDateString() + " " + time;
  }

  function utcTime(date) { return date.toISOString().replace("T", " ").slice(0, 19) + " UTC"; }

  function shortDate(text) {
    var date = parseDate(text);
    return date ? localTime(date) : "";
  }

  // A node showing a time: local with the zone, UTC on hover (its title).
  function timed(node, date) {
    if (!date) { return node; }
    node.textContent = localTime(date);
    node.title = utcTime(date);
    node.classList.add("moi-time");
    return node;
  }

  function seconds(info, now) {
    var start = parseDate(info.date_start);
    if (!start) { return null; }
    var end = parseDate(info.date_end) || (FINISHED[info.status] ? null : now);
    return end ? Math.max(0, (end - start) / 1000) : null;
  }

  function formatSeconds(value) {
    if (value === null) { return ""; }
    if (value < 60) { return value.toFixed(1) + " s"; }
    var minutes = Math.floor(value / 60);
    if (minutes < 60) { return minutes + " min " + Math.floor(value % 60) + " s"; }
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  // A status text that reports how far a job is ("40%", "step 2 of 5", "3/10"): the fraction done.
  function fraction(text) {
    var found = /(\d+(?:\.\d+)?)\s*%/.exec(text);
    if (found) { return Math.min(1, parseFloat(found[1]) / 100); }
    found = /\b(\d+)\s*(?:\/|of)\s*(\d+)\b/.exec(text);
    if (found && Number(found[2]) > 0) { return Math.min(1, Number(found[1]) / Number(found[2])); }
    return null;
  }

  // The state a status is in: a running job's status is its own text (status_update).
  function phase(info) {
    var status = String(info.status || "");
    return FINISHED[status] || PHASES[status] ? status : "Running";
  }

  function engineHost(engine) { return typeof engine === "string" ? engine.replace(/:\d+$/, "") : ""; }

  function progress(info) {
    var done = phase(info) === "Running" ? fraction(String(info.status || "")) : null;
    if (done === null) { return null; }
    var bar = el("span", "moi-bar-track");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuenow", String(Math.round(done * 100)));
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    var fill = el("span", "moi-bar-fill");
    fill.style.width = (done * 100).toFixed(1) + "%";
    bar.appendChild(fill);
    return bar;
  }

  function jobLink(id) { return "/jobs/" + encodeURIComponent(id); }

  // A finished job's result link, only when this server serves it (moi.servedLink): never a 404.
  function resultLink(info, ready) { return moi.servedLink(info, ready); }

  // A duration as moi's options write it: 900 -> "15m", 90 -> "90s" (moi.core.policy.shown).
  function duration(value) {
    var units = [["w", 604800], ["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
    for (var i = 0; i < units.length; i++) {
      if (value >= units[i][1] && value % units[i][1] === 0) { return (value / units[i][1]) + units[i][0]; }
    }
    return value + "s";
  }

  // Resources as moi.core.resources.shown writes them: "cores=4 memory=128G walltime=12:00:00 partition=long".
  var RESOURCE_NAMES = ["cores", "memory", "walltime", "nodes", "gpus", "partition", "account"];
  function resourcesText(asked) {
    return RESOURCE_NAMES.filter(function (name) { return asked[name] !== undefined && asked[name] !== null; })
      .map(function (name) {
        var value = asked[name];
        if (name === "memory" && typeof value === "number") { value = value % 1024 === 0 ? (value / 1024) + "G" : value + "M"; }
        if (name === "walltime" && typeof value === "number") { value = clock(value); }
        return name + "=" + value;
      }).join(" ");
  }

  function clock(seconds) {  // HH:MM:SS, hours past 24 as they are
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(Math.floor(seconds / 3600)) + ":" + two(Math.floor(seconds / 60) % 60) + ":" + two(seconds % 60);
  }

  // What a job's time limit and retries say now: "time limit 15m · attempt 2 of 4 · next attempt at 12:00:03 (in 4 s)".
  function policyLine(info, now) {
    var parts = [];
    if (typeof info.time_limit === "number") {
      var soft = typeof info.soft_time_limit === "number" ? " (soft " + duration(info.soft_time_limit) + ")" : "";
      parts.push("time limit " + duration(info.time_limit) + soft);
    }
    if (typeof info.max_attempts === "number") {
      parts.push("attempt " + (info.attempt || 1) + " of " + info.max_attempts + (info.idempotent ? ", idempotent" : ""));
    }
    if (typeof info.retry_at === "number" && info.status === "Queued") {
      var at = new Date(info.retry_at * 1000), left = Math.max(0, Math.round((at - now) / 1000));
      parts.push("next attempt at " + localTime(at) + (left > 0 ? " (in " + formatSeconds(left) + ")" : " (due)"));
    }
    return parts.join(" · ");
  }

  // The earlier attempts, oldest first: how each ended, its traceback or reason.
  function attemptItem(attempt) {
    var item = el("li", "moi-attempt");
    var where = attempt.engine ? " · on " + engineHost(attempt.engine) : "";
    var head = item.appendChild(el("span", "moi-attempt-head", "Attempt " + attempt.attempt + where));
    var ended = parseDate(attempt.date_end);
    if (ended) { head.appendChild(doc.createTextNode(" · ended ")); head.appendChild(timed(el("span"), ended)); }
    item.appendChild(el("pre", "moi-traceback", String(attempt.result === null || attempt.result === undefined ? "" : attempt.result)));
    return item;
  }

  // the jobs table ----------------------------------------------------------------

  var COLUMNS = [
    { key: "name", title: "Name", value: function (i) { return String(i.name || ""); } },
    { key: "service", title: "Service", value: function (i) { return String(i.service || ""); } },
    { key: "status", title: "Status", value: function (i) { return String(i.status || ""); } },
    { key: "date_created", title: "Created", value: function (i) { return String(i.date_created || ""); } },
    { key: "date_start", title: "Started", value: function (i) { return String(i.date_start || ""); } },
    { key: "duration", title: "Duration", value: function (i) { var s = seconds(i, new Date()); return s === null ? -1 : s; } },
    { key: "engine", title: "Engine", value: function (i) { return engineHost(i.engine); } }
  ];
  var USER_COLUMN = { key: "user", title: "User", value: function (i) { return String(i.user || ""); } };

  // A table of jobs in `root` (its .moi-filters, .moi-thead and .moi-viewport); options.actions(info) gives a
  // row's buttons. table.put(info) / table.drop(id) / table.replace(list) change what it holds.
  // options.userColumn adds the jobs' user; options.onSearch(), when given, searches on the server whenever a
  // filter changes (the table then shows what it is given, unfiltered), and options.count(shown) says the count.
  function JobTable(root, options) {
    var columns = options.userColumn ? [COLUMNS[0], USER_COLUMN].concat(COLUMNS.slice(1)) : COLUMNS;
    var jobs = {};          // id -> info
    var order = [];         // ids shown, filtered and sorted
    var drawn = {};         // id -> {row, revision, tick} of the rows in the DOM
    var sort = { key: "date_created", down: true };
    var viewport = root.querySelector(".moi-viewport");
    var spacer = el("div", "moi-spacer");
    var filters = root.querySelector(".moi-filters");
    var pending = false;    // a draw is asked for the next animation frame
    var stale = true;       // the order must be filtered and sorted again before that draw
    var services = {};
    viewport.appendChild(spacer);

    function filterValue(name) { var field = filters.elements[name]; return field ? field.value : ""; }

    function wanted(info) {
      if (options.onSearch) { return !options.within || options.within(info); }  // the server filtered them
      var status = filterValue("status"), service = filterValue("service"), text = filterValue("q").toLowerCase();
      if (status && phase(info) !== status) { return false; }
      if (service === "-" && info.service) { return false; }
      if (service && service !== "-" && info.service !== service) { return false; }
      if (text && String(info.name || "").toLowerCase().indexOf(text) < 0) { return false; }
      return true;
    }

    function recompute() {
      var column = columns.filter(function (c) { return c.key === sort.key; })[0];
      var listed = Object.keys(jobs).filter(function (id) { return !options.within || options.within(jobs[id]); });
      order = listed.filter(function (id) { return wanted(jobs[id]); });
      order.sort(function (a, b) {
        var x = column.value(jobs[a]), y = column.value(jobs[b]);
        var result = x < y ? -1 : x > y ? 1 : (a < b ? -1 : 1);
        return sort.down ? -result : result;
      });
      spacer.style.height = (order.length * ROW_HEIGHT) + "px";
      var count = root.querySelector(".moi-count");
      if (count) {  // what the table can show
        count.textContent = options.count ? options.count(order.length) : order.length + " of " + listed.length + " jobs";
      }
      var empty = doc.querySelector(".moi-empty");
      if (empty) { empty.hidden = listed.length > 0; }
    }

    function cell(className, text) { var node = el("span", className, text); node.setAttribute("role", "cell"); return node; }

    function fill(row, info) {
      row.replaceChildren();
      var name = cell("moi-name-cell");
      var link = el("a", "moi-name", info.name);
      link.href = jobLink(info.id);
      name.appendChild(link);
      row.appendChild(name);
      if (options.userColumn) { row.appendChild(cell("moi-user", info.user || "")); }
      row.appendChild(cell("moi-service", info.service || ""));
      var status = cell("moi-status-cell");
      status.appendChild(el("span", "moi-status", info.status));
      var bar = progress(info);
      if (bar) { status.appendChild(bar); }
      row.appendChild(status);
      row.appendChild(timed(cell("moi-created"), parseDate(info.date_created)));
      row.appendChild(timed(cell("moi-started"), parseDate(info.date_start)));
      row.appendChild(cell("moi-duration", formatSeconds(seconds(info, new Date()))));
      row.appendChild(cell("moi-engine", engineHost(info.engine)));
      var actions = cell("moi-row-actions");
      (options.actions ? options.actions(info) : []).forEach(function (node) { actions.appendChild(node); });
      row.appendChild(actions);
    }

    function draw() {
      pending = false;
      if (stale) { stale = false; recompute(); }
      var first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
      var last = Math.min(order.length, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW_HEIGHT) + OVERSCAN);
      var keep = {};
      for (var index = first; index < last; index += 1) {
        var id = order[index], info = jobs[id], known = drawn[id];
        keep[id] = true;
        if (!known) {
          known = drawn[id] = { row: el("div", "moi-row"), revision: -1 };
          known.row.dataset.id = id;
          known.row.setAttribute("role", "row");
          viewport.appendChild(known.row);
        }
        if (known.revision !== info.revision) {
          known.row.dataset.status = String(info.status);
          known.row.dataset.phase = phase(info);
          fill(known.row, info);
          known.revision = info.revision;
        } else if (!FINISHED[info.status] && info.date_start) {  // only the duration ticks: buttons stay put
          known.row.querySelector(".moi-duration").textContent = formatSeconds(seconds(info, new Date()));
        }
        known.row.style.transform = "translateY(" + (index * ROW_HEIGHT) + "px)";
      }
      Object.keys(drawn).forEach(function (id) {
        if (!keep[id]) { drawn[id].row.remove(); delete drawn[id]; }
      });
      inOrder(order.slice(first, last));
    }

    // The rows' DOM order follows the table's (for the keyboard and screen readers); moved only when it differs.
    function inOrder(ids) {
      var rows = viewport.querySelectorAll(".moi-row");
      var same = rows.length === ids.length && ids.every(function (id, index) { return rows[index].dataset.id === id; });
      if (!same) { ids.forEach(function (id) { viewport.appendChild(drawn[id].row); }); }
    }

    // Sorting is once per frame, not once per job: 5,000 jobs arriving at once sort once, not 5,000 times.
    function soon(again) {
      if (again) { stale = true; }
      if (!pending) { pending = true; global.requestAnimationFrame(draw); }
    }

    function header() {
      var head = root.querySelector(".moi-thead");
      head.replaceChildren();
      columns.forEach(function (column) {
        var cellNode = el("span", "moi-th");
        cellNode.setAttribute("role", "columnheader");
        var arrow = sort.key === column.key ? (sort.down ? " ▼" : " ▲") : "";
        cellNode.setAttribute("aria-sort", sort.key === column.key ? (sort.down ? "descending" : "ascending") : "none");
        cellNode.appendChild(button(column.title + arrow, "moi-sort", function () {
          sort = { key: column.key, down: sort.key === column.key ? !sort.down : column.key !== "name" };
          header();
          soon(true);
        }));
        head.appendChild(cellNode);
      });
      head.appendChild(el("span", "moi-th", ""));
    }

    function noteService(info) {
      if (!info.service || services[info.service]) { return; }
      services[info.service] = true;
      var select = filters.elements.service;
      if (select) { select.appendChild(el("option", null, info.service)); }
    }

    filters.addEventListener("input", function () {
      viewport.scrollTop = 0;
      if (options.onSearch) { options.onSearch(); }
      soon(true);
    });
    viewport.addEventListener("scroll", function () { soon(false); });
    global.addEventListener("resize", function () { soon(false); });
    global.setInterval(function () { soon(false); }, 1000);  // running jobs' durations tick
    header();
    soon(true);

    return {
      put: function (info) {
        var known = jobs[info.id];
        if (known && (known.revision || 0) > (info.revision || 0)) { return; }  // stale: keep the newer state
        jobs[info.id] = info;
        if (drawn[info.id]) { drawn[info.id].revision = -1; }
        noteService(info);
        soon(true);
      },
      drop: function (id) {
        if (!jobs[id]) { return; }
        delete jobs[id];
        if (drawn[id]) { drawn[id].row.remove(); delete drawn[id]; }
        soon(true);
      },
      replace: function (list) {
        jobs = {};
        list.forEach(function (info) { jobs[info.id] = info; noteService(info); });
        Object.keys(drawn).forEach(function (id) { drawn[id].revision = -1; });
        soon(true);
      },
      redraw: function () {  // every row drawn again (what its buttons and links depend on changed)
        Object.keys(drawn).forEach(function (id) { drawn[id].revision = -1; });
        soon(false);
      },
      has: function (id) { return !!jobs[id]; },
      size: function () { return Object.keys(jobs).length; }
    };
  }

  function focusSearchOnSlash(form) {
    doc.addEventListener("keydown", function (event) {
      var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(String(doc.activeElement && doc.activeElement.tagName));
      if (event.key === "/" && !typing) { event.preventDefault(); form.elements.q.focus(); }
    });
  }

  // My jobs ------------------------------------------------------------------------

  function jobsPage(root) {
    var nodes = {};  // every node of the tree: groups too, to tell a service job's steps from jobs
    var group = root.dataset.group || "";
    var client;

    function isStep(info) { var parent = nodes[info.parent]; return !!parent && parent.type === "job"; }

    function under(info) {
      for (var at = info, hops = 0; at && hops < 64; at = nodes[at.parent], hops += 1) {
        if (at.parent === group) { return true; }
      }
      return false;
    }

    function redraw() { table.redraw(); }

    var table = JobTable(root, {
      within: function (info) { return !isStep(info) && (!group || under(info)); },
      actions: function (info) {
        var found = [];
        var href = resultLink(info, redraw);
        if (href) { var result = el("a", "moi-result", "result"); result.href = href; found.push(result); }
        if (FINISHED[info.status] && info.files && info.files.count) {
          var files = el("a", "moi-files", "files (" + info.files.count + ")");
          files.href = "/moi-files/" + encodeURIComponent(info.id) + "/";
          found.push(files);
        }
        if (!FINISHED[info.status]) { found.push(button("Cancel", "moi-cancel", function () { client.cancel([info.id]); })); }
        found.push(confirmButton("Delete", "moi-delete", function () { client.remove([info.id]); }));
        return found;
      }
    });

    function show(info) {
      if (!info || typeof info.id !== "string") { return; }
      nodes[info.id] = info;
      if (info.type === "job") { table.put(info); }
      if (info.type === "group" && Array.isArray(info.jobs)) {  // children gone while offline go too
        var present = {};
        info.jobs.forEach(function (id) { present[id] = true; });
        Object.keys(nodes).forEach(function (id) {
          if (nodes[id].parent === info.id && !present[id]) { gone(nodes[id]); }
        });
      }
    }

    function gone(info) {
      if (!info || typeof info.id !== "string") { return; }
      delete nodes[info.id];
      table.drop(info.id);
      Object.keys(nodes).forEach(function (id) { if (nodes[id] && nodes[id].parent === info.id) { gone(nodes[id]); } });
    }

    var viewport = root.querySelector(".moi-viewport");
    client = moi.connect({
      onAdd: show, onUpdate: show, onGet: show, onRemove: gone,
      onError: function (text) { global.console.warn("moi: " + text); },
      onOpen: function () { viewport.dataset.connected = "true"; },
      onClose: function () { viewport.dataset.connected = "false"; }
    });
    var form = root.querySelector(".moi-filters"), bulk = root.querySelector(".moi-bulk");
    if (group) {
      bulk.hidden = true;  // the server filters by a direct group only; this page shows the groups under it too
    } else {
      bulkBar(bulk, form, function () {  // what the table shows: its filters as the API takes them (q: the name)
        var body = { status: form.elements.status.value, service: form.elements.service.value, name: form.elements.q.value };
        Object.keys(body).forEach(function (key) { if (!body[key]) { delete body[key]; } });
        return body;
      }, function () { /* the websocket brings the changes */ });
    }
    focusSearchOnSlash(form);
    return { table: table, client: client };
  }

  // One job -----------------------------------------------------------------------

  // A job's page; with data-api and data-socket (an anonymous job's secret link, /r/ID/SECRET) it reads
  // that job only, through them, and offers no action and no link to anything else.
  function jobPage(root) {
    var id = root.dataset.id;
    var linked = !!root.dataset.api;
    var base = linked ? root.dataset.api.replace(/^\/api\/v1/, "") : "/jobs/" + encodeURIComponent(id);
    var filesBase = linked ? root.dataset.api + "/files/" : "/moi-files/" + encodeURIComponent(id) + "/";
    var info = null;
    var steps = {};
    var polling = null;
    var logFollowed = false;
    var filesAsked = false;
    var client;

    function say(text) { root.querySelector(".moi-message").textContent = text || ""; }

    function act(verb) {
      return function () {
        var call = verb === "delete" ? api("DELETE", "/jobs/" + encodeURIComponent(id))
          : api("POST", "/jobs/" + encodeURIComponent(id) + "/" + verb);
        call.then(function (answer) {
          if (verb === "delete") { global.location.assign("/"); return; }
          if (verb === "relaunch") { global.location.assign(jobLink(answer.id)); return; }
          if (answer && answer.id === id) { show(answer); }
          say(verb + ": done");
        }, function (error) { say(error.message); });
      };
    }

    function actions() {
      var box = root.querySelector(".moi-actions");
      box.replaceChildren();
      if (linked) { return; }
      var state = phase(info);
      if (!FINISHED[info.status]) { box.appendChild(button("Cancel", "moi-cancel", act("cancel"))); }
      if (state === "Queued") { box.appendChild(button("Pause", "moi-pause", act("pause"))); }
      if (state === "Paused") { box.appendChild(button("Resume", "moi-resume", act("resume"))); }
      if (FINISHED[info.status]) { box.appendChild(button("Relaunch", "moi-relaunch", act("relaunch"))); }
      box.appendChild(confirmButton("Delete", "moi-delete", act("delete")));
      var href = resultLink(info, actions);
      if (href) { var link = el("a", "moi-result", "result page"); link.href = href; box.appendChild(link); }
    }

    function jobAnchor(other, className) {
      var link = el("a", className, other.slice(0, 8));
      link.href = jobLink(other);
      link.title = other;
      return link;
    }

    function lineage() {  // a relaunch and its original link each other
      var box = root.querySelector(".moi-lineage");
      var later = Array.isArray(info.relaunched_as) ? info.relaunched_as : [];
      box.replaceChildren();
      if (linked) { box.hidden = true; return; }
      if (typeof info.relaunch_of === "string") {
        box.appendChild(doc.createTextNode("relaunch of "));
        box.appendChild(jobAnchor(info.relaunch_of, "moi-relaunch-of"));
      }
      later.forEach(function (other, index) {
        var lead = index ? ", " : (box.childNodes.length ? "; relaunched as " : "relaunched as ");
        box.appendChild(doc.createTextNode(lead));
        box.appendChild(jobAnchor(String(other), "moi-relaunched-as"));
      });
      if (typeof info.relaunch_count === "number" && info.relaunch_count > later.length) {
        box.appendChild(doc.createTextNode(" (the newest " + later.length + " of " + info.relaunch_count + ")"));
      }
      box.hidden = !box.childNodes.length;
    }

    // What the job runs (its info's "ran", bounded and redacted by moi.jobs.ran), as text: a function with
    // its arguments, a command, or a service with its parameters.
    function ran() {
      var what = info.ran && typeof info.ran === "object" ? info.ran : null;
      var list = root.querySelector(".moi-ran");
      list.replaceChildren();
      root.querySelector(".moi-ran-box").hidden = !what;
      if (!what) { return; }
      function entry(term, className, value) {
        list.appendChild(el("dt", null, term));
        var detail = list.appendChild(el("dd", className));
        if (value instanceof global.Node) { detail.appendChild(value); } else { detail.appendChild(el("pre", null, value)); }
      }
      function named(values) {  // keywords or parameters: name = value, one a line, by name (Redis keeps no order)
        var table = el("table", "moi-ran-named");
        Object.keys(values).sort().forEach(function (key) {
          var row = table.appendChild(el("tr"));
          row.appendChild(el("th", null, key));
          var value = values[key];
          row.appendChild(el("td")).appendChild(el("pre", null, typeof value === "string" ? value : JSON.stringify(value)));
        });
        return table;
      }
      if (typeof what.function === "string") {
        entry("Function", "moi-ran-function", what.function);
        var args = Array.isArray(what.args) ? what.args : [];
        var ordered = el("ol", "moi-ran-args");
        args.forEach(function (arg) { ordered.appendChild(el("li")).appendChild(el("pre", null, arg)); });
        if (args.length) { entry("Arguments", "moi-ran-args-box", ordered); }
        if (what.kwargs && Object.keys(what.kwargs).length) { entry("Keywords", "moi-ran-kwargs", named(what.kwargs)); }
      } else if (typeof what.command === "string") {
        entry(what.cmd_type === "system" ? "Shell command" : "Python code", "moi-ran-command", what.command);
      } else if (typeof what.service === "string") {
        entry("Service", "moi-ran-service", what.service);
        if (what.params && Object.keys(what.params).length) { entry("Parameters", "moi-ran-params", named(what.params)); }
      }
    }

    function fields() {
      var body = root.querySelector(".moi-fields tbody");
      body.replaceChildren();
      Object.keys(info).sort().filter(function (key) { return key !== "result" && key !== "ran"; }).forEach(function (key) {
        var row = el("tr");
        row.appendChild(el("th", null, key));
        var value = info[key], date = /^date_/.test(key) ? parseDate(value) : null;
        var shown = el("td", null, typeof value === "object" && value !== null ? JSON.stringify(value) : value);
        if (date) { shown.replaceChildren(timed(el("span"), date), doc.createTextNode(" (" + value + ")")); }
        row.appendChild(shown);
        body.appendChild(row);
      });
    }

    function result() {
      var failed = info.status === "Failed";
      var resultBox = root.querySelector(".moi-result-box"), traceBox = root.querySelector(".moi-traceback-box");
      traceBox.hidden = !failed;
      resultBox.hidden = failed || !FINISHED[info.status] || info.result === undefined || info.result === null;
      if (failed) { root.querySelector(".moi-traceback").textContent = String(info.result); }
      if (!resultBox.hidden) {
        var value = info.result;
        if (typeof value === "string" && info.result_format === "json") {
          try { value = JSON.parse(value); } catch (error) { /* shown as it is */ }
        }
        var output = commandOutput(value);
        root.querySelector(".moi-result-text").hidden = !!output;
        root.querySelector(".moi-command-output").hidden = !output;
        if (output) {
          root.querySelector(".moi-stdout").textContent = output.stdout;
          root.querySelector(".moi-stderr").textContent = output.stderr;
          root.querySelector(".moi-returncode").textContent = output.code;
        }
        root.querySelector(".moi-result-text").textContent =
          typeof value === "string" ? value : JSON.stringify(value, null, 2);
      }
    }

    function commandOutput(value) {  // a shell command's [stdout, stderr, return code], as text
      if (info.cmd_type !== "system" || !Array.isArray(value) || value.length !== 3) { return null; }
      return { stdout: String(value[0]), stderr: String(value[1]), code: String(value[2]) };
    }

    function attempts() {
      var line = policyLine(info, new Date());
      var earlier = Array.isArray(info.attempts) ? info.attempts : [];
      root.querySelector(".moi-attempts-box").hidden = !line && !earlier.length;
      root.querySelector(".moi-policy").textContent = line;
      root.querySelector(".moi-attempts").replaceChildren.apply(
        root.querySelector(".moi-attempts"), earlier.map(attemptItem));
    }

    // A batch scheduler's job: its kind, id, state and reason; and the resources it asked for, as people write
    // them (memory 128G, walltime 12:00:00; moi.core.resources.shown). Text only.
    function scheduler() {
      var seen = info.scheduler && typeof info.scheduler === "object" ? info.scheduler : null;
      var asked = info.resources && typeof info.resources === "object" ? info.resources : null;
      root.querySelector(".moi-scheduler-box").hidden = !seen && !asked;
      var line = "";
      if (seen) {
        line = String(seen.kind || "scheduler") + (seen.id ? " job " + seen.id : ", not submitted yet");
        if (seen.where) { line += " on " + seen.where; }
        if (seen.state) { line += ": " + seen.state; }
        if (seen.reason) { line += " (" + seen.reason + ")"; }
        if (seen.exit_code !== undefined && seen.exit_code !== null) { line += ", exit code " + seen.exit_code; }
      }
      root.querySelector(".moi-scheduler").textContent = line;
      root.querySelector(".moi-resources").textContent = asked ? resourcesText(asked) : "";
    }

    function drawSteps() {
      var names = Object.keys(steps);
      root.querySelector(".moi-steps-box").hidden = names.length === 0;
      var list = root.querySelector(".moi-steps");
      list.replaceChildren();
      names.map(function (stepId) { return steps[stepId]; })
        .sort(function (a, b) { return String(a.date_created) < String(b.date_created) ? -1 : 1; })
        .forEach(function (step) {
          var item = el("li", "moi-step");
          item.dataset.id = step.id;
          item.dataset.status = String(step.status);
          item.appendChild(el("span", "moi-step-name", step.name));
          item.appendChild(el("span", "moi-status", step.status));
          list.appendChild(item);
        });
    }

    function files() {
      filesAsked = true;
      api("GET", base + "/files").then(function (answer) {
        var list = root.querySelector(".moi-file-list");
        list.replaceChildren();
        var entries = answer.entries.filter(function (entry) { return !entry.is_dir; });
        if (!entries.length) { list.appendChild(el("li", null, "No files.")); }
        entries.forEach(function (entry) {
          var item = el("li", "moi-file");
          var href = filesBase + entry.path.split("/").map(encodeURIComponent).join("/");
          var view = el("a", "moi-file-view", entry.path);
          view.href = href;
          var download = el("a", "moi-file-download", "download");
          download.href = href + "?download=1";
          item.appendChild(view);
          item.appendChild(el("span", "moi-file-size", entry.size + " bytes"));
          item.appendChild(download);
          list.appendChild(item);
        });
      }, function (error) { say(error.message); });
    }

    function show(next) {
      if (!next || (info && (next.revision || 0) < (info.revision || 0))) { return; }
      var wasFinished = info && FINISHED[info.status];
      info = next;
      root.dataset.status = String(info.status);
      Array.prototype.forEach.call(doc.querySelectorAll(".moi-job-name"), function (node) { node.textContent = info.name; });
      root.querySelector(".moi-status").textContent = info.status;
      var bar = progress(info), holder = root.querySelector(".moi-progress");
      holder.hidden = !bar;
      holder.replaceChildren();
      if (bar) { holder.appendChild(bar); }
      actions();
      lineage();
      ran();
      fields();
      attempts();
      scheduler();
      result();
      var hasFiles = !!(info.files && info.files.count);  // asked only when there are some: no 404 to log
      if (hasFiles && (!filesAsked || (FINISHED[info.status] && !wasFinished))) { files(); }
      if (FINISHED[info.status] && polling) { global.clearInterval(polling); polling = null; }
    }

    function onFrame(value) {
      if (!value || typeof value.id !== "string") { return; }
      if (value.id === id) { show(value); return; }
      if (value.parent === id) { steps[value.id] = value; drawSteps(); }
    }

    function onLog(value) {
      if (!value || value.id !== id) { return; }
      var log = root.querySelector(".moi-log");
      if (!logFollowed) { log.textContent = ""; logFollowed = true; }
      if (Array.isArray(value.lines) && value.lines.length) { log.textContent += value.lines.join("\n") + "\n"; }
      if (value.end && !log.textContent) { log.textContent = "No log."; }
    }

    function poll() {  // not in the user's own tree (an admin looking): read it from the API
      api("GET", base).then(show, function (error) { say(error.message); });
    }

    poll();
    global.setInterval(function () {  // a retry's countdown ticks
      if (info && typeof info.retry_at === "number") { root.querySelector(".moi-policy").textContent = policyLine(info, new Date()); }
    }, 1000);
    client = moi.connect({
      autoGet: false,
      path: root.dataset.socket || "/moi-ws/",
      onAdd: onFrame, onUpdate: onFrame, onGet: onFrame,
      onAction: function (action, value) { if (action === "log") { onLog(value); } },
      onError: function () {
        if (!polling) { polling = global.setInterval(poll, 2000); }
      },
      onOpen: function () {
        root.dataset.connected = "true";
        client.send("get", [id]);
        client.send("log", id);
      },
      onClose: function () { root.dataset.connected = "false"; }
    });
    return { client: client };
  }

  // Submit ------------------------------------------------------------------------

  var INPUT_TYPES = { int: "number", float: "number", bool: "checkbox" };

  // The submit form; with data-anonymous="true" (/anonymous, no login) it offers only the services open to
  // all, sends an email address, and goes to the new job's secret link.
  function submitPage(form) {
    var known = {};
    var select = form.elements.service;
    var anonymous = form.dataset.anonymous === "true";

    function say(text) { form.querySelector(".moi-message").textContent = text || ""; }

    function drawParams() {
      var service = known[select.value];
      var box = form.querySelector(".moi-params");
      form.querySelector(".moi-command").hidden = !!service;
      form.querySelector(".moi-inputs").hidden = !service;
      form.querySelector(".moi-service-help").textContent = service ? service.help || "" : "";
      box.hidden = !service || !service.parameters.length;
      Array.prototype.slice.call(box.querySelectorAll("label")).forEach(function (node) { node.remove(); });
      (service ? service.parameters : []).forEach(function (param) {
        var label = el("label", "moi-param", param.name + (param.required ? " (required)" : "") + " ");
        var input = el("input");
        input.name = "param:" + param.name;
        input.type = param.secret ? "password" : INPUT_TYPES[param.type] || "text";
        if (param.type === "float") { input.step = "any"; }
        if (param.type === "bool") { input.checked = !!param.default; } else if (param.default !== null && param.default !== undefined) {
          input.value = String(param.default);
        }
        input.required = !!param.required;
        input.title = param.help || "";
        label.appendChild(input);
        if (param.help) { label.appendChild(el("small", null, " " + param.help)); }
        box.appendChild(label);
      });
    }

    function params(service) {
      var values = {};
      service.parameters.forEach(function (param) {
        var input = form.elements["param:" + param.name];
        if (param.type === "bool") { values[param.name] = input.checked; return; }
        if (input.value === "") { return; }
        values[param.name] = param.type === "int" ? parseInt(input.value, 10)
          : param.type === "float" ? parseFloat(input.value) : input.value;
      });
      return values;
    }

    api("GET", anonymous ? "/anonymous/services" : "/services").then(function (answer) {
      answer.services.forEach(function (service) {
        known[service.name] = service;
        select.appendChild(el("option", null, service.name));
      });
      if (anonymous && !answer.services.length) { say("No service here takes jobs without an account."); }
      drawParams();
    }, function (error) { say(error.message); });

    select.addEventListener("change", drawParams);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var service = known[select.value];
      var body;
      if (service) {
        body = new global.FormData();
        body.append("service", service.name);
        body.append("params", JSON.stringify(params(service)));
        if (form.elements.name.value) { body.append("name", form.elements.name.value); }
        if (anonymous && form.elements.email.value) { body.append("email", form.elements.email.value); }
        Array.prototype.forEach.call(form.elements.input.files, function (file) { body.append("input", file, file.name); });
      } else {
        body = { cmd: form.elements.cmd.value, cmd_type: "python" };
        if (form.elements.name.value) { body.name = form.elements.name.value; }
      }
      say("submitting…");
      api("POST", anonymous ? "/anonymous/jobs" : "/jobs", body).then(function (answer) {
        global.location.assign(anonymous ? answer.link : jobLink(answer.id));
      }, function (error) { say(error.message); });
    });
  }

  // Operations --------------------------------------------------------------------

  function opsPage(root) {
    var all = root.querySelector("#moi-all");
    var search = serverSearch(all, function () { return table; });
    var table = JobTable(all, {
      userColumn: true,
      onSearch: search.soon,
      count: search.count,
      actions: function (info) { var link = el("a", "moi-open", "open"); link.href = jobLink(info.id); return [link]; }
    });
    var form = all.querySelector(".moi-filters");
    bulkBar(all.querySelector(".moi-bulk"), form, function () { return filtersOf(form); }, function () { search.load(true); });

    function say(text) { root.querySelector(".moi-message").textContent = text || ""; }

    function rows(selector, list, cells) {
      var body = root.querySelector(selector + " tbody");
      body.replaceChildren();
      list.forEach(function (item) {
        var row = el("tr");
        cells(item).forEach(function (value) {
          var cellNode = el("td");
          if (value instanceof global.Node) { cellNode.appendChild(value); } else { cellNode.textContent = String(value); }
          row.appendChild(cellNode);
        });
        body.appendChild(row);
      });
    }

    function engines(context, verb) {
      return function () {
        api("POST", "/contexts/" + encodeURIComponent(context) + "/engines/" + verb).then(function (answer) {
          say(context + ": " + answer.engines_wanted + " engine(s) wanted");
        }, function (error) { say(error.message); });
      };
    }

    function contexts() {
      return Promise.all([api("GET", "/contexts"), api("GET", "/queues")]).then(function (answers) {
        var seen = answers[0].contexts, queues = answers[1].queues;
        rows(".moi-contexts", Object.keys(seen).sort(), function (name) {
          var queue = queues[name] || { queued: {}, paused: false };
          var buttons = el("span", "moi-engine-buttons");
          if (seen[name].scalable) {  // the embedded cluster, or one whose cluster file moi finds
            buttons.appendChild(button("Add engine", "moi-add-engine", engines(name, "add")));
            buttons.appendChild(button("Remove engine", "moi-remove-engine", engines(name, "remove")));
          }
          if (seen[name].scheduler) { return schedulerRow(name, seen[name].scheduler, queue); }
          var state = el("span", "moi-state", seen[name].online ? "online" : "offline");
          state.dataset.state = seen[name].online ? "online" : "offline";
          return [name, state, seen[name].engines === null ? "" : seen[name].engines,
            [queue.queued.high, queue.queued.normal, queue.queued.low].join(" / "), queue.paused ? "yes" : "no", buttons];
        });
      });
    }

    // A batch scheduler's context: its kind and where, reachable or not (with the last poll and its error), and
    // moi's jobs pending and running there in the engines' column. Text only: nothing of it becomes markup.
    function schedulerRow(name, seen, queue) {
      var reach = seen.reachable === null ? "not polled yet" : (seen.reachable ? "reachable" : "unreachable");
      var text = seen.kind + " on " + seen.where + ": " + reach;
      if (seen.polled) { text += ", last poll " + String(seen.polled).slice(0, 19); }
      if (seen.error) { text += " (" + seen.error + ")"; }
      var state = el("span", "moi-state moi-scheduler-state", text);
      state.dataset.state = seen.reachable ? "online" : "offline";
      return [name, state, seen.pending + " pending, " + seen.running + " running",
        [queue.queued.high, queue.queued.normal, queue.queued.low].join(" / "), queue.paused ? "yes" : "no", ""];
    }

    function workers() {
      return api("GET", "/workers").then(function (answer) {
        rows(".moi-workers", answer.workers, function (worker) {
          var job = "";
          if (worker.job) { job = el("a", null, worker.job.slice(0, 8)); job.href = jobLink(worker.job); }
          var state = el("span", "moi-state", worker.state);
          state.dataset.state = worker.state;
          return [worker.context, worker.host || "", worker.pid === null ? "" : worker.pid, state, job, worker.done];
        });
      });
    }

    // The chart's plot area inside its 640 x 160 viewBox: room on the left and below for the axes' labels.
    var PLOT = { left: 48, right: 632, top: 8, bottom: 124 };

    function svgNode(tag, attributes, text) {
      var node = doc.createElementNS("http://www.w3.org/2000/svg", tag);
      Object.keys(attributes).forEach(function (name) { node.setAttribute(name, String(attributes[name])); });
      if (text !== undefined) { node.textContent = String(text); }
      return node;
    }

    // Axes: time along the bottom (60 minutes ago to now), jobs per minute up the left (0 to the most).
    function axes(svg, most, count) {
      var axis = { "class": "moi-axis" };
      svg.appendChild(svgNode("line", Object.assign({ x1: PLOT.left, y1: PLOT.bottom, x2: PLOT.right, y2: PLOT.bottom }, axis)));
      svg.appendChild(svgNode("line", Object.assign({ x1: PLOT.left, y1: PLOT.top, x2: PLOT.left, y2: PLOT.bottom }, axis)));
      [[0, PLOT.bottom], [most, PLOT.top + 8]].forEach(function (tick) {
        svg.appendChild(svgNode("text", { x: PLOT.left - 6, y: tick[1], "text-anchor": "end", "class": "moi-axis-label" }, tick[0]));
      });
      [[count, "start"], [count / 2, "middle"], [0, "end"]].forEach(function (tick) {
        var x = PLOT.right - tick[0] / count * (PLOT.right - PLOT.left);
        var label = tick[0] ? "−" + Math.round(tick[0]) + " min" : "now";
        svg.appendChild(svgNode("text", { x: x, y: PLOT.bottom + 16, "text-anchor": tick[1], "class": "moi-axis-label" }, label));
      });
      svg.appendChild(svgNode("text", { x: (PLOT.left + PLOT.right) / 2, y: PLOT.bottom + 32, "text-anchor": "middle",
        "class": "moi-axis-title" }, "time (minutes ago)"));
      svg.appendChild(svgNode("text", { x: 12, y: (PLOT.top + PLOT.bottom) / 2, "text-anchor": "middle", "class": "moi-axis-title",
        transform: "rotate(-90 12 " + (PLOT.top + PLOT.bottom) / 2 + ")" }, "jobs per minute"));
    }

    function chart() {
      return api("GET", "/throughput").then(function (answer) {
        var svg = root.querySelector(".moi-chart");
        var minutes = answer.minutes;
        var most = Math.max.apply(null, [1].concat(minutes.map(function (m) { return (m.Success || 0) + (m.Failed || 0) + (m.Cancelled || 0); })));
        var width = (PLOT.right - PLOT.left) / minutes.length, tall = PLOT.bottom - PLOT.top;
        svg.replaceChildren();
        axes(svg, most, Math.max(1, minutes.length));
        var total = { Success: 0, Failed: 0, Cancelled: 0 };
        minutes.forEach(function (minute, index) {
          var y = PLOT.bottom;
          ["Success", "Failed", "Cancelled"].forEach(function (status) {
            var count = minute[status] || 0;
            total[status] += count;
            if (!count) { return; }
            var height = count / most * tall;
            y -= height;
            svg.appendChild(svgNode("rect", { x: PLOT.left + index * width + 1, y: y, width: Math.max(1, width - 2), height: height,
              "class": "moi-bar-" + status.toLowerCase() }));
          });
        });
        root.querySelector(".moi-chart-note").textContent = total.Success + " succeeded, " + total.Failed +
          " failed, " + total.Cancelled + " cancelled in the last hour (" + most + " at most in a minute)";
      });
    }

    function unloadable() {  // services no engine (or no process reading [moi] services) could import
      return api("GET", "/services/unloadable").then(function (answer) {
        root.querySelector(".moi-unloadable-box").hidden = answer.services.length === 0;
        rows(".moi-unloadable", answer.services, function (service) {
          var when = service.at ? timed(el("span"), new Date(service.at * 1000)) : "";
          return [service.service, service.entry, service.where, when, service.error];
        });
      });
    }

    function refresh() {  // the jobs again only while one page is shown: pages loaded further stay as they are
      Promise.all([contexts(), workers(), chart(), unloadable(), search.pages() <= 1 ? search.load(true) : null]).then(function () {
        root.dataset.loaded = "true";
      }, function (error) { say(error.message); });
    }

    refresh();
    global.setInterval(refresh, 3000);
    focusSearchOnSlash(all.querySelector(".moi-filters"));
    return { table: table };
  }

  // The filters of a search, as the API takes them (GET /jobs's query, the bulk preview's body).
  function filtersOf(form) {
    var found = {};
    ["status", "service", "user", "q", "group"].forEach(function (name) {
      var field = form.elements[name];
      if (field && field.value) { found[name] = field.value; }
    });
    return found;
  }

  // Every user's jobs, searched on the server a page at a time: a filter changed searches again (the newest
  // search wins); "Load more" follows the cursor. A page of a rare search may hold few jobs and a cursor.
  function serverSearch(root, tableOf) {
    var PAGE = 200;
    var state = { cursor: null, pages: 0, generation: 0, timer: null };
    var more = root.querySelector(".moi-more");

    function load(first) {
      var generation = first ? (state.generation += 1) : state.generation;
      var query = filtersOf(root.querySelector(".moi-filters"));
      query.limit = String(PAGE);
      if (!first && state.cursor !== null) { query.cursor = String(state.cursor); }
      var text = Object.keys(query).map(function (key) { return key + "=" + encodeURIComponent(query[key]); }).join("&");
      return api("GET", "/jobs?" + text).then(function (answer) {
        if (generation !== state.generation) { return; }  // a newer search has begun
        if (first) { tableOf().replace(answer.jobs); } else { answer.jobs.forEach(tableOf().put); }
        state.cursor = answer.next;
        state.pages = first ? 1 : state.pages + 1;
        more.hidden = answer.next === null;
        root.dataset.searched = String(state.generation);
      });
    }

    more.addEventListener("click", function () { load(false); });
    return {
      load: load,
      pages: function () { return state.pages; },
      soon: function () {  // typing searches once it pauses
        global.clearTimeout(state.timer);
        state.timer = global.setTimeout(function () { load(true); }, 250);
      },
      count: function (shown) {
        return shown + " job" + (shown === 1 ? "" : "s") + (state.cursor === null ? "" : " loaded; older ones may match");
      }
    };
  }

  // A bulk action on the jobs the filters match: Preview asks the server for the ids it would touch and shows
  // their count; Confirm acts on those ids only (never on the filter again), then says what was done. "Next"
  // previews the matching jobs older than those (a preview takes at most 1,000, and looks at so many).
  function bulkBar(box, form, filters, onDone) {
    var note = box.querySelector(".moi-bulk-note"), confirm = box.querySelector(".moi-bulk-confirm");
    var next = box.querySelector(".moi-bulk-next"), after = null;
    var action = box.querySelector("select[name=bulk]"), chosen = null;
    var VERBS = { cancel: "Cancel", relaunch: "Relaunch", "delete": "Delete" };
    var FITS = { cancel: "can be cancelled", relaunch: "have finished and can be relaunched", "delete": "can be deleted" };

    function reset() { chosen = null; confirm.hidden = true; }

    function forget() { reset(); after = null; next.hidden = true; }

    function previewed(answer) {
      chosen = answer;
      var jobs = answer.count + " job" + (answer.count === 1 ? "" : "s"), skipped = answer.count - answer.applicable;
      var lines = [answer.count === 0 ? "No job matches these filters." : VERBS[answer.action] + " " + jobs + "?"];
      if (skipped) {
        lines.push(answer.applicable + " of them " + FITS[answer.action] + " now; the other " + skipped + " will be skipped.");
      }
      if (answer.more) {
        lines.push("More than " + answer.count + " jobs match: this acts on these " + answer.count + " only (Next ones: those after them).");
      } else if (answer.next !== null) {
        lines.push("Older jobs were not looked at yet and may match too (Next ones: those after these).");
      }
      after = answer.next;
      next.hidden = after === null;
      note.textContent = lines.join(" ");
      confirm.textContent = VERBS[answer.action] + " " + jobs;
      confirm.hidden = answer.count === 0;
      box.dataset.count = String(answer.count);
    }

    function preview(cursor) {
      reset();
      var body = filters();
      body.action = action.value;
      if (cursor !== null) { body.cursor = cursor; }
      note.textContent = "counting…";
      api("POST", "/jobs/bulk/preview", body).then(previewed, function (error) { note.textContent = error.message; });
    }

    box.querySelector(".moi-bulk-preview").addEventListener("click", function () { forget(); preview(null); });
    next.addEventListener("click", function () { preview(after); });
    confirm.addEventListener("click", function () {
      if (!chosen) { return; }
      var taken = chosen;
      reset();
      note.textContent = VERBS[taken.action] + ": working on " + taken.count + " jobs…";
      api("POST", "/jobs/bulk/" + taken.action, { ids: taken.ids }).then(function (answer) {
        var why = Object.keys(answer.reasons).map(function (reason) { return reason + ": " + answer.reasons[reason]; });
        note.textContent = VERBS[answer.action] + ": " + answer.done + " done, " + answer.skipped + " skipped" +
          (why.length ? " (" + why.join(", ") + ")" : "") + ".";
        box.dataset.done = String(answer.done);
        onDone();
      }, function (error) { note.textContent = error.message; });
    });
    form.addEventListener("input", function () {
      if (chosen || after !== null) { forget(); note.textContent = "The filters changed: preview again."; }
    });
    action.addEventListener("change", function () { forget(); note.textContent = ""; });
  }

  global.moiDashboard = {
    api: api, fraction: fraction, phase: phase, JobTable: JobTable,
    jobsPage: jobsPage, jobPage: jobPage, submitPage: submitPage, opsPage: opsPage
  };
})(window);
