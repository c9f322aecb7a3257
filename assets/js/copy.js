// Copy buttons: <button data-copy="element-id" data-copied="Copied">. Falls back to selecting
// the text where the clipboard API is unavailable (plain http on a non-local host).
(function () {
  'use strict';
  function select(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  document.addEventListener('click', function (ev) {
    var btn = ev.target.closest ? ev.target.closest('[data-copy]') : null;
    if (!btn) return;
    var el = document.getElementById(btn.getAttribute('data-copy'));
    if (!el) return;
    var text = el.textContent.trim();
    var label = btn.textContent;
    function done() {
      btn.textContent = btn.getAttribute('data-copied') || label;
      setTimeout(function () { btn.textContent = label; }, 1600);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(el); });
    } else {
      select(el);
    }
  });
})();
