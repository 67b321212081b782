/*
 * moi_accounts.js: the operations page's "Accounts" section (admins). No build step.
 *
 * Lists the password login's accounts from GET /api/v1/accounts, and adds, changes the password
 * of, gives or takes the admin flag of, and removes accounts; it ends every login and token of a
 * typed user name (POST /api/v1/users/NAME/logout). Calls carry the login cookie and Tornado's
 * XSRF token (through moiDashboard.api). Every text goes in with textContent, never as HTML; a password goes in a POST body
 * only, and each password field is emptied once sent.
 */
(function (global) {
  "use strict";

  var doc = global.document;
  var ARMED_MS = 8000;  // how long a button that asks once more stays armed

  function el(tag, className, text) {
    var node = doc.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  // One API call, with the login cookie and the XSRF token: dashboard.js's, loaded before this file.
  function call(method, path, body) { return global.moiDashboard.api(method, path, body); }

  function accountPath(name, rest) { return "/accounts/" + encodeURIComponent(name) + (rest || ""); }

  // A button that asks once more on itself: a first click arms it, a second (within ARMED_MS) acts.
  function armed(node, question, act) {
    var label = node.textContent;
    node.addEventListener("click", function (event) {
      event.preventDefault();
      if (node.dataset.armed === "true") { node.dataset.armed = "false"; node.textContent = label; act(); return; }
      if (node.form && !node.form.reportValidity()) { return; }
      node.dataset.armed = "true";
      node.textContent = question() + " (click again to confirm)";
      global.setTimeout(function () { node.dataset.armed = "false"; node.textContent = label; }, ARMED_MS);
    });
  }

  function ended(answer) {
    return "ended " + answer.sessions_ended + " login(s)" +
      (answer.tokens_revoked === undefined ? "" : " and revoked " + answer.tokens_revoked + " token(s)") +
      " of " + answer.name;
  }

  function accountsSection(root) {
    var body = root.querySelector(".moi-accounts tbody");
    var status = root.querySelector(".moi-accounts-status");

    function say(text) { status.textContent = text || ""; }
    function failed(error) { say(error.message); }
    function load() { return call("GET", "/accounts").then(function (answer) { draw(answer.accounts); }, failed); }
    // After a change, the table again; when it ended the admin's own login, the login page instead.
    function done(text, user) {
      if (user !== undefined && user === doc.body.dataset.user) { global.location.assign("/login"); return null; }
      say(text);
      return load();
    }

    function passwordCell(account) {
      var form = el("form", "moi-account-password");
      var input = el("input");
      input.type = "password";
      input.name = "password";
      input.required = true;
      input.minLength = 8;
      input.maxLength = 1024;
      input.autocomplete = "new-password";
      input.setAttribute("aria-label", "new password of " + account.name);
      form.append(input, el("button", null, "Set password"));
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var password = input.value;
        input.value = "";
        call("POST", accountPath(account.name, "/password"), { password: password }).then(function (answer) {
          return done("changed the password of " + answer.name + "; " + ended(answer), answer.name);
        }, failed);
      });
      return form;
    }

    function actionsCell(account) {
      var cell = el("td", "moi-account-actions");
      var flag = el("button", "moi-account-admin", account.admin ? "Remove admin" : "Make admin");
      flag.type = "button";
      var toggle = function () {
        call("POST", accountPath(account.name, "/admin"), { admin: !account.admin }).then(function (answer) {
          return done(answer.name + (answer.admin ? " is an admin from their next login" : " is no longer an admin; " +
            ended(answer)), answer.admin ? undefined : answer.name);
        }, failed);
      };
      if (account.admin) {
        armed(flag, function () { return "Remove admin of " + account.name + "?"; }, toggle);
      } else {
        flag.addEventListener("click", toggle);
      }
      var remove = el("button", "moi-account-remove", "Remove");
      remove.type = "button";
      armed(remove, function () { return "Remove " + account.name + "?"; }, function () {
        call("DELETE", accountPath(account.name)).then(function () {
          return done("removed " + account.name + "; their logins ended and their tokens were revoked", account.name);
        }, failed);
      });
      cell.append(flag, " ", remove);
      return cell;
    }

    function draw(accounts) {
      var rows = accounts.map(function (account) {
        var tr = el("tr");
        tr.dataset.name = account.name;
        var password = el("td");
        password.append(passwordCell(account));
        tr.append(el("td", "moi-account-name", account.name), el("td", null, account.admin ? "admin" : "user"),
          el("td", null, account.created), el("td", "moi-account-sessions", account.sessions), password,
          actionsCell(account));
        return tr;
      });
      if (!rows.length) {
        var empty = el("td", null, "No accounts yet.");
        empty.colSpan = 6;
        rows.push(el("tr"));
        rows[0].append(empty);
      }
      body.replaceChildren.apply(body, rows);
    }

    var add = root.querySelector(".moi-account-add");
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var given = { name: add.elements.name.value, password: add.elements.password.value,
        admin: add.elements.admin.checked };
      add.elements.password.value = "";
      call("POST", "/accounts", given).then(function (answer) {
        add.reset();
        return done("added " + answer.name + (answer.admin ? " (admin)" : ""));
      }, failed);
    });

    var logout = root.querySelector(".moi-account-logout");
    logout.addEventListener("submit", function (event) { event.preventDefault(); });
    armed(logout.querySelector("button"), function () {
      return "End every login and token of " + logout.elements.name.value + "?";
    }, function () {
      call("POST", "/users/" + encodeURIComponent(logout.elements.name.value) + "/logout").then(function (answer) {
        logout.reset();
        return done(ended(answer), answer.name);
      }, failed);
    });

    load();
    return { load: load };
  }

  var root = doc.getElementById("moi-accounts");
  if (root) { global.moiAccounts = accountsSection(root); }
})(window);
