/*
 * moi_list.js: the original moi's list widget, on moi.js's original page API.
 *
 *   <script src="/static/moi.js"></script>
 *   <script src="/static/moi_list.js"></script>
 *   <script>moi_list.init(group_id);</script>   // group_id null: the user's own jobs
 *
 * moi_list.init(group_id, div) appends <div id="moi-list"> to div (default
 * document.body), with one <p id="<node id>"> per node whose parent is
 * group_id: a Delete button, " name: ", then <span id="<id>:status">. A
 * finished job (Success or Failed) with a url shows its status as a link to
 * url/<id>; a group with a url shows a "Group details" link. Delete asks for a
 * second click (as moi server's pages do), then sends {"remove": [id]} and drops the row.
 *
 * As the original, but: names and statuses go in as text, never as HTML (a job
 * named <img src=x onerror=...> shows those characters), links stay on the
 * page's own site, a stale update never overwrites a newer one, and a re-sync
 * after a reconnect neither duplicates rows nor keeps rows of removed nodes.
 */
(function (global) {
  "use strict";

  var LINKED = { Success: true, Failed: true };

  function init(groupId, div) {
    var document = global.document;
    var list = document.createElement("div");
    list.id = "moi-list";
    (div || document.body).appendChild(list);
    var root = groupId || null;  // null: learnt from the user's own group, the one node without a parent
    var rows = {};  // id -> {p, info}

    function statusContent(info) {
      var href = global.moi.siteLink(info);
      var text = info.type === "group" ? "Group details" : info.status;
      if (href && (info.type === "group" || LINKED[info.status])) {
        var link = document.createElement("a");
        link.href = href;
        link.textContent = String(text);
        return link;
      }
      return document.createTextNode(info.type === "group" ? "" : String(info.status));
    }

    function render(info, p) {
      var remove = global.moi.confirmButton("Delete", "moi-delete", function () {
        global.moi.send("remove", [info.id]);
        drop(info.id);
      });
      var status = document.createElement("span");
      status.id = info.id + ":status";
      status.appendChild(statusContent(info));
      p.replaceChildren(remove, document.createTextNode(" " + info.name + ": "), status);
    }

    function drop(id) {
      var known = rows[id];
      if (!known) { return; }
      delete rows[id];
      known.p.remove();
    }

    function prune(group) {
      // The group's own get lists its children: rows of nodes removed while offline go.
      if (!Array.isArray(group.jobs)) { return; }
      var present = {};
      group.jobs.forEach(function (id) { present[id] = true; });
      Object.keys(rows).forEach(function (id) { if (!present[id]) { drop(id); } });
    }

    function show(info) {
      if (!info || typeof info.id !== "string") { return; }
      if (root === null && info.type === "group" && info.parent === null) { root = info.id; }
      if (info.id === root) { prune(info); return; }
      if (info.parent !== root) { return; }
      var known = rows[info.id];
      if (known && (info.revision || 0) < (known.info.revision || 0)) { return; }  // stale: keep the newer
      if (!known) {
        known = rows[info.id] = { p: document.createElement("p"), info: info };
        known.p.id = info.id;
        list.appendChild(known.p);
      }
      known.info = info;
      render(info, known.p);
    }

    function gone(info) { if (info && typeof info.id === "string") { drop(info.id); } }

    global.moi.add_callback("add", show);
    global.moi.add_callback("get", show);
    global.moi.add_callback("update", show);
    global.moi.add_callback("remove", gone);
    global.moi.add_callback("error", function (text) { global.console.warn("moi: " + text); });
    global.moi.init(groupId || null);
    return list;
  }

  global.moi_list = { init: init };
})(window);
