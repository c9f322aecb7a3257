// Checkout: create the order through our JSON API, let the buyer approve it (PayPal's buttons,
// or the local approval page in demo mode), capture it, and show the key. A top-up (the page
// holds the dashboard's grant, or a field for the key) adds credit to the key instead, and the
// capture answer names it by its prefix only.
(function () {
  'use strict';
  var root = document.getElementById('checkout');
  if (!root) return;
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') : '';
  var plan = root.getAttribute('data-plan');
  var form = document.getElementById('checkout-form');
  var email = document.getElementById('email');
  var payBox = document.getElementById('checkout-pay');
  var statusBox = document.getElementById('checkout-status');
  var errorBox = document.getElementById('checkout-error');
  var resultBox = document.getElementById('checkout-result');
  var pendingBox = document.getElementById('checkout-pending');
  var retryBox = document.getElementById('checkout-retry');
  var demoButton = document.getElementById('pay-demo');
  var topupGrant = document.getElementById('topup-grant');
  var topupKey = document.getElementById('topup-key');
  var announcer = document.getElementById('checkout-announce');

  function msg(name) { return root.getAttribute('data-msg-' + name) || ''; }
  // The page's own wording (in its language) of the API's errors it knows; the API's message
  // (English) for the others.
  var CODES = {
    payment_provider_error: 'provider', payment_declined: 'declined-method',
    not_approved: 'not-approved', payment_not_recorded: 'not-recorded',
    plan_withdrawn: 'plan-withdrawn', plan_not_found: 'plan-withdrawn', rate_limit_exceeded: 'too-many',
    csrf_failed: 'reload', grant_expired: 'reload', invalid_email: 'email',
    unknown_key: 'key-unknown', key_revoked: 'key-revoked', key_budget_full: 'key-full',
    order_expired: 'order-expired', order_not_found: 'order-expired',
    order_of_other_paypal: 'other-paypal',
    // Else the server's English message showed on the Chinese page (found by a review of the
    // Chinese texts).
    internal_error: 'server-error', payments_unavailable: 'unconfigured',
    service_unavailable: 'busy',
    // Not sent for what this page posts; a reload gets a page that posts it right.
    invalid_request: 'reload', request_too_large: 'reload', not_found: 'reload'
  };
  // After a failed capture: nothing was taken and this order cannot be paid as it is, so the
  // buyer pays again (a new order) ...
  var PAY_AGAIN = { not_approved: 1, payment_declined: 1, order_expired: 1, order_not_found: 1 };
  // ... or nothing more can be done here (another plan, a reload, the key is revoked) ...
  var FINAL = { plan_withdrawn: 1, plan_not_found: 1, key_revoked: 1, csrf_failed: 1 };
  // ... else the approved order's capture may still go through: offer to try it again.
  function errorText(e) { return (e.code && CODES[e.code] && msg(CODES[e.code])) || e.message; }
  // An error the buyer must act on takes the focus (the button they pressed is disabled
  // meanwhile, and focus fell to the page): `field`, marked wrong and described by the error,
  // or with `focus` the error itself. Errors nobody asked for (on arriving) leave it.
  var invalid = null;
  function unmark() {
    if (!invalid) return;
    invalid.removeAttribute('aria-invalid');
    var hint = invalid.getAttribute('data-hint');
    if (hint) invalid.setAttribute('aria-describedby', hint);
    else invalid.removeAttribute('aria-describedby');
    invalid = null;
  }
  function showError(text, field, focus) {
    unmark();
    errorBox.textContent = text;
    errorBox.hidden = false;
    if (field) {
      invalid = field;
      field.setAttribute('aria-invalid', 'true');
      var hint = field.getAttribute('data-hint');
      if (hint === null) {
        hint = field.getAttribute('aria-describedby') || '';
        field.setAttribute('data-hint', hint);
      }
      field.setAttribute('aria-describedby', (hint + ' checkout-error').trim());
      field.focus();
    } else if (focus) {
      errorBox.focus();
    }
  }
  function clearError() {
    errorBox.textContent = '';
    errorBox.hidden = true;
    unmark();
  }
  // The field an API error is about, if the page has it.
  var KEY_CODES = { unknown_key: 1, key_revoked: 1, key_budget_full: 1 };
  function fieldOf(e) {
    if (KEY_CODES[e.code] && topupKey) return topupKey;
    if (e.code === 'invalid_email') return email;
    return null;
  }
  function refused(e) { showError(errorText(e), fieldOf(e), true); }
  function busy(text) { statusBox.textContent = text || ''; statusBox.hidden = !text; }

  // A result is said (the live region, present from the start) and its heading takes the
  // focus, so that the next Tab goes on from it; the busy line was hidden just before.
  function reveal(box, headingId, said) {
    box.hidden = false;
    var heading = document.getElementById(headingId);
    box.scrollIntoView({ block: 'start' });
    if (heading) heading.focus({ preventScroll: true });
    if (announcer) {
      announcer.textContent = '';
      var text = ((heading ? spoken(heading) : '') + ' ' + (said || '')).trim();
      setTimeout(function () { announcer.textContent = text; }, 100);
    }
  }
  // An element's text without its marks hidden from screen readers (the heading's ✓).
  function spoken(el) {
    var text = '';
    Array.prototype.forEach.call(el.childNodes, function (n) {
      if (n.nodeType === 3) text += n.textContent;
      else if (n.nodeType === 1 && n.getAttribute('aria-hidden') !== 'true') text += spoken(n);
    });
    return text.trim();
  }

  // POST JSON to our API; resolves with the body, rejects with an Error carrying the message.
  function api(path, body) {
    return fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () {
        // A success whose body did not arrive whole (the connection cut inside it): what the
        // server did is unknown, so it is told as a network failure — a capture is then tried
        // again, never paid a second time (as `{}` it read as a failed payment and offered
        // the pay button; found by an independent check: two orders paid, two keys).
        if (resp.ok) throw new Error(msg('network'));
        return {};
      }).then(function (data) {
        if (!resp.ok) {
          var m = data && data.error && data.error.message;
          var err = new Error(m || (msg('failed') + ' (HTTP ' + resp.status + ')'));
          err.code = data && data.error && data.error.code;
          throw err;
        }
        return data;
      });
    }, function () { throw new Error(msg('network')); });
  }

  function emailValid() {
    if (topupKey && !topupKey.checkValidity()) {
      topupKey.reportValidity();
      return false;
    }
    // Only spaces pass `required`: said before PayPal opens (the server refuses it too).
    if (topupKey && !topupKey.value.trim()) {
      showError(msg('key-unknown'), topupKey);
      return false;
    }
    if (email.checkValidity()) return true;
    email.reportValidity();
    return false;
  }

  function createOrder() {
    clearError();
    retryBox.hidden = true;
    var body = { plan: plan, email: email.value.trim() };
    // The key travels in this request's body only, never in a URL.
    if (topupGrant) body.key_grant = topupGrant.value;
    if (topupKey) body.key = topupKey.value.trim();
    return api('/api/orders', body);
  }

  function showToppedUp(prefix, orderId) {
    document.getElementById('topped-up-message').textContent =
      msg('topped-up').replace('{prefix}', prefix);
    document.getElementById('topped-up-order-id').textContent = orderId;
    payBox.hidden = true;
    pendingBox.hidden = true;
    reveal(document.getElementById('checkout-topped-up'), 'topped-up-heading',
      document.getElementById('topped-up-message').textContent);
  }

  function showKey(key, orderId) {
    document.getElementById('api-key').textContent = key;
    document.getElementById('order-id').textContent = orderId;
    payBox.hidden = true;
    pendingBox.hidden = true;
    reveal(resultBox, 'result-heading');
  }

  // A paid order whose key this browser may not see, or a payment PayPal is still reviewing.
  function showPending(text, orderId, heading) {
    if (heading) document.getElementById('pending-heading').textContent = heading;
    document.getElementById('pending-message').textContent = text;
    document.getElementById('pending-order-id').textContent = orderId;
    payBox.hidden = true;
    reveal(pendingBox, 'pending-heading', text);
  }

  // `actions`: PayPal's, when the capture follows its window's approval (a declined payment
  // method then reopens it for another).
  var capturing = false;
  function capture(orderId, actions) {
    // One at a time: the server serialises them anyway, but a burst of clicks spent the
    // address's attempts and left an error beside the key.
    if (capturing) return Promise.resolve();
    capturing = true;
    clearError();
    payBox.hidden = true;
    retryBox.hidden = true;
    busy(msg('capturing'));
    storeUnfinished(orderId);
    return api('/api/orders/' + encodeURIComponent(orderId) + '/capture', {}).then(function (data) {
      capturing = false;
      busy('');
      var id = data.order_id || orderId;
      // Settled for this browser: paid (its result shown), or never to be (pay again). A
      // payment PayPal still holds, or an answer not understood, stays to be resumed.
      if (data.status === 'paid' || data.status === 'created' || data.status === 'failed' ||
          data.status === 'refunded') {
        clearUnfinished(orderId);
      }
      if (data.status === 'paid' && data.topped_up) {
        showToppedUp(data.topped_up, id);
      } else if (data.status === 'paid' && data.api_key) {
        showKey(data.api_key, id);
      } else if (data.status === 'paid' && data.top_up) {
        // Captured in another browser: the credit is in, which key is not said here.
        showPending(msg('topped-up').replace('{prefix}', 'sk-gateway-…'), id, msg('paid-h'));
      } else if (data.status === 'paid' && data.key_replaced) {
        showPending(msg('key-replaced'), id, msg('paid-h'));
      } else if (data.status === 'paid') {
        showPending(msg('paid-elsewhere'), id, msg('paid-h'));
      } else if (data.status === 'pending') {
        showPending(msg(data.top_up ? 'pending-topup' : 'pending'), id);
      } else if (data.status === 'review') {
        // In the page's language (the answer's message is English).
        showPending(msg('review') || data.message || msg('failed'), id);
      } else if (data.status === 'created' || data.status === 'failed' ||
                 data.status === 'refunded') {
        payBox.hidden = false;
        var known = {
          created: 'not-approved', failed: data.top_up ? 'declined-topup' : 'declined',
          refunded: 'refunded'
        }[data.status];
        showError(msg(known), null, true);
      } else {
        // An answer this page cannot read: the order's state is unknown, so its capture is
        // offered again, never a new payment.
        offerRetry(orderId, msg('server-error'));
      }
    }, function (e) {
      capturing = false;
      busy('');
      if (e.code === 'payment_declined' && actions && actions.restart) {
        // Nothing was taken: PayPal's window opens again to choose another way to pay.
        showError(errorText(e));
        return actions.restart();
      }
      if (e.code === 'order_of_other_paypal') {
        // PayPal may hold this order's money: its id, to write to the shop with and to look
        // it up by, and an address that no longer resumes its capture, so a reload offers the
        // pay form (it left the buyer with neither; found by an independent check).
        forgetApproved(orderId);
        showPending(errorText(e), orderId, msg('other-paypal-h'));
        return;
      }
      refused(e);
      if (PAY_AGAIN[e.code]) {
        clearUnfinished(orderId);
        payBox.hidden = false;
        return;
      }
      if (FINAL[e.code]) {
        clearUnfinished(orderId);
        return;
      }
      offerRetry(orderId);
    });
  }

  // The buyer has approved: never offer to pay again for this order, but to try its capture
  // again, with its id to look it up by. (The URL carries the id too, so a reload retries the
  // same capture.) `said`: a message to show first, when none is shown yet.
  function offerRetry(orderId, said) {
    if (said) showError(said, null, true);
    retrying = orderId;
    document.getElementById('retry-order-id').textContent = orderId;
    retryBox.hidden = false;
  }

  var retrying = null;
  document.getElementById('retry-capture').addEventListener('click', function () {
    if (retrying) capture(retrying);
  });

  // Remember the approved order in the URL before capturing, so a reload or a failed capture
  // resumes this order instead of paying again.
  // A top-up's page says so in its address too, so that a reload stays a top-up's page (a
  // purchase's would sell a new key; found by a review).
  var isTopUp = !!(topupKey || topupGrant);

  // An approved order whose capture this browser has not seen settle (an answer cut short, the
  // page left meanwhile) is remembered for its plan's checkout: coming back to it resumes that
  // order — its capture tried again — instead of offering a second payment (found by an
  // independent check: Back twice after a cut capture showed the pay form, and a second order
  // was paid). Each order apart, from its first capture: one order's settling or cancel never
  // forgets another's (a second tab's cancel did; found by a re-check). Forgotten once
  // settled, cancelled, or a day after its first capture.
  var UNFINISHED = 'modelrelay-unfinished-' + plan + (isTopUp ? '-topup' : '');
  var DAY_MS = 86400000;
  function entries() {
    try {
      var v = JSON.parse(window.localStorage.getItem(UNFINISHED) || '{}');
      return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
    } catch (e) { return {}; }
  }
  function saveEntries(v) {
    try {
      if (Object.keys(v).length) window.localStorage.setItem(UNFINISHED, JSON.stringify(v));
      else window.localStorage.removeItem(UNFINISHED);
    } catch (e) { /* storage off: the address still resumes it */ }
  }
  function storeUnfinished(orderId) {
    var v = entries();
    if (typeof v[orderId] !== 'number') {
      v[orderId] = Date.now();
      saveEntries(v);
    }
  }
  function clearUnfinished(orderId) {
    var v = entries();
    if (orderId && Object.prototype.hasOwnProperty.call(v, orderId)) {
      delete v[orderId];
      saveEntries(v);
    }
  }
  // The latest order not seen settled, the expired ones forgotten.
  function unfinished() {
    var v = entries();
    var now = Date.now();
    var latest = null;
    var changed = false;
    Object.keys(v).forEach(function (id) {
      if (typeof v[id] !== 'number' || now - v[id] >= DAY_MS) {
        delete v[id];
        changed = true;
      } else if (latest === null || v[id] > v[latest]) {
        latest = id;
      }
    });
    if (changed) saveEntries(v);
    return latest;
  }

  function rememberApproved(orderId) {
    if (window.history && window.history.replaceState) {
      var q = 'order_id=' + encodeURIComponent(orderId) + '&approved=1' +
        (isTopUp ? '&topup=1' : '');
      window.history.replaceState(null, '', window.location.pathname + '?' + q);
      relink(q);
    }
  }

  // The language switch's links were made for the address the page was served at: once the
  // address names another state, they follow it (else the other language lost an approved
  // order's result). `repost`: the dashboard's top-up page came by POST with the key's grant,
  // which no link carries; its switch posts the form again in the other language, its links
  // leading to the top-up page that asks for the key (found by an accessibility audit: they
  // led to a purchase's page).
  var switchLinks = document.querySelectorAll('#lang-switch a[hreflang]');
  var repost = !!topupGrant;
  function relink(query) {
    repost = false;
    var kept = query.split('&').filter(function (kv) { return kv && kv.indexOf('lang=') !== 0; });
    Array.prototype.forEach.call(switchLinks, function (a) {
      var lang = 'lang=' + encodeURIComponent(a.getAttribute('hreflang'));
      a.setAttribute('href', window.location.pathname + '?' + kept.concat([lang]).join('&'));
    });
  }
  Array.prototype.forEach.call(switchLinks, function (a) {
    a.addEventListener('click', function (ev) {
      // A new tab or window (a modifier, another button) gets the link as it is.
      if (!repost || ev.button || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      var f = document.createElement('form');
      f.method = 'post';
      f.action = window.location.pathname + '?lang=' + encodeURIComponent(a.getAttribute('hreflang'));
      [['csrf_token', csrf], ['grant', topupGrant.value]].forEach(function (kv) {
        var input = document.createElement('input');
        input.type = 'hidden';
        input.name = kv[0];
        input.value = kv[1];
        f.appendChild(input);
      });
      document.body.appendChild(f);
      f.submit();
    });
  });

  // The buyer closed PayPal's window (also after a declined method reopened it): a reload
  // must not try to capture that order again and say it is not approved (found by an
  // independent check); the page's other parameters (`topup`) stay.
  function forgetApproved(cancelled) {
    clearUnfinished(cancelled);
    var p = new URLSearchParams(window.location.search);
    // Only an address that names an order changes: a page reached by a form (the dashboard's
    // top-up) keeps its own, so a reload posts it again rather than turning into another page.
    if (p.get('order_id') && window.history && window.history.replaceState) {
      p.delete('order_id');
      p.delete('approved');
      var q = p.toString();
      window.history.replaceState(null, '', window.location.pathname + (q ? '?' + q : ''));
      relink(q);
      // Back to the page as served: a dashboard top-up's grant is still in the form.
      repost = !!topupGrant;
    }
  }

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (!demoButton || !emailValid()) return;
    demoButton.disabled = true;
    busy(msg('creating'));
    createOrder().then(function (d) {
      window.location.assign('/demo/paypal/approve?order_id=' + encodeURIComponent(d.order_id));
    }, function (e) {
      busy('');
      demoButton.disabled = false;
      refused(e);
    });
  });

  var container = document.getElementById('paypal-buttons');
  if (container) {
    if (!window.paypal || !window.paypal.Buttons) {
      showError(msg('sdk'));
    } else {
      var orderId = null;
      window.paypal.Buttons({
        onClick: function (data, actions) {
          return emailValid() ? actions.resolve() : actions.reject();
        },
        createOrder: function () {
          return createOrder().then(function (d) {
            orderId = d.order_id;
            return d.paypal_order_id;
          }, function (e) {
            refused(e);
            throw e;
          });
        },
        onApprove: function (data, actions) {
          rememberApproved(orderId);
          return capture(orderId, actions);
        },
        // Also after a declined method reopened PayPal's window: nothing was taken, so the
        // buyer may pay again.
        onCancel: function () {
          forgetApproved(orderId);
          showError(msg('cancelled'));
          if (resultBox.hidden && pendingBox.hidden) payBox.hidden = false;
        },
        onError: function () { if (errorBox.hidden) showError(msg('failed'), null, true); }
      }).render('#paypal-buttons');
    }
  }

  // Back from the approval step (demo page, or a reload after paying): finish the capture.
  var params = new URLSearchParams(window.location.search);
  var returning = params.get('order_id');
  var pending = unfinished();
  if (returning && params.get('approved') === '1') {
    capture(returning);
  } else if (params.get('cancelled') === '1' && !pending) {
    // Back from the (demo) approval page's "Cancel": nothing was taken (and that order,
    // never approved, was never remembered).
    showError(msg('cancelled'));
  } else if (pending) {
    // An approved order not seen settled: resumed, as its own address would.
    rememberApproved(pending);
    capture(pending);
  }
})();
