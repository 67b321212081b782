/*
 * moi.js: live job status from a moi server, for current browsers. No build step.
 *
 *   <div id="jobs"></div>
 *   <script src="/static/moi.js"></script>
 *   <script>moi.liveList(document.getElementById("jobs"));</script>
 *
 * moi.connect(options) opens the websocket (/moi-ws/ on the page's host, wss on
 * https pages), asks for the group, and calls options.onAdd / onUpdate /
 * onRemove / onGet with each info object the server sends (onError with the
 * text of a refused request). When the connection drops (server restart,
 * network) it reconnects with exponential backoff and asks for the group again.
 *
 * moi.liveList(element, options) is the ready list: one row per job with its
 * name, status, a link to url/<id> once finished (only on the page's own site), one to its files (/moi-files/<id>/), a Cancel button while it is
 * unfinished (queued or running), and a Delete button that asks for a second click
 * (options.servedOnly: the result link only once moi server says it serves that path). Rows
 * keep the revision they show, so a stale update never overwrites a newer
 * state, and a re-sync never duplicates a row. All text goes in with
 * textContent, never as HTML. options.renderRow(info, row, helpers) replaces
 * how a row's content is drawn (see defaultRenderRow).
 *
 * The original moi's page API is here too, on the same connection code (so an
 * original-style page also reconnects with backoff and asks again on reconnect):
 * moi.init(group_id, host, on_open, on_close, on_error) opens the page's one
 * socket (group_id null: the user's own tree; host defaults to
 * location.host + "/moi-ws/"), moi.add_callback(action, func) sets the one
 * callback of an action ("add", "get", "update", "remove", "error"),
 * moi.send(action, data) sends {action: data}, and moi.VERSION is moi's version.
 */
(function (global) {
  "use strict";

  var FINISHED = { Success: true, Failed: true, Cancelled: true, Archived: true, Expired: true };

  function socketUrl(path) {
    var location = global.location;
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function connect(options) {
    options = options || {};
    var url = options.url || socketUrl(options.path || "/moi-ws/");
    var minDelay = options.minDelay || 250;
    var maxDelay = options.maxDelay || 4000;
    var handlers = {
      add: options.onAdd, update: options.onUpdate, remove: options.onRemove,
      get: options.onGet, error: options.onError
    };
    var socket = null;
    var attempts = 0;
    var stopped = false;
    var timer = null;

    function call(handler, value) {
      if (typeof handler === "function") { handler(value); }
    }

    function send(verb, value) {
      if (!socket || socket.readyState !== WebSocket.OPEN) { return false; }
      var request = {};
      request[verb] = value;
      socket.send(JSON.stringify(request));
      return true;
    }

    function onMessage(event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (error) { return; }
      if (!frame || typeof frame !== "object") { return; }
      Object.keys(frame).forEach(function (action) {
        if (Object.prototype.hasOwnProperty.call(handlers, action)) { call(handlers[action], frame[action]); }
        if (typeof options.onAction === "function") { options.onAction(action, frame[action]); }
      });
    }

    function reconnectLater() {
      // Exponential backoff with jitter, so a restarted server is not stormed.
      var delay = Math.min(maxDelay, minDelay * Math.pow(2, attempts));
      attempts += 1;
      timer = global.setTimeout(open, delay * (0.5 + Math.random() / 2));
    }

    function open() {
      timer = null;
      if (stopped) { return; }
      socket = new WebSocket(url);
      socket.onopen = function (event) {
        attempts = 0;
        call(options.onOpen, event);
        // [] asks for the user's own group; autoGet false leaves asking to onOpen.
        if (options.autoGet !== false) { send("get", options.group ? [options.group] : []); }
      };
      socket.onmessage = onMessage;
      socket.onerror = function (event) { call(options.onSocketError, event); };
      socket.onclose = function (event) {
        socket = null;
        call(options.onClose, event);
        if (!stopped) { reconnectLater(); }
      };
    }

    open();
    return {
      get: function (ids) { return send("get", ids); },
      remove: function (ids) { return send("remove", ids); },
      cancel: function (ids) { return send("cancel", ids); },
      send: send,
      close: function () {
        stopped = true;
        if (timer !== null) { global.clearTimeout(timer); }
        if (socket) { send("close", null); socket.close(); }
      },
      isOpen: function () { return !!socket && socket.readyState === WebSocket.OPEN; }
    };
  }

  // Control characters, whitespace, backslashes: a browser drops or rewrites them, so
  // "/\t/evil.example" or "/\\evil.example" would read as "//evil.example", another site.
  var UNSAFE_URL = /[\u0000-\u0020\u007f-\u009f\\\s]/;

  function jobLink(info) {
    return FINISHED[info.status] ? siteLink(info) : null;
  }

  // jobLink(info), only once moi server says it serves that path (GET /api/v1/served): a link it would answer
  // 404 is never shown. Asked once per url (its jobs share a route); until the answer, null, and then `ready`
  // is called (once for each callback that waited on a url that is served).
  var servedUrls = new Map();  // url -> true | false | [ready callbacks] while asking (a Map: "__proto__" is a url)

  function servedLink(info, ready) {
    var href = jobLink(info);
    var known = href ? servedUrls.get(info.url) : false;
    if (known === true) { return href; }
    if (known === false) { return null; }
    if (Array.isArray(known)) { if (known.indexOf(ready) < 0) { known.push(ready); } return null; }
    var waiting = [ready];
    servedUrls.set(info.url, waiting);
    var path = new URL(href, global.location.href).pathname;
    global.fetch("/api/v1/served?path=" + encodeURIComponent(path), { credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.json() : { served: false }; })
      .then(function (answer) {
        servedUrls.set(info.url, !!answer.served);
        if (answer.served) { waiting.forEach(function (call) { if (call) { call(); } }); }
      }, function () { servedUrls.set(info.url, false); });
    return null;
  }

  // A finished job's files on this site (moi.file_routes), when it has any.
  function filesLink(info) {
    if (!FINISHED[info.status] || !info.files || typeof info.files.count !== "number" || !info.files.count) {
      return null;
    }
    return "/moi-files/" + encodeURIComponent(info.id) + "/";
  }

  // url + "/" + id, only as a link on this page's own site: never another host, never a javascript: link.
  function siteLink(info) {
    var base = typeof info.url === "string" ? info.url : "";
    if (!base || UNSAFE_URL.test(base) || typeof info.id !== "string") { return null; }
    var href = base.replace(/\/+$/, "") + "/" + encodeURIComponent(info.id);
    var resolved;
    try { resolved = new URL(href, global.location.href); } catch (error) { return null; }
    if (resolved.origin !== global.location.origin) { return null; }
    return href;
  }

  function element(tag, className, text) {
    var node = global.document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  // The default look of a row; helpers.remove() / helpers.cancel() ask the server to delete / cancel the job.
  function defaultRenderRow(info, row, helpers) {
    row.replaceChildren();
    row.appendChild(element("span", "moi-name", info.name));
    row.appendChild(element("span", "moi-status", info.status));
    var href = helpers && "link" in helpers ? helpers.link : jobLink(info);
    if (href) {
      var link = element("a", "moi-result", "result");
      link.href = href;
      row.appendChild(link);
    }
    var files = filesLink(info);
    if (files) {
      var listing = element("a", "moi-files", "files (" + info.files.count + ")");
      listing.href = files;
      row.appendChild(listing);
    }
    if (!FINISHED[info.status]) {
      var cancel = element("button", "moi-cancel", "Cancel");
      cancel.type = "button";
      cancel.addEventListener("click", helpers.cancel);
      row.appendChild(cancel);
    }
    row.appendChild(confirmButton("Delete", "moi-delete", helpers.remove));
  }

  // What cannot be undone asks once more on the button itself: a first click arms it, a second acts.
  function confirmButton(text, className, onConfirm) {
    var node = element("button", className, text);
    node.type = "button";
    node.addEventListener("click", function () {
      if (node.dataset.armed === "true") { onConfirm(); return; }
      node.dataset.armed = "true";
      node.textContent = text + "? (click again to confirm)";
      global.setTimeout(function () { node.dataset.armed = "false"; node.textContent = text; }, 8000);
    });
    return node;
  }

  function liveList(container, options) {
    options = options || {};
    var render = options.renderRow || defaultRenderRow;
    var nodes = {};  // id -> {info, row}: every job and group shown or known
    var client;

    function newer(info) {
      var known = nodes[info.id];
      return !known || (info.revision || 0) >= (known.info.revision || 0);
    }

    function drop(id) {
      var known = nodes[id];
      if (!known) { return; }
      delete nodes[id];
      if (known.row) { known.row.remove(); }
      Object.keys(nodes).forEach(function (other) {
        if (nodes[other] && nodes[other].info.parent === id) { drop(other); }
      });
    }

    function prune(group) {
      // A group's get lists its children: rows of children gone while offline go too.
      if (!Array.isArray(group.jobs)) { return; }
      var present = {};
      group.jobs.forEach(function (id) { present[id] = true; });
      Object.keys(nodes).forEach(function (id) {
        if (nodes[id] && nodes[id].info.parent === group.id && !present[id]) { drop(id); }
      });
    }

    function show(info) {
      if (!info || typeof info.id !== "string" || !newer(info)) { return; }  // stale: keep the newer state
      var known = nodes[info.id] || (nodes[info.id] = { info: info, row: null });
      known.info = info;
      if (info.type === "group") { prune(info); return; }
      if (!known.row) {
        known.row = element("div", "moi-row");
        known.row.dataset.id = info.id;
        container.appendChild(known.row);
      }
      draw(known);
    }

    function draw(known) {
      var info = known.info;
      known.row.dataset.status = String(info.status);
      render(info, known.row, {
        remove: function () { client.remove([info.id]); },
        cancel: function () { client.cancel([info.id]); },
        link: options.servedOnly ? servedLink(info, redrawAll) : jobLink(info)
      });
    }

    function redrawAll() {  // a result link's path turned out served: every row is drawn again, in place
      Object.keys(nodes).forEach(function (id) { if (nodes[id].row) { draw(nodes[id]); } });
    }

    function gone(info) { if (info && typeof info.id === "string") { drop(info.id); } }

    container.classList.add("moi-list");
    client = connect({
      path: options.path,
      group: options.group || container.dataset.moiGroup,
      onAdd: show, onUpdate: show, onGet: show, onRemove: gone,
      onError: options.onError || function (text) { global.console.warn("moi: " + text); },
      onOpen: function () { container.dataset.connected = "true"; },
      onClose: function () { container.dataset.connected = "false"; }
    });
    return { client: client, nodes: nodes };
  }

  // The original moi's page API: one socket per page, one callback per action. ------

  var page = { client: null, callbacks: {} };

  function addCallback(action, func) { page.callbacks[action] = func; }

  function sendOriginal(action, data) { return page.client ? page.client.send(action, data) : false; }

  function init(groupId, host, onOpen, onClose, onError) {
    if (page.client) { page.client.close(); }
    var address = host || global.location.host + "/moi-ws/";
    if (!/^wss?:\/\//.test(address)) {
      address = (global.location.protocol === "https:" ? "wss://" : "ws://") + address;
    }
    page.client = connect({
      url: address,
      autoGet: false,
      onAction: function (action, value) {
        var callback = page.callbacks[action];
        if (typeof callback === "function") { callback(value); }
      },
      onOpen: onOpen || function () { sendOriginal("get", groupId ? [groupId] : []); },
      onClose: onClose || function () { sendOriginal("close", null); },
      onSocketError: onError || function () {}
    });
    return page.client;
  }

  global.moi = {
    VERSION: "0.1.0",
    connect: connect, liveList: liveList, defaultRenderRow: defaultRenderRow, jobLink: jobLink, siteLink: siteLink,
    confirmButton: confirmButton, servedLink: servedLink,
    init: init, add_callback: addCallback, send: sendOriginal
  };
})(window);
