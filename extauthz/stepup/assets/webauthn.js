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
      const err = new Error(data.error_description || ("The server answered " + resp.status));
      err.stepupUrl = data.stepup_url;
      err.signinUrl = data.signin_url;
      throw err;
    }
    return data;
  }
  function say(text, kind, signinUrl) {
    const el = document.getElementById("message");
    el.textContent = text;
    el.className = kind || "";
    if (signinUrl) {  // the first passkey needs a recent sign-in: offer one, coming back here
      const a = document.createElement("a");
      a.href = signinUrl;
      a.textContent = "Sign in again";
      el.append(" ", a, ".");
    }
  }
  function explain(err) {
    if (err && err.name === "NotAllowedError") { return "The passkey request was cancelled or timed out. Try again."; }
    if (err && err.name === "InvalidStateError") { return "This passkey is already registered for you."; }
    return (err && err.message) || String(err);
  }
  async function enrol(button) {
    say("Follow your browser's prompt…");
    const begin = await post("/.extauthz/webauthn/register/begin");
    const cred = await navigator.credentials.create({ publicKey: creationOptions(begin.options) });
    const name = document.getElementById("name").value;
    await post("/.extauthz/webauthn/register/finish", { credential: credentialJSON(cred), name: name });
    const rd = button.dataset.rd;
    say("Passkey added.", "ok");
    if (rd && rd !== "/") {
      window.location.assign("/.extauthz/stepup?rd=" + encodeURIComponent(rd));
    }
  }
  async function stepup(button) {
    say("Follow your browser's prompt…");
    const begin = await post("/.extauthz/stepup/begin");
    if (begin.enroll) {
      document.getElementById("enroll").hidden = false;
      say(begin.message);
      return;
    }
    const cred = await navigator.credentials.get({ publicKey: requestOptions(begin.options) });
    const done = await post("/.extauthz/stepup/finish", { credential: credentialJSON(cred), rd: button.dataset.rd });
    say("Confirmed.", "ok");
    window.location.assign(done.redirect);
  }
  async function account() {
    const resp = await fetch("/.extauthz/webauthn/passkeys", { credentials: "same-origin" });
    const data = await resp.json();
    const body = document.querySelector("#passkeys tbody");
    body.textContent = "";
    const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "never");
    (data.passkeys || []).forEach((p) => {
      const row = body.insertRow();
      row.dataset.id = p.id;
      [p.name, when(p.created), when(p.last_used)].forEach((v) => { row.insertCell().textContent = v; });
      const btn = document.createElement("button");
      btn.className = "secondary remove";
      btn.textContent = "Remove";
      btn.addEventListener("click", () => run(async () => {
        await post("/.extauthz/webauthn/passkeys/remove", { id: p.id });
        say("Removed \u201c" + p.name + "\u201d. Pages that need a passkey will ask you to confirm again.", "ok");
        await account();
      }));
      row.insertCell().appendChild(btn);
    });
    if (!(data.passkeys || []).length) { say("No passkeys yet."); }
  }
  function run(fn) {
    return fn().catch((err) => {
      say(explain(err), "error", err && err.signinUrl);
      if (err && err.stepupUrl) { window.location.assign(err.stepupUrl); }
    });
  }
  document.addEventListener("DOMContentLoaded", () => {
    const page = document.querySelector("main").dataset.page;
    if (page === "register") {
      const b = document.getElementById("enrol");
      b.addEventListener("click", () => run(() => enrol(b)));
    } else if (page === "stepup") {
      const b = document.getElementById("stepup");
      b.addEventListener("click", () => run(() => stepup(b)));
    } else if (page === "account") {
      run(account);
    }
  });
})();
