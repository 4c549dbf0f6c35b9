"use strict";
// extauthz step-up pages: WebAuthn with the JSON the server sends (py_webauthn's
// options_to_json); no libraries, works offline.
(function () {
  function toBuf(s) {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
  }
  function fromBuf(buf) {
    let s = "";
    new Uint8Array(buf).forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(o) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    }
    return Object.assign({}, o, {
      challenge: toBuf(o.challenge),
      user: Object.assign({}, o.user, { id: toBuf(o.user.id) }),
      excludeCredentials: (o.excludeCredentials || []).map((c) => Object.assign({}, c, { id: toBuf(c.id) })),
    });
  }
  function requestOptions(o) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    }
    return Object.assign({}, o, {
      challenge: toBuf(o.challenge),
      allowCredentials: (o.allowCredentials || []).map((c) => Object.assign({}, c, { id: toBuf(c.id) })),
    });
  }
  function credentialJSON(cred) {
    if (typeof cred.toJSON === "function") { return cred.toJSON(); }
    const r = cred.response;
    const out = { id: cred.id, rawId: fromBuf(cred.rawId), type: cred.type,
                  clientExtensionResults: cred.getClientExtensionResults(), response: {} };
    out.response.clientDataJSON = fromBuf(r.clientDataJSON);
    if (r.attestationObject) {
      out.response.attestationObject = fromBuf(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = fromBuf(r.authenticatorData);
      out.response.signature = fromBuf(r.signature);
      if (r.userHandle) { out.response.userHandle = fromBuf(r.userHandle); }
    }
    return out;
  }
  async function post(url, body) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(data.error_description || ("The server answered " + resp.status + "."));
      err.code = data.error;
      err.stepupUrl = data.stepup_url;
      err.signinUrl = data.signin_url;
      throw err;
    }
    return data;
  }
  // The message line: text, then links ([text, href] pairs), built as DOM nodes (no HTML).
  function say(text, kind, links) {
    const el = document.getElementById("message");
    if (!el) { return; }
    el.textContent = text;
    el.className = kind || "";
    (links || []).forEach(([label, href]) => {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = label;
      el.append(" ", a, ".");
    });
  }
  const ADMIN = " If you have lost all your passkeys, ask an administrator to remove them; then you can add a new one.";
  // What went wrong, and what to try next, for the person in front of the browser.
  function explain(err, ceremony) {
    const name = err && err.name;
    if (name === "NotAllowedError" && ceremony === "create") {
      return "No passkey was added: the browser's prompt was cancelled or timed out. Try again, " +
             "or use another authenticator (a security key, or your phone).";
    }
    if (name === "NotAllowedError") {
      return "No passkey was used: the prompt was cancelled or timed out, or this device holds " +
             "none of your passkeys. Try again, or use another authenticator that holds one " +
             "(a security key, or your phone)." + ADMIN;
    }
    if (name === "InvalidStateError") {
      return "This authenticator already holds a passkey for you. Use another authenticator, " +
             "or manage the passkeys you have.";
    }
    if (err && err.code === "passkey_unknown") {
      return err.message + " Use another authenticator that holds one of your passkeys." + ADMIN;
    }
    return (err && err.message) || String(err);
  }
  function fail(err, ceremony) {
    const links = [];
    if (err && err.signinUrl) { links.push(["Sign in again", err.signinUrl]); }
    say(explain(err, ceremony), "error", links);
  }
  async function enrol(button) {
    say("Follow your browser's prompt\u2026");
    const begin = await post("/.extauthz/webauthn/register/begin");
    const cred = await navigator.credentials.create({ publicKey: creationOptions(begin.options) });
    const name = document.getElementById("name").value;
    const done = await post("/.extauthz/webauthn/register/finish", { credential: credentialJSON(cred), name: name });
    const rd = button.dataset.rd;
    say("");
    document.querySelector("h1").textContent = "Passkey added";
    document.getElementById("done").textContent = "Passkey \u201c" + done.registered + "\u201d added." +
        (done.confirmed && rd && rd !== "/" ? " That confirmed it's you too: continue to your page." : "");
    document.getElementById("enrol-form").hidden = true;
    document.getElementById("continue").hidden = false;
    document.getElementById("continue-link").focus();
  }
  // A step-up ceremony: true once confirmed; false when the user has no passkey (said so).
  async function confirmWithPasskey(rd) {
    const begin = await post("/.extauthz/stepup/begin");
    if (begin.enroll) {
      const more = document.getElementById("enroll");
      if (more) { more.hidden = false; }
      say(begin.message, "", [["Add a passkey", "/.extauthz/webauthn/register?rd=" + encodeURIComponent(rd)]]);
      return null;
    }
    const cred = await navigator.credentials.get({ publicKey: requestOptions(begin.options) });
    return post("/.extauthz/stepup/finish", { credential: credentialJSON(cred), rd: rd });
  }
  async function stepup(button) {
    say("Follow your browser's prompt\u2026");
    const done = await confirmWithPasskey(button.dataset.rd);
    if (!done) { return; }
    say("Confirmed.", "ok");
    window.location.assign(done.redirect);
  }
  const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function when(t) { return t ? DATE.format(new Date(t * 1000)) : null; }
  let removing = null;  // the passkey the confirmation panel is about
  function askToRemove(p) {
    removing = p;
    document.getElementById("remove-name").textContent = "\u201c" + p.name + "\u201d";
    const panel = document.getElementById("confirm-remove");
    panel.hidden = false;
    say("");
    document.getElementById("remove-confirm").focus();
  }
  async function remove() {
    const p = removing;
    const button = document.getElementById("remove-confirm");
    button.disabled = true;
    try {
      try {
        await post("/.extauthz/webauthn/passkeys/remove", { id: p.id });
      } catch (err) {
        if (err.code !== "stepup_required") { throw err; }
        // Changing passkeys needs a recent confirmation with one: ask for it here, then go on.
        say("To remove it, confirm it's you with one of your passkeys: follow your browser's prompt\u2026");
        if (!(await confirmWithPasskey("/.extauthz/account"))) { return; }
        await post("/.extauthz/webauthn/passkeys/remove", { id: p.id });
      }
      document.getElementById("confirm-remove").hidden = true;
      removing = null;
      await account();
      say("Removed \u201c" + p.name + "\u201d. Pages that need a passkey will ask you to confirm again.", "ok");
    } finally {
      button.disabled = false;
    }
  }
  async function account() {
    const resp = await fetch("/.extauthz/webauthn/passkeys", { credentials: "same-origin" });
    const data = await resp.json();
    if (!resp.ok) { throw new Error(data.error_description || ("The server answered " + resp.status + ".")); }
    const list = document.getElementById("passkeys");
    const passkeys = data.passkeys || [];
    list.textContent = "";
    passkeys.forEach((p) => {
      const item = document.createElement("li");
      item.dataset.id = p.id;
      const info = document.createElement("div");
      info.className = "info";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.name;
      const dates = document.createElement("span");
      dates.className = "when";
      const used = when(p.last_used);
      dates.textContent = "Added " + when(p.created) + " \u00b7 " + (used ? "last used " + used : "not used yet");
      info.append(name, dates);
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "secondary remove";
      btn.textContent = "Remove";
      btn.setAttribute("aria-label", "Remove " + p.name);
      btn.addEventListener("click", () => askToRemove(p));
      item.append(info, btn);
      list.append(item);
    });
    list.hidden = !passkeys.length;
    document.getElementById("empty").hidden = passkeys.length > 0;
    // Adding one is the first thing to do with none; with some, it is one choice of two.
    document.getElementById("add").className = passkeys.length ? "button secondary" : "button";
  }
  function run(fn, ceremony) {
    return fn().catch((err) => {
      if (err && err.stepupUrl) { window.location.assign(err.stepupUrl); return; }
      fail(err, ceremony);
    });
  }
  document.addEventListener("DOMContentLoaded", () => {
    const page = document.querySelector("main").dataset.page;
    if (page === "register") {
      const b = document.getElementById("enrol");
      b.addEventListener("click", () => run(() => enrol(b), "create"));
    } else if (page === "stepup") {
      const b = document.getElementById("stepup");
      b.addEventListener("click", () => run(() => stepup(b), "get"));
    } else if (page === "account") {
      document.getElementById("remove-confirm").addEventListener("click", () => run(remove, "get"));
      document.getElementById("remove-cancel").addEventListener("click", () => {
        document.getElementById("confirm-remove").hidden = true;
        removing = null;
        say("");
      });
      run(account);
    }
  });
})();
